"""The results store: an embedded DuckDB file written in batches by one background thread.

The broker's loop only appends row snapshots to an in-memory queue; the writer thread
coalesces them (the last state of a task in a batch wins) and writes each table with one
``INSERT OR REPLACE ... SELECT unnest(...)`` statement, which DuckDB ingests far faster than
row-by-row ``executemany``. The schema is documented in docs/schema.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
    retry_backoff DOUBLE,
    seq BIGINT,
    state VARCHAR,
    attempts INTEGER,
    worker_id VARCHAR,
    submitted_at TIMESTAMP,
    started_at TIMESTAMP,
    ended_at TIMESTAMP,
    result JSON,
    error VARCHAR,
    failures INTEGER,
    lost_workers INTEGER,
    depends_on JSON
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
CREATE TABLE IF NOT EXISTS task_durations (
    worker_id VARCHAR,
    plugin VARCHAR,
    task_key VARCHAR,
    ewma_s DOUBLE,
    samples BIGINT,
    updated_at TIMESTAMP,
    PRIMARY KEY (worker_id, plugin, task_key)
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
            "retry_backoff",
            "seq",
            "state",
            "attempts",
            "worker_id",
            "submitted_at",
            "started_at",
            "ended_at",
            "result",
            "error",
            "failures",
            "lost_workers",
            "depends_on",
        ),
        1,
        frozenset({"params", "requires", "result", "depends_on"}),
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
    "task_durations": (
        ("worker_id", "plugin", "task_key", "ewma_s", "samples", "updated_at"),
        3,
        frozenset(),
        frozenset({"updated_at"}),
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
_MARK = object()


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
        # Durability marks: mark() numbers "everything put so far"; once the writer has
        # committed up to a mark it raises durable_seq and writes a byte to notify_fd, which
        # the broker polls so it can release acknowledgements that promised durability.
        self._mark_seq = 0
        self.durable_seq = 0
        self._durable = threading.Condition()
        self._wake = threading.Event()  # set to make the writer commit now rather than at its interval
        self._notify_r, self._notify_w = os.pipe()
        os.set_blocking(self._notify_r, False)
        os.set_blocking(self._notify_w, False)
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
        """Queue one row for ``table`` (columns in :data:`TABLES` order)."""
        self._queue.put((table, row))

    def mark(self, urgent: bool = False) -> int:
        """A number that becomes ``<= durable_seq`` once every row put so far is committed.

        ``urgent`` makes the writer commit now instead of at the end of its flush interval.
        Called from one thread (the broker loop).
        """
        self._mark_seq += 1
        self._queue.put((_MARK, (self._mark_seq, urgent)))
        if urgent:
            self._wake.set()
        return self._mark_seq

    @property
    def notify_fd(self) -> int:
        """Readable when ``durable_seq`` advanced; call :meth:`drain_notify` after polling it."""
        return self._notify_r

    def drain_notify(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._notify_r, 4096):
                pass

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything put so far is committed (tests and shutdown use it)."""
        seq = self.mark(urgent=True)
        deadline = time.monotonic() + timeout
        with self._durable:
            while self.durable_seq < seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._durable.wait(remaining)
        return True

    def close(self) -> None:
        self._queue.put((_STOP, None))
        self._wake.set()
        self._thread.join()
        self._con.close()
        os.close(self._notify_r)
        os.close(self._notify_w)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: dict[str, dict[Any, tuple]] = {}
            count = 0
            marked = 0
            # Sleep through the flush interval, then drain what came. Blocking in get() per row
            # would wake this thread on every put, to fight the broker's loop for the GIL row
            # by row (bench/README.md has the profile). mark(urgent=True) and close() wake it.
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while count < self.flush_rows:
                try:
                    table, row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if table is _STOP:
                    stopping = True
                    break
                if table is _MARK:
                    marked = row[0]
                    continue
                keylen = self.tables[table][1]
                # Keyed tables keep a row's last version; append-only ones keep every row.
                batch.setdefault(table, {})[row[:keylen] if keylen else count] = row
                count += 1
            else:
                self._wake.set()  # a full batch: more rows may wait, so go again at once
            if count:
                self._write(batch)
            if marked:
                with self._durable:
                    self.durable_seq = marked
                    self._durable.notify_all()
                with contextlib.suppress(BlockingIOError):
                    os.write(self._notify_w, b"\0")

    def _write(self, batch: dict[str, dict[Any, tuple]]) -> None:
        for table, rows in batch.items():
            try:
                self._write_table(table, list(rows.values()))
                self.rows_written += len(rows)
            except Exception as exc:  # a bad row must not kill the writer thread, nor lose its batch-mates
                log.warning("store: writing %d rows to %s failed (%s); retrying row by row", len(rows), table, exc)
                for row in rows.values():
                    try:
                        self._write_table(table, [row])
                        self.rows_written += 1
                    except Exception:
                        log.exception("store: dropped a row of %s that cannot be stored: %.300r", table, row)

    def _write_table(self, table: str, rows: list[tuple]) -> None:
        columns, keylen, json_cols, ts_cols = self.tables[table]
        values = list(zip(*rows, strict=True))
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
        self._con.execute(f"{verb} INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)}", params)
