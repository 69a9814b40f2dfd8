"""Smoke tests of the benchmarks: each script runs at tiny sizes and prints well-formed figures.

Benchmarks are not tests, and these assert no speed: only that every script still runs end to
end against the real broker, prints one JSON object with the documented keys, and that the
figures are positive numbers. Each takes a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.performance

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str, timeout: float = 120) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing"
    objects = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(o, dict) for o in objects)
    return objects[-1]


def assert_positive(summary: dict, *keys: str) -> None:
    for key in keys:
        assert key in summary, f"missing {key!r} in {sorted(summary)}"
        value = summary[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{key} = {value!r}"
        assert value > 0, f"{key} = {value!r}"


def test_throughput_smoke():
    s = run_bench("throughput.py", "--tasks", "200", "--rounds", "1")
    assert_positive(s, "dtf_tasks_per_s", "raw_zmq_tasks_per_s", "ratio", "dtf_done_tasks_per_s")
    assert s["bench"] == "throughput" and s["workers"] == 2
    assert s["machine"]["cores"] >= 1


def test_scale_smoke():
    s = run_bench("scale.py", "--workers", "30", "--processes", "2", "--tasks", "200", "--idle-seconds", "0.5")
    assert_positive(s, "workers", "broker_cpu_idle_pct", "broker_rss_mb", "registration_s", "tasks_per_s")
    assert s["workers"] == 30 and s["workers_alive_after_idle"] == 30


def test_queue_depth_smoke():
    s = run_bench("queue_depth.py", "--tasks", "2000", "--job-size", "1000", "--sample", "100", "--workers", "4")
    assert_positive(s, "submit_tasks_per_s", "place_e2e_us_last", "place_scheduler_us_last", "broker_rss_mb")
    assert [p["depth"] for p in s["checkpoints"]] == [1000, 2000]
    for point in s["checkpoints"]:
        assert_positive(point, "submit_tasks_per_s", "place_e2e_us", "place_scheduler_us", "broker_rss_mb")


def test_ingest_smoke():
    s = run_bench("ingest.py", "--rows", "2000", "--rounds", "1")
    assert_positive(s, "rows_per_s", "result_rows_per_s", "metric_rows_per_s", "duckdb_direct_rows_per_s")
    assert s["target_rows_per_s"] == 50_000
