"""The results store: an embedded DuckDB file written in batches by one background thread.

The broker's loop only appends row snapshots to an in-memory queue; the writer thread
coalesces them (the last state of a task in a batch wins) and writes each table with one
``INSERT OR REPLACE ... SELECT`` over a JSON document of the batch (see :class:`Table`),
which DuckDB ingests far faster than row-by-row ``executemany``. Tables are declared in
:mod:`dtf_bus.store.schema` (docs/schema.md says what each column means).

A batch is one transaction across all its tables, so a crash never leaves a task's row
without the attempt rows written with it (recovery rebuilds tasks from both). A row DuckDB
refuses is isolated by bisection and reported through :meth:`Store.durable` together with the
durability mark, so the broker fails its task rather than acknowledge what was never stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from dtf_bus import defaults
from dtf_bus.store import schema
from dtf_bus.store.schema import MIGRATIONS, SCHEMA, TableSchema

__all__ = ["MIGRATIONS", "SCHEMA", "Store", "StoreFailure", "Table", "valid_memory_limit"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# What DuckDB's memory_limit takes ("512MB", "2GiB", "1.5 GB"); checked before it reaches SQL.
_MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|bytes)", re.IGNORECASE)

_STOP = object()
_MARK = object()
_CHUNK = 256  # rows per json.dumps call: the encoder holds the GIL, so the broker waits at most one chunk


@dataclass(frozen=True, slots=True)
class Table:
    """How rows of one table are written: a batch travels as one JSON document (encoded by
    the C encoder) that DuckDB parses and converts with the GIL released. Converting each
    value in Python instead (datetime objects, a ``json.dumps`` per JSON cell, a Python list
    per column) held the GIL ~30 µs per task row, which the broker's loop paid for."""

    columns: tuple[str, ...]
    keylen: int
    types: tuple[str, ...]
    sql: str

    @classmethod
    def create(
        cls, con: duckdb.DuckDBPyConnection, name: str, keylen: int, columns: tuple[str, ...] | None = None
    ) -> Table:
        """``columns`` in row order; None: every column, in the order the table declares them."""
        declared = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?"
            " ORDER BY ordinal_position",
            [name],
        ).fetchall()
        found = dict(declared)
        columns = tuple(found) if columns is None else tuple(columns)
        missing = [c for c in columns if c not in found]
        if missing:
            raise ValueError(f"store: table {name} has no column(s) {', '.join(missing)}")
        types = tuple(found[c] for c in columns)
        values = ", ".join(_from_json(f"r[{i + 1}]", t) for i, t in enumerate(types))
        verb = "INSERT OR REPLACE" if keylen else "INSERT"
        sql = (
            f"{verb} INTO {name} ({', '.join(columns)}) SELECT {values} "
            "FROM (SELECT unnest(json_extract($1, '$[*]')::JSON[]) AS row_doc), "
            "LATERAL (SELECT json_extract(row_doc, '$[*]')::JSON[] AS r)"
        )
        return cls(columns, keylen, types, sql)


def _from_json(cell: str, sql_type: str) -> str:
    """The SQL that turns one JSON cell of a row into a column value. Timestamps travel as
    epoch seconds (UTC), JSON columns keep the value's JSON text, SQL NULL for JSON null."""
    if sql_type == "JSON":
        return f"CASE WHEN json_type({cell}) = 'NULL' THEN NULL ELSE {cell} END"
    if sql_type == "TIMESTAMP":
        return f"make_timestamp((({cell} ->> '$')::DOUBLE * 1e6)::BIGINT)"
    if sql_type.endswith("]") or sql_type.startswith(("STRUCT", "MAP")):
        return f"{cell}::{sql_type}"
    return f"({cell} ->> '$')::{sql_type}"


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """A row DuckDB refused: its table, its key columns and the error's first line. Never
    its values: params and results hold what their owners would not publish."""

    table: str
    key: tuple[Any, ...]
    error: str


def valid_memory_limit(value: str) -> bool:
    """A size DuckDB's memory_limit takes; checked before it is written into SQL."""
    return bool(_MEMORY_LIMIT.fullmatch(value.strip()))


def _first_line(exc: Exception) -> str:
    """An error's first line: DuckDB's conversion errors go on to quote the offending value."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (the rest of the row is kept)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _document(rows: list[tuple]) -> str:
    parts = []
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        try:
            text = json.dumps(chunk, default=str, allow_nan=False, separators=(",", ":"))
        except ValueError:  # a NaN somewhere in the chunk
            text = json.dumps(_finite(chunk), default=str, separators=(",", ":"))
        parts.append(text[1:-1])
    return "[" + ",".join(parts) + "]"


class Store:
    """Append rows with :meth:`put`; they reach the file within ``flush_interval`` seconds."""

    def __init__(
        self,
        path: str | Path,
        flush_interval: float = defaults.STORE_FLUSH_INTERVAL,
        flush_rows: int = defaults.STORE_FLUSH_ROWS,
        memory_limit: str | None = defaults.STORE_MEMORY_LIMIT,
    ) -> None:
        """``memory_limit`` bounds DuckDB's buffer pool (None: DuckDB's default, 80 % of RAM)."""
        if memory_limit is not None and not valid_memory_limit(memory_limit):
            raise ValueError(f"store: memory limit {memory_limit!r} is not a size such as 512MB or 2GB")
        self.path = str(path)
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._con = duckdb.connect(self.path)  # fails here, in the caller, if the file is locked
        if memory_limit is not None:
            self._con.execute(f"SET memory_limit = '{memory_limit.strip()}'")
        self._con.execute(SCHEMA)
        for statement in MIGRATIONS:
            self._con.execute(statement)
        self.tables = {t.name: Table.create(self._con, t.name, t.key, t.names) for t in schema.CORE}
        # Durability marks: mark() numbers "everything put so far"; once the writer has
        # committed up to a mark it raises durable_seq and writes a byte to notify_fd, which
        # the broker polls so it can release acknowledgements that promised durability.
        self._mark_seq = 0
        self.durable_seq = 0
        self._durable = threading.Condition()
        self._failed: list[StoreFailure] = []  # rows refused since the last durable(), under _durable
        self._wake = threading.Event()  # set to make the writer commit now rather than at its interval
        self._notify_r, self._notify_w = os.pipe()
        os.set_blocking(self._notify_r, False)
        os.set_blocking(self._notify_w, False)
        self.rows_written = 0
        self._thread = threading.Thread(target=self._run, name="dtf-store", daemon=True)
        self._thread.start()

    def register(self, table: TableSchema) -> None:
        """Create an extension's table (test results, metrics...) from its declaration in
        :mod:`dtf_bus.store.schema`; rows then list its columns in that order. Call before the first put."""
        self.register_table(table.name, table.ddl(), table.names, table.key)

    def register_table(
        self,
        name: str,
        ddl: str,
        columns: tuple[str, ...],
        key_columns: int = 0,
    ) -> None:
        """Add a table for an extension (test results, metrics...). Call before the first put.

        ``key_columns`` leading columns form the primary key in ``ddl``; 0 makes the table
        append-only (every row inserted, none coalesced). Values are converted by column type:
        TIMESTAMP columns take epoch seconds, JSON columns any JSON-able value.
        """
        self._con.execute(ddl)
        self.tables[name] = Table.create(self._con, name, key_columns, tuple(columns))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for reading from another thread (DuckDB allows one writing process)."""
        return self._con.cursor()

    def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``fn(cursor)`` on a cursor of its own, closed after: a reader thread's one read."""
        cursor = self._con.cursor()
        try:
            return fn(cursor)
        finally:
            cursor.close()

    def put(self, table: str, row: tuple[Any, ...]) -> None:
        """Queue one row for ``table`` (its columns in the order of ``self.tables[table].columns``)."""
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
        """Readable when ``durable_seq`` advanced or a row was refused; call :meth:`drain_notify`
        after polling it, then :meth:`durable`."""
        return self._notify_r

    def durable(self) -> tuple[int, list[StoreFailure]]:
        """The durability mark reached, with every row refused up to it (taken: each is
        returned once). One call, under one lock, so whoever releases acknowledgements up to
        the mark has first heard which rows are missing from it: a mark read alone could be
        ahead of failures not yet taken. Called from the broker's loop when notified only, so
        ``put`` and ``mark`` cost nothing more."""
        with self._durable:
            failed, self._failed = self._failed, []
            return self.durable_seq, failed

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
                keylen = self.tables[table].keylen
                # Keyed tables keep a row's last version; append-only ones keep every row.
                batch.setdefault(table, {})[row[:keylen] if keylen else count] = row
                count += 1
            else:
                self._wake.set()  # a full batch: more rows may wait, so go again at once
            failed = self._write(batch) if count else []
            if marked or failed:
                with self._durable:  # failures before the mark: durable() returns them together
                    self._failed.extend(failed)
                    self.durable_seq = max(self.durable_seq, marked)
                    self._durable.notify_all()
                with contextlib.suppress(BlockingIOError):
                    os.write(self._notify_w, b"\0")

    def _write(self, batch: dict[str, dict[Any, tuple]]) -> list[StoreFailure]:
        """Commit the batch in one transaction; if DuckDB refuses it, commit what it accepts and
        return the rows it refused. A bad row must not kill the writer thread, nor lose its
        batch-mates."""
        tables = {table: list(rows.values()) for table, rows in batch.items()}
        try:
            self._commit(tables)
            return []
        except Exception as exc:
            self._rollback()
            error = exc
        items = [(table, row) for table, rows in tables.items() for row in rows]
        if not isinstance(error, duckdb.FatalException):
            log.warning(
                "store: a batch of %d rows failed (%s); isolating the rows refused", len(items), _first_line(error)
            )
        # A task's row sorts next to its attempts' (and a job's before its tasks'), so the
        # halves below mostly keep what recovery reads together in one transaction.
        items.sort(key=lambda item: str(item[1][0]) if self.tables[item[0]].keylen else "")
        return self._bisect(items, error)

    def _bisect(self, part: list[tuple[str, tuple]], error: Exception) -> list[StoreFailure]:
        """``part`` failed with ``error``: try each half in its own transaction, and halve again
        what fails, down to the single rows refused: about 2 log2(batch) tries per bad row,
        where row by row cost one transaction per row. Refused rows are logged by table and key
        alone, never their values (a poisoned batch would log every row)."""
        if isinstance(error, duckdb.FatalException):  # the database is invalidated: no row can be written now
            log.error("store: the database failed (%s); %d rows not stored", _first_line(error), len(part))
            return [self._failure(table, row, error) for table, row in part]
        if len(part) == 1:
            failure = self._failure(*part[0], error)
            shown = ", ".join(str(value)[: defaults.MAX_ID_CHARS] for value in failure.key)
            log.error("store: dropped a row of %s (%s) that cannot be stored: %s", failure.table, shown, failure.error)
            return [failure]
        failures: list[StoreFailure] = []
        half = len(part) // 2
        for chunk in part[:half], part[half:]:
            tables: dict[str, list[tuple]] = {}
            for table, row in chunk:
                tables.setdefault(table, []).append(row)
            try:
                self._commit(tables)
            except Exception as exc:
                self._rollback()
                failures += self._bisect(chunk, exc)
        return failures

    def _failure(self, table: str, row: tuple, exc: Exception) -> StoreFailure:
        return StoreFailure(table, tuple(row[: self.tables[table].keylen or 1]), _first_line(exc))

    def _commit(self, tables: dict[str, list[tuple]]) -> None:
        """One transaction over every table: all of it is committed, or none. One table is one
        statement, a transaction of its own: BEGIN and COMMIT around it would only add calls
        that each hand the GIL back and wait to get it again while the broker's loop holds it
        (200 one-table batches of 2,000 keyed rows: 0.60 s with them, 0.54 s without)."""
        if len(tables) == 1:
            ((table, rows),) = tables.items()
            self._write_table(table, rows)
        else:
            self._con.begin()
            for table, rows in tables.items():
                self._write_table(table, rows)
            self._con.commit()
        self.rows_written += sum(len(rows) for rows in tables.values())

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # none open: the failure was in begin() itself
            self._con.rollback()

    def _write_table(self, table: str, rows: list[tuple]) -> None:
        self._con.execute(self.tables[table].sql, [_document(rows)])
