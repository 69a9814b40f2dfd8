"""Smoke test of bench/pytest_overhead.py at tiny sizes (bench/pytest_suites.py downloads real
suites from PyPI, so it is run by hand; its figures are in bench/README.md)."""

from __future__ import annotations

import pytest

from tests.performance.test_bench_smoke import assert_positive, run_bench

pytestmark = pytest.mark.performance


def test_pytest_overhead_bench_runs():
    summary = run_bench("pytest_overhead.py", "--files", "2", "--tests", "5", "--rounds", "1", timeout=180)
    assert summary["tests"] == 10
    assert_positive(summary["median_s"], "pytest", "xdist -n 2", "dtf")
    assert summary["dtf_over_xdist"] > 0
    assert_positive(summary["dtf_cpu_ms_per_test"], "broker", "workers", "controller")
