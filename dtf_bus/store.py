"""The results store: an embedded DuckDB file written in batches by one background thread.

The broker's loop only appends row snapshots to an in-memory queue; the writer thread
coalesces them (the last state of a task in a batch wins) and writes each table with one
``INSERT OR REPLACE ... SELECT unnest(...)`` statement, which DuckDB ingests far faster than
row-by-row ``executemany``. The schema is documented in docs/schema.md.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from dtf_bus import defaults

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY,
    name VARCHAR,
    submitted_at TIMESTAMP,
    total INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id VARCHAR PRIMARY KEY,
    job_id VARCHAR,
    name VARCHAR,
    plugin VARCHAR,
    params JSON,
    requires JSON,
    priority INTEGER,
    timeout DOUBLE,
    retries INTEGER,
    state VARCHAR,
    attempts INTEGER,
    worker_id VARCHAR,
    submitted_at TIMESTAMP,
    started_at TIMESTAMP,
    ended_at TIMESTAMP,
    result JSON,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS attempts (
    task_id VARCHAR,
    attempt INTEGER,
    worker_id VARCHAR,
    assigned_at TIMESTAMP,
    started_at TIMESTAMP,
    ended_at TIMESTAMP,
    outcome VARCHAR,
    stale BOOLEAN,
    result JSON,
    error VARCHAR,
    PRIMARY KEY (task_id, attempt)
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id VARCHAR PRIMARY KEY,
    hostname VARCHAR,
    hardware VARCHAR[],
    capabilities JSON,
    slots INTEGER,
    plugins VARCHAR[],
    registered_at TIMESTAMP,
    last_seen TIMESTAMP,
    state VARCHAR
);
"""

# table -> (columns, number of leading columns forming the key (0: append-only, no
# coalescing), columns holding JSON, columns holding epoch seconds to store as TIMESTAMP)
TableSpec = tuple[tuple[str, ...], int, frozenset[str], frozenset[str]]
TABLES: dict[str, TableSpec] = {
    "jobs": (("job_id", "name", "submitted_at", "total"), 1, frozenset(), frozenset({"submitted_at"})),
    "tasks": (
        (
            "task_id",
            "job_id",
            "name",
            "plugin",
            "params",
            "requires",
            "priority",
            "timeout",
            "retries",
            "state",
            "attempts",
            "worker_id",
            "submitted_at",
            "started_at",
            "ended_at",
            "result",
            "error",
        ),
        1,
        frozenset({"params", "requires", "result"}),
        frozenset({"submitted_at", "started_at", "ended_at"}),
    ),
    "attempts": (
        (
            "task_id",
            "attempt",
            "worker_id",
            "assigned_at",
            "started_at",
            "ended_at",
            "outcome",
            "stale",
            "result",
            "error",
        ),
        2,
        frozenset({"result"}),
        frozenset({"assigned_at", "started_at", "ended_at"}),
    ),
    "workers": (
        (
            "worker_id",
            "hostname",
            "hardware",
            "capabilities",
            "slots",
            "plugins",
            "registered_at",
            "last_seen",
            "state",
        ),
        1,
        frozenset({"capabilities"}),
        frozenset({"registered_at", "last_seen"}),
    ),
}

_STOP = object()


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).replace(tzinfo=None)


class Store:
    """Append rows with :meth:`put`; they reach the file within ``flush_interval`` seconds."""

    def __init__(
        self,
        path: str | Path,
        flush_interval: float = defaults.STORE_FLUSH_INTERVAL,
        flush_rows: int = defaults.STORE_FLUSH_ROWS,
    ) -> None:
        self.path = str(path)
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._con = duckdb.connect(self.path)  # fails here, in the caller, if the file is locked
        self._con.execute(SCHEMA)
        self.tables: dict[str, TableSpec] = dict(TABLES)
        self._flushed = threading.Condition()
        self._pending = 0
        self.rows_written = 0
        self._thread = threading.Thread(target=self._run, name="dtf-store", daemon=True)
        self._thread.start()

    def register_table(
        self,
        name: str,
        ddl: str,
        columns: tuple[str, ...],
        key_columns: int = 0,
        json_columns: frozenset[str] = frozenset(),
        timestamp_columns: frozenset[str] = frozenset(),
    ) -> None:
        """Add a table for an extension (test results, metrics...). Call before the first put.

        ``key_columns`` leading columns form the primary key in ``ddl``; 0 makes the table
        append-only (every row inserted, none coalesced).
        """
        self._con.execute(ddl)
        self.tables[name] = (tuple(columns), key_columns, frozenset(json_columns), frozenset(timestamp_columns))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for reading from another thread (DuckDB allows one writing process)."""
        return self._con.cursor()

    def put(self, table: str, row: tuple[Any, ...]) -> None:
        """Queue one row for ``table`` (columns in :data:`TABLES` order). Thread-safe."""
        with self._flushed:
            self._pending += 1
        self._queue.put((table, row))

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything put so far is written (tests and shutdown use it)."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(remaining)
        return True

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._con.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: dict[str, dict[Any, tuple]] = {}
            count = 0
            deadline = time.monotonic() + self.flush_interval
            while count < self.flush_rows:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                table, row = item
                keylen = self.tables[table][1]
                # Keyed tables keep a row's last version; append-only ones keep every row.
                batch.setdefault(table, {})[row[:keylen] if keylen else count] = row
                count += 1
            if count:
                self._write(batch)
                with self._flushed:
                    self._pending -= count
                    self._flushed.notify_all()

    def _write(self, batch: dict[str, dict[Any, tuple]]) -> None:
        for table, rows in batch.items():
            columns, keylen, json_cols, ts_cols = self.tables[table]
            values = list(zip(*rows.values(), strict=True))
            params = []
            selects = []
            for i, name in enumerate(columns):
                col = list(values[i])
                if name in json_cols:
                    col = [None if v is None else json.dumps(v, default=str) for v in col]
                    selects.append(f"unnest(${i + 1})::JSON")
                elif name in ts_cols:
                    col = [_ts(v) for v in col]
                    selects.append(f"unnest(${i + 1})::TIMESTAMP")
                else:
                    selects.append(f"unnest(${i + 1})")
                params.append(col)
            verb = "INSERT OR REPLACE" if keylen else "INSERT"
            sql = f"{verb} INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)}"
            try:
                self._con.execute(sql, params)
                self.rows_written += len(rows)
            except duckdb.Error:
                log.exception("store: writing %d rows to %s failed", len(rows), table)
