"""Smoke test of bench/security.py: it runs end to end at tiny sizes and prints its figures."""

from __future__ import annotations

import pytest

from tests.performance.test_bench_smoke import assert_positive, run_bench

pytestmark = [pytest.mark.performance, pytest.mark.security]


def test_security_bench_runs():
    summary = run_bench("security.py", "--decodes", "200", "--pings", "20", "--tasks", "20", "--rounds", "1")
    for figures in summary["decode"].values():
        assert_positive(figures, "baseline_us", "checked_us")
    for mode in ("plaintext", "curve"):
        assert_positive(summary[mode], "ping_us", "tasks_per_s")
