"""The monitor's time series in DuckDB: stored each tick, swept after the retention, read as history.

The tables are declared in :mod:`dtf_bus.store.schema` (``metrics_system``, ``metrics_worker``,
``anomalies``). Rows go through the store's writer thread; the sweep and the history reads run
on threads of their own with a cursor each, never on the broker's loop.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import duckdb

from dtf_bus import defaults
from dtf_bus.store import schema
from dtf_bus.store.schema import SYSTEM_METRICS, WORKER_METRICS

log = logging.getLogger("dtf.monitor")


class MetricStore(Protocol):
    """What the series need of :class:`dtf_bus.store.db.Store`."""

    path: str

    def register(self, table: schema.TableSchema) -> None: ...

    def put(self, table: str, row: tuple[Any, ...]) -> None: ...

    def cursor(self) -> duckdb.DuckDBPyConnection: ...


def utc(ts: float) -> datetime:
    """Epoch seconds as the naive UTC datetime the store writes TIMESTAMP columns with."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


class MetricSeries:
    """Writes and reads the monitor's tables in ``store``; deletes rows older than ``retention``."""

    def __init__(self, store: MetricStore, retention: float, worker_store_interval: float) -> None:
        self.store = store
        self.retention = retention
        self.worker_store_interval = worker_store_interval
        for table in schema.MONITOR:
            store.register(table)
        self._last_worker_store = 0.0
        self._stored_fleet: set[str] = set()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="dtf-monitor-retention", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        self._sweeper.join(5)

    def _sweep(self) -> None:
        """Delete history older than the retention, off the broker's thread."""
        while not self._stop.wait(min(defaults.METRICS_RETENTION_SWEEP, self.retention)):
            cutoff = utc(time.time() - self.retention)
            cursor = self.store.cursor()
            try:
                for table in schema.MONITOR:
                    cursor.execute(f"DELETE FROM {table.name} WHERE ts < ?", [cutoff])
            except duckdb.Error as exc:
                log.warning("retention sweep failed: %s", exc)
            finally:
                cursor.close()

    def put(self, t: float, system: dict[str, Any], workers: dict[str, dict[str, Any]]) -> None:
        """One tick's rows: the system's every tick, the workers' every interval and at once when
        the fleet changes (so a short-lived worker is on record)."""
        self.store.put("metrics_system", (t, *(system[m] for m in SYSTEM_METRICS)))
        if t - self._last_worker_store >= self.worker_store_interval or workers.keys() != self._stored_fleet:
            self._last_worker_store = t
            self._stored_fleet = set(workers)
            for worker_id, row in workers.items():
                self.store.put("metrics_worker", (t, worker_id, row["status"], *(row[m] for m in WORKER_METRICS)))

    def put_anomaly(self, record: dict[str, Any]) -> None:
        """``record``: :meth:`dtf_bus.monitor.anomaly.Anomaly.to_dict`, whose fields are the columns."""
        self.store.put("anomalies", schema.ANOMALIES.row(record))

    def history(
        self,
        metrics: list[str],
        interval: float,
        duration: float,
        worker_id: str | None = None,
        end: float | None = None,
    ) -> dict[str, list[list[float]]]:
        """Stored series averaged into ``interval`` buckets over the last ``duration`` seconds.

        Runs on the caller's thread with a cursor of its own (DuckDB allows one writing process,
        so readers elsewhere come through the HTTP API that calls this).
        """
        table, known = (
            ("metrics_worker", WORKER_METRICS) if worker_id is not None else ("metrics_system", SYSTEM_METRICS)
        )
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r} (known: {', '.join(known)})")
        end = time.time() if end is None else end
        selects = ", ".join(f"avg({m})" for m in metrics)
        sql = (
            f"SELECT epoch(time_bucket(to_microseconds(?), ts)) AS bucket, {selects} FROM {table} "
            "WHERE ts >= ? AND ts <= ?"
            + (" AND worker_id = ?" if worker_id is not None else "")
            + " GROUP BY bucket ORDER BY bucket"
        )
        params: list[Any] = [round(interval * 1e6), utc(end - duration), utc(end)]
        if worker_id is not None:
            params.append(worker_id)
        cursor = self.store.cursor()
        try:
            rows = cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()
        series: dict[str, list[list[float]]] = {m: [] for m in metrics}
        for row in rows:
            for m, value in zip(metrics, row[1:], strict=True):
                if value is not None:
                    series[m].append([float(row[0]), round(float(value), 6)])
        return series
