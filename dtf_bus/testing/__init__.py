"""Helpers for tests and benchmarks: a local cluster of real processes."""
