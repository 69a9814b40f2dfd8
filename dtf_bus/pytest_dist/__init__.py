"""Distributed pytest: ``pytest --dtf`` and ``dtf pytest``."""
