"""The API's view of the monitor: status, workers, scores, metrics, their history, anomalies, Prometheus.

Every handler here but the history reads the snapshot the
:class:`~dtf_bus.monitor.monitor.Monitor` swaps in each tick (never broker state); history reads
DuckDB on the API's reader pool (:meth:`dtf_bus.monitor.monitor.Monitor.history`).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dtf_bus.http.handler import ApiError, Handler
from dtf_bus.monitor import score
from dtf_bus.store.schema import SYSTEM_METRICS, WORKER_METRICS

MAX_HISTORY_POINTS = 10_000


class StatusHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        system = snap["system"]
        self.reply(
            {
                **self.monitor.info,
                "http": self.api.url,
                "uptime_s": round(time.time() - self.monitor.started_at, 3),
                "workers": system.get("workers_total", 0),
                "queued": system.get("queued", 0),
                "running": system.get("running", 0),
                # Queued work no live worker can run, per requirement, with the broker's reasons.
                "blocked": system.get("blocked_reasons", []),
                "anomalies": self.monitor.anomaly_count,
                "metrics_at": snap["ts"],
                "system": system,
            }
        )


class WorkersHandler(Handler):
    def get(self) -> None:
        rows = sorted(self.monitor.snapshot["workers"].values(), key=lambda w: w["worker_id"])
        status = self.get_query_argument("status", None)
        if status:
            rows = [w for w in rows if w["status"] == status]
        offset, limit = self.page(None)
        page = rows[offset : offset + limit] if limit else rows[offset:]
        self.reply(page, total=len(rows), offset=offset, limit=limit)


class PerformanceHandler(Handler):
    def get(self) -> None:
        workers = [
            {
                "worker_id": w["worker_id"],
                "score": w["score"],
                "reliability": w["reliability"],
                "speed": w["speed"],
                "availability": w["availability"],
                "completed": w["completed"],
                "failed": w["failed"],
                "duration_mean": w["duration_mean"],
            }
            for w in self.monitor.snapshot["workers"].values()
        ]
        workers.sort(key=lambda w: (-w["score"], w["worker_id"]))
        self.reply({"formula": score.FORMULA, "weights": score.WEIGHTS, "workers": workers})


class SystemMetricsHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["system"], metrics_at=snap["ts"])


class WorkerMetricsHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["workers"], metrics_at=snap["ts"])


class LoadBalancerHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["load_balancer"], metrics_at=snap["ts"])


class HistoryHandler(Handler):
    async def get(self, worker_id: str | None = None) -> None:
        known = WORKER_METRICS if worker_id else SYSTEM_METRICS
        names = [m.strip() for m in self.get_query_argument("metrics", ",".join(known[:3])).split(",") if m.strip()]
        if not names:
            raise ApiError(400, "metrics: name at least one metric")
        interval = self.duration("interval", "1s")
        duration = self.duration("duration", "5m")
        if duration / interval > MAX_HISTORY_POINTS:
            raise ApiError(400, f"duration/interval asks for over {MAX_HISTORY_POINTS} points; widen the interval")
        end = self.number("end", None, maximum=1e12)
        try:
            series = await self.api.read(lambda: self.monitor.history(names, interval, duration, worker_id, end))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self.reply(
            {"interval": interval, "duration": duration, "series": series},
            worker_id=worker_id,
            retention=self.monitor.retention,
        )


class AnomaliesHandler(Handler):
    def get(self) -> None:
        _, limit = self.page(100)
        found = self.monitor.anomalies(since=self.number("since", None, maximum=1e12))
        for field in ("type", "severity", "subject"):
            value = self.get_query_argument(field, None)
            if value:
                found = [a for a in found if a[field] == value]
        self.reply(list(reversed(found[-limit:])), total=len(found))


class PrometheusHandler(Handler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.api.prometheus))


class SnapshotCollector:
    """Prometheus view of the monitor's latest snapshot (gauges, plus counters for totals)."""

    COUNTERS = ("succeeded", "failed", "timed_out", "cancelled")

    def __init__(self, monitor: Any) -> None:
        """``monitor``: a :class:`~dtf_bus.monitor.monitor.Monitor` (its ``snapshot`` is read per scrape)."""
        self.monitor = monitor

    def collect(self):
        snap = self.monitor.snapshot
        system = snap["system"]
        tasks = CounterMetricFamily("dtf_tasks_finished", "Tasks that reached a final state", labels=["state"])
        for state in self.COUNTERS:
            tasks.add_metric([state], system.get(state, 0) or 0)
        yield tasks
        yield CounterMetricFamily("dtf_anomalies", "Anomalies raised", value=system.get("anomalies_total", 0))
        for name in SYSTEM_METRICS:
            value = system.get(name)
            if name not in self.COUNTERS and value is not None:
                yield GaugeMetricFamily(f"dtf_{name}", f"dtf system metric {name}", value=value)
        per_worker = {
            m: GaugeMetricFamily(f"dtf_worker_{m}", f"per-worker {m}", labels=["worker_id"])
            for m in (
                *WORKER_METRICS,
                "reliability",
                "speed",
                "availability",
            )
        }
        for worker_id, row in snap["workers"].items():
            for m, family in per_worker.items():
                if row.get(m) is not None:
                    family.add_metric([worker_id], row[m])
        yield from per_worker.values()


ROUTES: list[tuple[str, type]] = [
    ("/api/status", StatusHandler),
    ("/api/workers", WorkersHandler),
    ("/api/workers/performance", PerformanceHandler),
    ("/api/metrics/system", SystemMetricsHandler),
    ("/api/metrics/workers", WorkerMetricsHandler),
    ("/api/metrics/load_balancer", LoadBalancerHandler),
    ("/api/metrics/history/system", HistoryHandler),
    ("/api/metrics/history/workers/([^/]+)", HistoryHandler),
    ("/api/anomalies", AnomaliesHandler),
    ("/metrics", PrometheusHandler),
]
