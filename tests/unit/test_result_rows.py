"""The ResultRows hook: test and benchmark rows from result payloads, in a real DuckDB file."""

from __future__ import annotations

from types import SimpleNamespace

import duckdb
import pytest

from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.store.db import Store
from dtf_bus.store.results import ResultRows, benchmark_records
from dtf_bus.task import Attempt, Task

pytestmark = pytest.mark.unit


def _task(task_id: str, plugin: str) -> Task:
    return Task(
        task_id=task_id,
        job_id="j",
        name=task_id,
        plugin=plugin,
        params={},
        requires={},
        priority=0,
        timeout=None,
        retries=0,
        seq=0,
    )


def test_rows_for_tests_and_benchmarks_but_not_stale_attempts(tmp_path):
    path = tmp_path / "r.duckdb"
    registry = Registry()
    caps = {"hardware": ["cpu", "cuda"], "gpu_model": "mock-A100", "cpu_model": "EPYC"}
    registry.add(WorkerInfo("w1", b"peer", caps, 1, frozenset({"pytest", "cpu"})))
    broker = SimpleNamespace(store=Store(path, flush_interval=0.05), registry=registry)
    hook = ResultRows()
    hook.on_start(broker)

    tests = [
        {"nodeid": "t.py::a", "outcome": "passed", "duration": 0.5, "message": None},
        {"nodeid": "t.py::b", "outcome": "failed", "duration": 0.1, "message": "assert 1 == 2", "details": "tb"},
        {"outcome": "passed"},  # no nodeid: ignored
    ]
    hook.on_attempt_result(broker, _task("j.0", "pytest"), Attempt(1, "w1", 1.7e9, result={"tests": tests}))
    stale = Attempt(1, "w1", 1.7e9, stale=True, result={"tests": tests})
    hook.on_attempt_result(broker, _task("j.9", "pytest"), stale)

    bench = {
        "name": "forward",
        "params": {"batch_size": 32, "precision": "fp16"},
        "warmup": 2,
        "iterations": 10,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5},
        "throughput": 32000.0,
        "unit": "samples/s",
        "memory_bytes": 1024,
    }
    env = {"torch": "2.4.0", "driver": "550.54", "device": "H100"}
    result = {"value": {"benchmarks": [bench, {"name": "weird", "params": {"batch_size": "x"}}], "environment": env}}
    hook.on_attempt_result(broker, _task("j.1", "python"), Attempt(1, "w1", 1.7e9, result=result))
    broker.store.close()

    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("select task_id, nodeid, outcome, duration_s, message, hardware from test_results order by 2")
    assert rows.fetchall() == [
        ("j.0", "t.py::a", "passed", 0.5, None, ["cpu", "cuda"]),
        ("j.0", "t.py::b", "failed", 0.1, "assert 1 == 2", ["cpu", "cuda"]),
    ]
    bench_rows = con.execute(
        "select seq, benchmark, device, batch_size, precision, p50_ms, p99_ms, throughput, unit,"
        " environment->>'driver', worker_id from benchmark_results order by seq"
    ).fetchall()
    assert bench_rows == [
        (0, "forward", "H100", 32, "fp16", 1.0, 3.0, 32000.0, "samples/s", "550.54", "w1"),
        (1, "weird", "H100", None, None, None, None, None, None, "550.54", "w1"),
    ]


def test_benchmark_records_found_at_top_level_or_in_a_value():
    top = {"benchmarks": [{"name": "a"}], "environment": {"python": "3.11"}}
    assert benchmark_records(top) == ([{"name": "a"}], {"python": "3.11"})
    assert benchmark_records({"value": top})[0] == [{"name": "a"}]
    assert benchmark_records({"value": 3}) == ([], {})
    assert benchmark_records(None) == ([], {})
