"""Result rows: per-test and per-benchmark rows extracted from task results into DuckDB.

A broker hook (enabled by default). When a worker reports how an attempt ended, the result
payload is scanned for the two shapes the built-in plugins produce and any user plugin may:

- ``{"tests": [{nodeid, outcome, phase, duration, message, details}, ...]}`` (the ``pytest``
  and ``pytest-session`` plugins) -> one ``test_results`` row per test, with the task's
  ``rootdir``; a test that passes in a rerun task (``params.rerun``) is stored as ``flaky``;
- ``{"benchmarks": [record, ...], "environment": {...}}`` (``cpu``, ``cuda``, or a ``python``
  function returning that shape; see :mod:`plugins.bench`) -> one ``benchmark_results`` row
  per record, beside the worker's hardware, so runs across machines compare in SQL.

Only attempts that count are stored: a stale result (its attempt superseded) is not. A task
retried after a failure keeps a set of rows per attempt; ``tasks.attempts`` names the last.
Rows go through the store's writer thread, so the broker loop only builds tuples.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dtf_bus.broker.hooks import BrokerHook, BrokerView

if TYPE_CHECKING:
    from dtf_bus.task import Attempt, Task

TEST_COLUMNS = (
    "task_id",
    "attempt",
    "nodeid",
    "job_id",
    "worker_id",
    "hardware",
    "outcome",
    "duration_s",
    "message",
    "details",
    "recorded_at",
    "phase",
    "rootdir",
)
TEST_DDL = """
CREATE TABLE IF NOT EXISTS test_results (
    task_id VARCHAR,
    attempt INTEGER,
    nodeid VARCHAR,
    job_id VARCHAR,
    worker_id VARCHAR,
    hardware VARCHAR[],
    outcome VARCHAR,
    duration_s DOUBLE,
    message VARCHAR,
    details VARCHAR,
    recorded_at TIMESTAMP,
    phase VARCHAR,
    rootdir VARCHAR,
    PRIMARY KEY (task_id, attempt, nodeid)
);
ALTER TABLE test_results ADD COLUMN IF NOT EXISTS phase VARCHAR;
ALTER TABLE test_results ADD COLUMN IF NOT EXISTS rootdir VARCHAR;
"""
FAILED_OUTCOMES = ("failed", "error")

BENCH_COLUMNS = (
    "task_id",
    "attempt",
    "seq",
    "job_id",
    "worker_id",
    "hardware",
    "device",
    "benchmark",
    "params",
    "batch_size",
    "precision",
    "warmup",
    "iterations",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "throughput",
    "unit",
    "memory_bytes",
    "environment",
    "recorded_at",
)
BENCH_DDL = """
CREATE TABLE IF NOT EXISTS benchmark_results (
    task_id VARCHAR,
    attempt INTEGER,
    seq INTEGER,
    job_id VARCHAR,
    worker_id VARCHAR,
    hardware VARCHAR[],
    device VARCHAR,
    benchmark VARCHAR,
    params JSON,
    batch_size INTEGER,
    precision VARCHAR,
    warmup INTEGER,
    iterations INTEGER,
    p50_ms DOUBLE,
    p90_ms DOUBLE,
    p99_ms DOUBLE,
    mean_ms DOUBLE,
    throughput DOUBLE,
    unit VARCHAR,
    memory_bytes BIGINT,
    environment JSON,
    recorded_at TIMESTAMP,
    PRIMARY KEY (task_id, attempt, seq)
)
"""


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
        broker.store.register_table(
            "test_results",
            TEST_DDL,
            TEST_COLUMNS,
            key_columns=3,
        )
        broker.store.register_table(
            "benchmark_results",
            BENCH_DDL,
            BENCH_COLUMNS,
            key_columns=3,
        )

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
            broker.store.put(
                "test_results",
                (
                    task.task_id,
                    attempt.number,
                    str(test["nodeid"]),
                    task.job_id,
                    attempt.worker_id,
                    hardware,
                    outcome,
                    _float(test.get("duration")),
                    _str(test.get("message")),
                    _str(test.get("details")),
                    now,
                    _str(test.get("phase")),
                    rootdir,
                ),
            )

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
        broker.store.put(
            "benchmark_results",
            (
                task.task_id,
                attempt.number,
                seq,
                task.job_id,
                attempt.worker_id,
                hardware,
                _str(device),
                _str(rec.get("name")) or task.name,
                params,
                _int(params.get("batch_size")),
                _str(params.get("precision") or params.get("dtype")),
                _int(rec.get("warmup")),
                _int(rec.get("iterations")),
                _float(latency.get("p50")),
                _float(latency.get("p90")),
                _float(latency.get("p99")),
                _float(latency.get("mean")),
                _float(rec.get("throughput")),
                _str(rec.get("unit")),
                _int(rec.get("memory_bytes")),
                env,
                now,
            ),
        )


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
