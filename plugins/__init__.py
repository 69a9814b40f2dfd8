"""dtf's bundled executor plugins, registered under the ``dtf.executors`` entry-point group.

The repository's ``plugins/`` installs as ``dtf_plugins`` (pyproject.toml's package-dir): a
generic top-level ``plugins`` would collide with other distributions and users' directories.
"""
