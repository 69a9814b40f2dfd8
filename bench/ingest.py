"""Ingest: result and metric rows per second into DuckDB through the store's batched writer.

The broker's loop only calls ``Store.put``; a writer thread batches rows and writes each table
with one ``INSERT ... SELECT unnest(...)``. This measures, per kind of row, the time from the
first ``put`` until ``flush()`` says every row is committed to the file:

- ``attempts`` rows: one per finished attempt, with a JSON result (keyed, coalesced);
- ``tasks`` rows: the task's final state, JSON params/requires/result (keyed, coalesced);
- ``metrics`` rows: an append-only extension table registered like a plugin would.

Baseline in the same run: the same rows inserted straight into DuckDB as ready-made columns in
one statement per table (no queue, no thread, no per-row conversion): the ceiling for the file.

    python bench/ingest.py [--rows 100000] [--rounds 3] [--json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib
import duckdb

from dtf_bus.store import schema as tables
from dtf_bus.store.db import MIGRATIONS, SCHEMA, Store, Table

TARGET_ROWS_PER_S = 50_000

METRICS_DDL = "CREATE TABLE IF NOT EXISTS bench_metrics (ts TIMESTAMP, worker_id VARCHAR, name VARCHAR, value DOUBLE)"
METRICS_COLUMNS = ("ts", "worker_id", "name", "value")


def _ts(value: float | None) -> datetime | None:
    """Epoch seconds as the naive UTC datetime the store writes to TIMESTAMP columns."""
    return None if value is None else datetime.fromtimestamp(value, UTC).replace(tzinfo=None)


def make_rows(n: int) -> dict[str, list[tuple[Any, ...]]]:
    """Rows shaped like the broker's own (built from the store's column lists, so they follow
    the schema; a column added later is NULL here), with distinct keys so none coalesce away."""
    now = time.time()
    sample: dict[str, Any] = {
        "job_id": "job",
        "plugin": "sim",
        "params": {"seconds": 0},
        "requires": {"hardware": ["cpu"]},
        "priority": 0,
        "timeout": None,
        "retries": 0,
        "retry_backoff": 0.0,
        "state": "succeeded",
        "attempts": 1,
        "attempt": 1,
        "outcome": "succeeded",
        "stale": False,
        "result": {"seconds": 0, "speed": 1.0, "outcome": "pass"},
        "error": None,
        "failures": 0,
        "lost_workers": 0,
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    schema = duckdb.connect()  # in memory: only to read the column types
    schema.execute(SCHEMA)
    for statement in MIGRATIONS:  # the columns later versions added, as a store opening a file has
        schema.execute(statement)
    for declared in (tables.ATTEMPTS, tables.TASKS):
        table = declared.name
        spec = Table.create(schema, table, declared.key, declared.names)
        columns = spec.columns
        ts_cols = {c for c, t in zip(columns, spec.types, strict=True) if t == "TIMESTAMP"}
        rows = []
        for i in range(n):
            per_row = {"task_id": f"job.{i}", "name": f"noop[{i}]", "worker_id": f"w{i % 8}", "seq": i}
            rows.append(tuple(now if c in ts_cols else per_row[c] if c in per_row else sample.get(c) for c in columns))
        out[table] = rows
    out["bench_metrics"] = [(now + i * 1e-3, f"w{i % 8}", "cpu_percent", float(i % 100)) for i in range(n)]
    return out


def through_store(path: Path, rows: dict[str, list[tuple[Any, ...]]], timeout: float) -> dict[str, float]:
    """rows/s per table, then for all tables put at once (interleaved, as the broker does)."""
    store = Store(path)
    try:
        store.register_table("bench_metrics", METRICS_DDL, METRICS_COLUMNS)
        out: dict[str, float] = {}
        for table, table_rows in rows.items():
            start = time.perf_counter()
            for row in table_rows:
                store.put(table, row)
            if not store.flush(timeout):
                raise TimeoutError(f"store did not commit {len(table_rows)} {table} rows within {timeout:g}s")
            out[table] = len(table_rows) / (time.perf_counter() - start)
        # Mixed: each task's attempt row, task row and a metric row in turn, under fresh keys.
        mixed = []
        for attempt, task, metric in zip(*rows.values(), strict=True):
            mixed += [
                ("attempts", ("mixed." + attempt[0], *attempt[1:])),
                ("tasks", ("mixed." + task[0], *task[1:])),
                ("bench_metrics", metric),
            ]
        start = time.perf_counter()
        for table, row in mixed:
            store.put(table, row)
        if not store.flush(timeout):
            raise TimeoutError(f"store did not commit {len(mixed)} mixed rows within {timeout:g}s")
        out["mixed"] = len(mixed) / (time.perf_counter() - start)
        written = store.rows_written
    finally:
        store.close()
    expected = 2 * sum(len(r) for r in rows.values())
    if written != expected:
        raise RuntimeError(f"store wrote {written} rows, expected {expected}")
    return out


def direct(path: Path, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    """The same rows as ready-made columns, one INSERT per table: DuckDB's own ceiling here."""
    store = Store(path)  # only to create the same schema; closed before the direct connection
    store.register_table("bench_metrics", METRICS_DDL, METRICS_COLUMNS)
    specs = dict(store.tables)
    store.close()
    prepared = []
    for table, table_rows in rows.items():
        spec = specs[table]
        cols = [list(c) for c in zip(*table_rows, strict=True)]
        for i, sql_type in enumerate(spec.types):
            if sql_type == "JSON":
                cols[i] = [None if v is None else json.dumps(v) for v in cols[i]]
            elif sql_type == "TIMESTAMP":
                cols[i] = [_ts(v) for v in cols[i]]
        prepared.append((table, spec.columns, cols))
    con = duckdb.connect(str(path))
    try:
        total = sum(len(r) for r in rows.values())
        start = time.perf_counter()
        for table, columns, cols in prepared:
            selects = ", ".join(f"unnest(${i + 1})" for i in range(len(cols)))
            con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selects}", cols)
        return total / (time.perf_counter() - start)
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows per table per round (default 100000)")
    p.add_argument("--rounds", type=int, default=benchlib.DEFAULT_ROUNDS, help="rounds (default 3)")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    if args.rows < 1 or args.rounds < 1:
        p.error("--rows and --rounds must be positive")

    rows = make_rows(args.rows)
    results: dict[str, list[float]] = {}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="dtf-bench-ingest-") as tmp:
            for table, rate in through_store(Path(tmp) / f"store{r}.duckdb", rows, args.timeout).items():
                results.setdefault(table, []).append(rate)
            results.setdefault("direct", []).append(direct(Path(tmp) / f"direct{r}.duckdb", rows))
    med = {k: round(benchlib.median(v), 1) for k, v in results.items()}
    summary = {
        "bench": "ingest",
        "rows": args.rows,
        "rounds": args.rounds,
        "rows_per_s": med["mixed"],
        "result_rows_per_s": med["attempts"],
        "task_rows_per_s": med["tasks"],
        "metric_rows_per_s": med["bench_metrics"],
        "duckdb_direct_rows_per_s": med["direct"],
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "machine": benchlib.machine(),
    }
    table_rows = [
        ("rows per table x rounds", f"{args.rows:,} x {args.rounds}"),
        ("store: result rows/s", med["attempts"]),
        ("store: task rows/s", med["tasks"]),
        ("store: metric rows/s", med["bench_metrics"]),
        ("store: mixed rows/s", med["mixed"]),
        ("DuckDB direct rows/s", med["direct"]),
        ("target rows/s", TARGET_ROWS_PER_S),
    ]
    title = "ingest: rows into DuckDB through Store's batched writer, median of rounds"
    benchlib.emit(title, table_rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
