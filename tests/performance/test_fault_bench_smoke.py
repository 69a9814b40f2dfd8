"""Smoke tests of the fault benchmarks (bench/failover.py, bench/chaos.py) at tiny sizes."""

from __future__ import annotations

import pytest

from tests.performance.test_bench_smoke import run_bench

pytestmark = pytest.mark.performance


def test_failover_smoke():
    summary = run_bench("failover.py", "--reps", "1", "--heartbeat-interval", "0.2")
    for key in ("sigkill_restart_ms_median", "sigstop_restart_ms_median"):
        assert isinstance(summary[key], float) and summary[key] > 0


def test_chaos_smoke():
    summary = run_bench("chaos.py", "--tasks", "60", "--workers", "3", "--seconds", "4")
    assert summary["tasks"] == 60 and summary["rows"] == 60
    assert summary["lost"] == 0 and summary["duplicates"] == 0
    assert summary["broker_restarts"] == 1 and sum(summary["faults"].values()) >= 1


def test_makespan_smoke():
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "makespan.py"
    args = ["--json", "--tasks", "12", "--mean", "0.05", "--rounds", "1", "--seeds", "1,2"]
    args += ["--only", "round_robin,performance_based"]
    proc = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["strategy"] for r in rows] == [
        "round_robin (no stealing, baseline)",
        "round_robin",
        "performance_based",
    ]
    for r in rows:
        assert {"strategy", "makespan_s", "lower_bound_s", "ratio"} <= set(r)
        assert r["makespan_s"] > 0 and r["lower_bound_s"] > 0 and r["worst_ratio"] >= r["ratio"] >= 1.0
