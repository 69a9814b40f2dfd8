"""Monitoring: the broker hook that turns what the broker sees into metrics, scores and anomalies.

It runs on the broker's thread (every hook does), so each callback is a few dictionary
operations; the per-second work happens in :meth:`Monitor.on_tick`. What other threads read
(the HTTP API, the WebSocket bridge) is never the broker's own state: each tick builds a fresh
snapshot dict and swaps one reference, and the few structures updated between ticks (recent
tasks, anomalies) are guarded by one lock held for microseconds.

Every tick it:

- computes system metrics (:mod:`dtf_bus.monitor.metrics`): workers total / active (heard
  from within two heartbeat intervals) / busy, slots, utilisation, queued / assigned / running
  tasks, throughput (tasks finished per second over ``METRICS_WINDOW``), queue wait (mean, p95,
  oldest queued), success rate and mean duration over the window;
- computes per-worker metrics: status, the cpu / memory / gpu utilisation the worker reported
  in its heartbeat, load, results and the performance score of :mod:`dtf_bus.monitor.score`;
- publishes them on the PUB socket (``metrics.system``, ``metrics.worker.<id>``), stores them
  as time series in DuckDB (:mod:`dtf_bus.monitor.series`: ``metrics_system`` every tick,
  ``metrics_worker`` every ``WORKER_METRICS_STORE_INTERVAL``) and deletes history older than
  the retention;
- asks :mod:`dtf_bus.monitor.anomaly` about the queue and running tasks. Durations (against the
  broker's duration model, :mod:`dtf_bus.durations`), outcomes and utilisation are judged as they
  arrive. Anomalies are stored (``anomalies``), published (``anomaly``) and kept for the API.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from threading import Lock
from typing import Any

from dtf_bus import defaults, events
from dtf_bus.broker.hooks import BrokerHook, BrokerView
from dtf_bus.durations import Kind
from dtf_bus.monitor import metrics
from dtf_bus.monitor.anomaly import Anomaly, AnomalyDetector
from dtf_bus.monitor.metrics import WorkerStats
from dtf_bus.monitor.series import MetricSeries
from dtf_bus.monitor.views import RecentTasks
from dtf_bus.store.schema import SYSTEM_METRICS, WORKER_METRICS
from dtf_bus.task import Attempt, Job, Task, TaskState, live_view

log = logging.getLogger("dtf.monitor")

__all__ = ["SYSTEM_METRICS", "WORKER_METRICS", "Monitor"]
UTILISATION_KEYS = ("cpu_percent", "memory_percent", "gpu_percent")


class Monitor(BrokerHook):
    def __init__(
        self,
        retention: float = defaults.METRICS_RETENTION,
        window: float = defaults.METRICS_WINDOW,
        worker_store_interval: float = defaults.WORKER_METRICS_STORE_INTERVAL,
        detector: AnomalyDetector | None = None,
        recent_tasks: int = defaults.MONITOR_RECENT_TASKS,
    ) -> None:
        self.retention = retention
        self.window = window
        self.worker_store_interval = worker_store_interval
        self.detector = detector or AnomalyDetector()
        # Until attached to a broker (whose model learns from its results), the monitor teaches its own.
        self.durations = self.detector.durations
        self._learns = True
        self.recent = RecentTasks(recent_tasks)
        # Called on the broker thread with (channel, data) for each change; must be quick.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.started_at = time.time()
        self.info: dict[str, Any] = {}
        self.series: MetricSeries | None = None
        self.snapshot: dict[str, Any] = {"ts": self.started_at, "system": {}, "workers": {}, "load_balancer": {}}
        self._lock = Lock()
        self._anomalies: deque[dict[str, Any]] = deque(maxlen=defaults.ANOMALY_KEEP)
        self._anomaly_count = 0
        self._blocked_since: dict[str, float] = {}  # requirement -> when it was first seen unplaceable
        self._kinds: dict[str, Kind] = {}  # task id -> kind, while the task is live
        self._queued: dict[str, float] = {}  # task id -> when queued; insertion order is time order
        self._running: dict[str, tuple[float, str, Kind, float | None]] = {}  # id -> (since, worker, kind, timeout)
        self._finished: deque[tuple[float, bool]] = deque()  # (when, succeeded) within the window
        self._waits: deque[tuple[float, float]] = deque()  # (when, queue wait) within the window
        self._durations: deque[tuple[float, float]] = deque()  # (when, seconds) within the window
        self._new_waits: list[float] = []
        self._workers: dict[str, WorkerStats] = {}
        self._assignments = 0
        self._results = 0

    # ------------------------------------------------------------ lifecycle

    def on_start(self, broker: BrokerView) -> None:
        self.attach(broker)

    def attach(self, broker: BrokerView) -> None:
        """Create the tables and start the retention sweeper (idempotent; before serve() is fine)."""
        if self.series is not None:
            return
        self.series = MetricSeries(broker.store, self.retention, self.worker_store_interval)
        # One model: the broker's scheduler learns, the monitor reads.
        self.durations = self.detector.durations = broker.history
        self._learns = False
        self.info = {
            "endpoint": broker.endpoint,
            "metrics_endpoint": broker.metrics_endpoint,
            "db": broker.store.path,
            "strategy": getattr(broker.scheduler.strategy, "name", type(broker.scheduler.strategy).__name__),
            "started_at": self.started_at,
        }

    def on_stop(self, broker: BrokerView) -> None:
        if self.series is not None:
            self.series.close()

    # ------------------------------------------------------ reading (any thread)

    @property
    def store(self) -> Any:
        return None if self.series is None else self.series.store

    def anomalies(self, limit: int = defaults.ANOMALY_KEEP, since: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self._anomalies)
        if since is not None:
            found = [a for a in found if a["ts"] > since]
        return found[-limit:] if limit else []

    @property
    def anomaly_count(self) -> int:
        return self._anomaly_count

    def task(self, task_id: str) -> dict[str, Any] | None:
        return self.recent.get(task_id)

    def tasks(self) -> list[dict[str, Any]]:
        """The most recently changed tasks, newest last."""
        return self.recent.all()

    def history(
        self,
        metrics: list[str],
        interval: float,
        duration: float,
        worker_id: str | None = None,
        end: float | None = None,
    ) -> dict[str, list[list[float]]]:
        """Stored series averaged into buckets (:meth:`dtf_bus.monitor.series.MetricSeries.history`)."""
        if self.series is None:
            raise RuntimeError("the monitor is not attached to a broker: no stored history")
        return self.series.history(metrics, interval, duration, worker_id, end)

    # --------------------------------------------------------- broker events

    def _notify(self, channel: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(channel, data)
            except Exception:
                log.exception("monitor listener failed")

    def _stats(self, worker_id: str) -> WorkerStats:
        stats = self._workers.get(worker_id)
        if stats is None:
            now = time.time()
            stats = self._workers[worker_id] = WorkerStats(first_seen=now, up_since=now)
        return stats

    def on_worker_registered(self, broker: BrokerView, worker: metrics.Observed) -> None:
        stats = self._stats(worker.worker_id)
        if stats.up_since is None:
            stats.up_since = time.time()

    def on_worker_lost(self, broker: BrokerView, worker: metrics.Observed, reason: str) -> None:
        stats = self._stats(worker.worker_id)
        if stats.up_since is not None:
            stats.up_seconds += time.time() - stats.up_since
            stats.up_since = None
        stats.lost += 1
        self.detector.forget_worker(worker.worker_id)

    def on_heartbeat(self, broker: BrokerView, worker: metrics.Observed) -> None:
        reported = worker.metrics
        if reported:
            found = self.detector.load(worker.worker_id, {k: reported[k] for k in UTILISATION_KEYS if k in reported})
            if found is not None:
                self._raise(broker, found)

    def on_job_submitted(self, broker: BrokerView, job: Job) -> None:
        now = job.submitted_at
        for task_id in job.task_ids:
            self._queued[task_id] = now
        tail = job.task_ids[-self.recent.limit :]
        self.recent.submitted((broker.tasks[task_id] for task_id in tail), now)
        self._notify(
            "tasks",
            {"timestamp": now, "event": {"event": "job_submitted", "job_id": job.job_id, "total": len(job.task_ids)}},
        )

    def on_job_released(self, broker: BrokerView, job: Job) -> None:
        """Its tasks are served from DuckDB now; holding them here would pin their memory."""
        self.recent.forget(job.task_ids)

    def on_task_state(self, broker: BrokerView, task: Task) -> None:
        now = time.time()
        task_id = task.task_id
        state = task.state
        entry = self.recent.changed(task, now)
        kind = self._kinds.get(task_id)
        if kind is None:
            kind = self._kinds[task_id] = Kind(task.plugin, task.key)
        if state is TaskState.QUEUED:
            self._queued.pop(task_id, None)
            self._queued[task_id] = now
            self._running.pop(task_id, None)
        elif state is TaskState.ASSIGNED:
            wait = now - (self._queued.pop(task_id, None) or task.submitted_at)
            if wait < 0:
                wait = 0.0  # clock skew between a restored task's stamp and now
            self._waits.append((now, wait))
            self._new_waits.append(wait)
            self._assignments += 1
            stats = self._stats(task.worker_id)
            stats.assignments += 1
            label = str(kind)
            stats.by_kind[label] = stats.by_kind.get(label, 0) + 1
        elif state is TaskState.RUNNING:
            self._running[task_id] = (task.started_at or now, task.worker_id, kind, task.timeout)
        elif state.final:
            self._queued.pop(task_id, None)
            self._running.pop(task_id, None)
            self._kinds.pop(task_id, None)
            if state is not TaskState.CANCELLED:
                self._finished.append((now, state is TaskState.SUCCEEDED))
        if self.listeners:
            view = live_view(entry)
            self._notify("tasks", {"timestamp": now, "event": {**view, "event": str(state), "kind": str(kind)}})

    def on_attempt_result(self, broker: BrokerView, task: Task, attempt: Attempt) -> None:
        if attempt.stale or attempt.outcome == "cancelled":
            return
        self._results += 1
        ok = attempt.outcome == "succeeded"
        stats = self._stats(attempt.worker_id)
        stats.finished += 1
        stats.succeeded += ok
        for subject in (attempt.worker_id, "fleet"):
            found = self.detector.outcome(subject, ok)
            if found is not None:
                self._raise(broker, found)
        if not ok or attempt.started_at is None or attempt.ended_at is None:
            return  # a failure's duration says nothing about speed
        seconds = max(attempt.ended_at - attempt.started_at, 0.0)
        kind = self._kinds.get(task.task_id) or Kind(task.plugin, task.key)
        self._durations.append((time.time(), seconds))
        # Judged before the broker learns this run (hooks run first), so a slow run is compared
        # with the runs before it.
        found = self.detector.duration(attempt.worker_id, kind, seconds, task.task_id, learn=self._learns)
        if found is not None:
            self._raise(broker, found)

    def _raise(self, broker: BrokerView, anomaly: Anomaly) -> None:
        record = anomaly.to_dict()
        log.warning("anomaly %s (%s) on %s: %s", anomaly.type, anomaly.severity, anomaly.subject, anomaly.explanation)
        with self._lock:
            self._anomalies.append(record)
            self._anomaly_count += 1
        if self.series is not None:
            self.series.put_anomaly(record)
        broker.events.publish(events.ANOMALY, dict(record))
        self._notify("anomalies", {"timestamp": anomaly.ts, "anomaly": record})

    # ------------------------------------------------------------------ tick

    def on_tick(self, broker: BrokerView, now: float) -> None:
        t = time.time()
        cutoff = t - self.window
        for series in (self._finished, self._waits, self._durations):
            while series and series[0][0] < cutoff:
                series.popleft()
        health = broker.health
        interval = getattr(health, "interval", defaults.HEARTBEAT_INTERVAL)
        liveness = getattr(health, "liveness", defaults.HEARTBEAT_LIVENESS)
        clocks = metrics.Clocks(t, time.monotonic(), interval, liveness)
        fleet = metrics.fleet_means(self.durations)
        workers = {
            w.worker_id: metrics.worker_row(w, self._stats(w.worker_id), self.durations, fleet, clocks)
            for w in broker.registry
        }
        counts = broker.state_counts
        blocked = broker.scheduler.blocked() if counts[TaskState.QUEUED] else []
        oldest = t - next(iter(self._queued.values())) if self._queued else 0.0
        window = metrics.Window(
            span=max(min(self.window, t - self.started_at), 1e-3),
            finished=[ok for _, ok in self._finished],
            waits=[w for _, w in self._waits],
            durations=[d for _, d in self._durations],
            oldest_wait=oldest,
            anomalies=self._anomaly_count,
        )
        system = metrics.system_row(t, workers, counts, blocked, window)
        load_balancer = metrics.load_balancer_row(
            t,
            self.info.get("strategy"),
            system,
            workers,
            self._workers,
            self._assignments,
            self._results,
            broker.scheduler.stats(),
        )
        self.snapshot = {"ts": t, "system": system, "workers": workers, "load_balancer": load_balancer}

        broker.events.publish(events.SYSTEM_METRICS, dict(system))
        for worker_id, row in workers.items():
            broker.events.publish(events.WORKER_METRICS + worker_id.encode(), dict(row))
        if self.series is not None:
            self.series.put(t, system, workers)
        self._judge(broker, t, oldest, system["queued"], system["throughput"], blocked)
        if self.listeners:
            self._notify("system_metrics", {"timestamp": t, "metrics": system})
            self._notify("workers", {"timestamp": t, "metrics": workers})

    def _judge(
        self, broker: BrokerView, t: float, oldest: float, queued: int, throughput: float, blocked: list[dict[str, Any]]
    ) -> None:
        waits, self._new_waits = self._new_waits, []
        found = self.detector.queue(oldest, queued, waits, throughput, sum(b["tasks"] for b in blocked))
        if found is not None:
            self._raise(broker, found)
        since = self._blocked_since
        self._blocked_since = {b["requirement"]: since.get(b["requirement"], t) for b in blocked}
        lasting = [b for b in blocked if t - self._blocked_since[b["requirement"]] >= defaults.BLOCKED_REPORT_AFTER]
        for found in self.detector.unplaceable(lasting):
            self._raise(broker, found)
        for task_id, (since, worker_id, kind, timeout) in self._running.items():
            found = self.detector.stalled(task_id, worker_id, kind, t - since, timeout)
            if found is not None:
                self._raise(broker, found)
