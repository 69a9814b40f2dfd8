"""Result rows: per-test and per-benchmark rows extracted from task results into DuckDB.

A broker hook (enabled by default). When a worker reports how an attempt ended, the result
payload is scanned for the two shapes the built-in plugins produce and any user plugin may:

- ``{"tests": [{nodeid, outcome, phase, duration, message, details}, ...]}`` (the ``pytest``
  and ``pytest-session`` plugins) -> one ``test_results`` row per test, with the task's
  ``rootdir``; a test that passes in a rerun task (``params.rerun``) is stored as ``flaky``;
- ``{"benchmarks": [record, ...], "environment": {...}}`` (``cpu``, ``cuda``, or a ``python``
  function returning that shape; see :mod:`dtf_plugins.bench`) -> one ``benchmark_results`` row
  per record, beside the worker's hardware, so runs across machines compare in SQL.

Only attempts that count are stored: a stale result (its attempt superseded) is not. A task
retried after a failure keeps a set of rows per attempt; ``tasks.attempts`` names the last.
Rows go through the store's writer thread, so the broker loop only builds tuples.
"""

from __future__ import annotations

import time
from typing import Any

from dtf_bus.broker.hooks import BrokerHook, BrokerView
from dtf_bus.store import schema
from dtf_bus.task import Attempt, Task

FAILED_OUTCOMES = ("failed", "error")


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def benchmark_records(result: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The benchmark records and environment in a result, at its top level or, for the
    ``python`` plugin, inside the function's returned ``value``."""
    if not isinstance(result, dict):
        return [], {}
    for holder in (result, result.get("value")):
        if isinstance(holder, dict) and isinstance(holder.get("benchmarks"), list):
            env = holder.get("environment")
            return [b for b in holder["benchmarks"] if isinstance(b, dict)], env if isinstance(env, dict) else {}
    return [], {}


class ResultRows(BrokerHook):
    """Writes ``test_results`` and ``benchmark_results`` rows (schema in docs/schema.md)."""

    def on_start(self, broker: BrokerView) -> None:
        for table in schema.RESULTS:
            broker.store.register(table)

    def on_attempt_result(self, broker: BrokerView, task: Task, attempt: Attempt) -> None:
        if attempt.stale or not isinstance(attempt.result, dict):
            return
        worker = broker.registry.get(attempt.worker_id)
        caps = worker.capabilities if worker is not None else {}
        hardware = [str(h) for h in caps.get("hardware", [])]
        now = attempt.ended_at or time.time()
        tests = attempt.result.get("tests")
        if isinstance(tests, list):
            self._tests(broker, task, attempt, tests, hardware, now)
        records, env = benchmark_records(attempt.result)
        for seq, rec in enumerate(records):
            self._benchmark(broker, task, attempt, seq, rec, env, caps, hardware, now)

    def _tests(
        self, broker: BrokerView, task: Task, attempt: Attempt, tests: list[Any], hardware: list[str], now: float
    ) -> None:
        rootdir = _str(task.params.get("rootdir"))
        rerun = bool(task.params.get("rerun"))
        for test in tests:
            if not isinstance(test, dict) or not test.get("nodeid"):
                continue
            outcome = _str(test.get("outcome"))
            if rerun and outcome == "passed":
                outcome = "flaky"  # failed before in this run, passed when run again
            row = {
                "task_id": task.task_id,
                "attempt": attempt.number,
                "nodeid": str(test["nodeid"]),
                "job_id": task.job_id,
                "worker_id": attempt.worker_id,
                "hardware": hardware,
                "outcome": outcome,
                "duration_s": _float(test.get("duration")),
                "message": _str(test.get("message")),
                "details": _str(test.get("details")),
                "recorded_at": now,
                "phase": _str(test.get("phase")),
                "rootdir": rootdir,
            }
            broker.store.put("test_results", schema.TEST_RESULTS.row(row))

    def _benchmark(
        self,
        broker: BrokerView,
        task: Task,
        attempt: Attempt,
        seq: int,
        rec: dict[str, Any],
        env: dict[str, Any],
        caps: dict[str, Any],
        hardware: list[str],
        now: float,
    ) -> None:
        params = rec.get("params") if isinstance(rec.get("params"), dict) else {}
        latency = rec.get("latency_ms") if isinstance(rec.get("latency_ms"), dict) else {}
        device = env.get("device") or caps.get("gpu_model") or caps.get("cpu_model")
        row = {
            "task_id": task.task_id,
            "attempt": attempt.number,
            "seq": seq,
            "job_id": task.job_id,
            "worker_id": attempt.worker_id,
            "hardware": hardware,
            "device": _str(device),
            "benchmark": _str(rec.get("name")) or task.name,
            "params": params,
            "batch_size": _int(params.get("batch_size")),
            "precision": _str(params.get("precision") or params.get("dtype")),
            "warmup": _int(rec.get("warmup")),
            "iterations": _int(rec.get("iterations")),
            "p50_ms": _float(latency.get("p50")),
            "p90_ms": _float(latency.get("p90")),
            "p99_ms": _float(latency.get("p99")),
            "mean_ms": _float(latency.get("mean")),
            "throughput": _float(rec.get("throughput")),
            "unit": _str(rec.get("unit")),
            "memory_bytes": _int(rec.get("memory_bytes")),
            "environment": env,
            "recorded_at": now,
        }
        broker.store.put("benchmark_results", schema.BENCHMARK_RESULTS.row(row))


def test_history(cursor: Any, rootdir: str, runs: int = 5) -> dict[str, Any]:
    """What earlier runs of the suite at ``rootdir`` say: the tests whose latest outcome was a
    failure (pytest's ``--lf`` set) and each test's mean duration over its last ``runs`` runs
    (longest-first scheduling)."""
    try:
        rows = cursor.execute(
            """
            SELECT nodeid, arg_max(outcome, recorded_at),
                   avg(duration_s) FILTER (WHERE recency <= $2)
            FROM (SELECT nodeid, outcome, duration_s, recorded_at,
                         row_number() OVER (PARTITION BY nodeid ORDER BY recorded_at DESC) AS recency
                  FROM test_results WHERE rootdir = $1)
            GROUP BY nodeid
            """,
            [rootdir, runs],
        ).fetchall()
    finally:
        cursor.close()
    return {
        "last_failed": sorted(nodeid for nodeid, outcome, _ in rows if outcome in FAILED_OUTCOMES),
        "durations": {nodeid: seconds for nodeid, _, seconds in rows if seconds is not None},
    }
