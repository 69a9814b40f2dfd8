"""dtf's bundled executor plugins, registered under the ``dtf.executors`` entry-point group."""
