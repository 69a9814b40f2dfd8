"""The ``dtf`` command and its subcommands."""
