"""Monitoring: the broker hook that turns what the broker sees into metrics, scores and anomalies.

It runs on the broker's thread (every hook does), so each callback is a few dictionary
operations; the per-second work happens in :meth:`Monitor.on_tick`. What other threads read
(the HTTP API, the WebSocket bridge) is never the broker's own state: each tick builds a fresh
snapshot dict and swaps one reference, and the few structures updated between ticks (recent
tasks, anomalies) are guarded by one lock held for microseconds.

Every tick it:

- computes system metrics: workers total / active (heard from within two heartbeat intervals)
  / busy, slots, utilisation, queued / assigned / running tasks, throughput (tasks finished
  per second over ``METRICS_WINDOW``), queue wait (mean, p95, oldest queued), success rate and
  mean duration over the window;
- computes per-worker metrics: status, the cpu / memory / gpu utilisation the worker reported
  in its heartbeat, load, results and the performance score of :mod:`dtf_bus.monitor.score`;
- publishes them on the PUB socket (``metrics.system``, ``metrics.worker.<id>``), stores them
  as time series in DuckDB (``metrics_system`` every tick, ``metrics_worker`` every
  ``WORKER_METRICS_STORE_INTERVAL``) and deletes history older than the retention;
- asks :mod:`dtf_bus.monitor.anomaly` about the queue and running tasks. Durations, outcomes and
  utilisation are judged as they arrive. Anomalies are stored (``anomalies``), published
  (``anomaly``) and kept for the API.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

from dtf_bus import defaults, events
from dtf_bus.broker.hooks import BrokerHook, BrokerView
from dtf_bus.monitor import score
from dtf_bus.monitor.anomaly import Anomaly, AnomalyDetector, task_kind
from dtf_bus.task import TaskState

if TYPE_CHECKING:
    from dtf_bus.broker.workers import WorkerInfo
    from dtf_bus.task import Attempt, Job, Task

log = logging.getLogger("dtf.monitor")

# Stored and served as history; every name is a column of its table.
SYSTEM_METRICS = (
    "workers_total",
    "workers_active",
    "workers_busy",
    "slots_total",
    "slots_busy",
    "utilisation",
    "queued",
    "assigned",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "throughput",
    "queue_wait_mean",
    "queue_wait_p95",
    "queue_oldest_wait",
    "success_rate",
    "task_duration_mean",
)
WORKER_METRICS = (
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "load",
    "running",
    "slots",
    "completed",
    "failed",
    "success_rate",
    "duration_mean",
    "score",
)
TABLES = {
    "metrics_system": "CREATE TABLE IF NOT EXISTS metrics_system (ts TIMESTAMP, "
    + ", ".join(f"{m} DOUBLE" for m in SYSTEM_METRICS)
    + ")",
    "metrics_worker": "CREATE TABLE IF NOT EXISTS metrics_worker (ts TIMESTAMP, worker_id VARCHAR, status VARCHAR, "
    + ", ".join(f"{m} DOUBLE" for m in WORKER_METRICS)
    + ")",
    "anomalies": "CREATE TABLE IF NOT EXISTS anomalies (ts TIMESTAMP, type VARCHAR, severity VARCHAR, "
    "subject VARCHAR, explanation VARCHAR, value DOUBLE, threshold DOUBLE)",
}
TABLE_COLUMNS = {
    "metrics_system": ("ts", *SYSTEM_METRICS),
    "metrics_worker": ("ts", "worker_id", "status", *WORKER_METRICS),
    "anomalies": ("ts", "type", "severity", "subject", "explanation", "value", "threshold"),
}
UTILISATION_KEYS = ("cpu_percent", "memory_percent", "gpu_percent")


VIEW_FIELDS = (
    "task_id",
    "job_id",
    "name",
    "plugin",
    "state",
    "worker_id",
    "attempt",
    "submitted_at",
    "assigned_at",
    "started_at",
    "ended_at",
    "error",
    "updated_at",
)


def _frozen(task: Task, now: float) -> tuple:
    """A task as it is now, taken on the broker's thread: the API's threads read these tuples,
    never the Task the loop goes on changing (a view built from it could mix two states)."""
    return (
        task.task_id,
        task.job_id,
        task.name,
        task.plugin,
        task.state,
        task.worker_id,
        task.attempt,
        task.submitted_at,
        task.assigned_at,
        task.started_at,
        task.ended_at,
        task.error,
        now,
    )


def _view(entry: tuple) -> dict[str, Any]:
    view = dict(zip(VIEW_FIELDS, entry, strict=True))
    view["state"] = str(view["state"])
    return view


def utc(ts: float) -> datetime:
    """Epoch seconds as the naive UTC datetime the store writes TIMESTAMP columns with."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


@dataclass(slots=True)
class WorkerStats:
    """What the monitor remembers about one worker id, across its reconnections."""

    first_seen: float
    up_since: float | None
    up_seconds: float = 0.0
    succeeded: int = 0
    finished: int = 0
    assignments: int = 0
    lost: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # assignments per task kind
    durations: dict[str, list[float]] = field(default_factory=dict)  # kind -> [runs, mean seconds]

    def uptime(self, now: float) -> float:
        up = self.up_seconds + (now - self.up_since if self.up_since is not None else 0.0)
        return up / max(now - self.first_seen, 1e-9)


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
        self.recent_tasks = recent_tasks
        # Called on the broker thread with (channel, data) for each change; must be quick.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.started_at = time.time()
        self.info: dict[str, Any] = {}
        self.store = None
        self.snapshot: dict[str, Any] = {"ts": self.started_at, "system": {}, "workers": {}, "load_balancer": {}}
        self._lock = threading.Lock()
        self._anomalies: deque[dict[str, Any]] = deque(maxlen=defaults.ANOMALY_KEEP)
        self._anomaly_count = 0
        # task id -> _frozen(task) at its last change; insertion order = least recently changed first.
        # Dicts are built when read, not at each of the several state changes of every task.
        self._tasks: OrderedDict[str, tuple] = OrderedDict()
        self._blocked_since: dict[str, float] = {}  # requirement -> when it was first seen unplaceable
        self._kinds: dict[str, str] = {}  # task id -> kind, while the task is live
        self._queued: dict[str, float] = {}  # task id -> when queued; insertion order is time order
        self._running: dict[str, tuple[float, str, str, float | None]] = {}  # id -> (since, worker, kind, timeout)
        self._finished: deque[tuple[float, bool]] = deque()  # (when, succeeded) within the window
        self._waits: deque[tuple[float, float]] = deque()  # (when, queue wait) within the window
        self._durations: deque[tuple[float, float]] = deque()  # (when, seconds) within the window
        self._new_waits: list[float] = []
        self._workers: dict[str, WorkerStats] = {}
        self._kind_means: dict[str, list[float]] = {}  # fleet: kind -> [runs, mean seconds]
        self._assignments = 0
        self._results = 0
        self._last_worker_store = 0.0
        self._stored_fleet: set[str] = set()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def on_start(self, broker: BrokerView) -> None:
        self.attach(broker)

    def attach(self, broker: BrokerView) -> None:
        """Create the tables and start the retention sweeper (idempotent; before serve() is fine)."""
        if self.store is not None:
            return
        self.store = broker.store
        for name, ddl in TABLES.items():
            broker.store.register_table(name, ddl, TABLE_COLUMNS[name])
        self.info = {
            "endpoint": broker.endpoint,
            "metrics_endpoint": broker.metrics_endpoint,
            "db": broker.store.path,
            "strategy": getattr(broker.scheduler.strategy, "name", type(broker.scheduler.strategy).__name__),
            "started_at": self.started_at,
        }
        self._sweeper = threading.Thread(target=self._sweep, name="dtf-monitor-retention", daemon=True)
        self._sweeper.start()

    def on_stop(self, broker: BrokerView) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)

    def _sweep(self) -> None:
        """Delete history older than the retention, off the broker's thread."""
        while not self._stop.wait(min(defaults.METRICS_RETENTION_SWEEP, self.retention)):
            cutoff = utc(time.time() - self.retention)
            cursor = self.store.cursor()
            try:
                for table in TABLES:
                    cursor.execute(f"DELETE FROM {table} WHERE ts < ?", [cutoff])
            except duckdb.Error as exc:
                log.warning("retention sweep failed: %s", exc)
            finally:
                cursor.close()

    # ------------------------------------------------------ reading (any thread)

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
        with self._lock:
            entry = self._tasks.get(task_id)
        return None if entry is None else _view(entry)

    def tasks(self) -> list[dict[str, Any]]:
        """The most recently changed tasks, newest last."""
        with self._lock:
            entries = list(self._tasks.values())
        return [_view(entry) for entry in entries]

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

    def on_worker_registered(self, broker: BrokerView, worker: WorkerInfo) -> None:
        stats = self._stats(worker.worker_id)
        if stats.up_since is None:
            stats.up_since = time.time()

    def on_worker_lost(self, broker: BrokerView, worker: WorkerInfo, reason: str) -> None:
        stats = self._stats(worker.worker_id)
        if stats.up_since is not None:
            stats.up_seconds += time.time() - stats.up_since
            stats.up_since = None
        stats.lost += 1
        self.detector.forget_worker(worker.worker_id)

    def on_heartbeat(self, broker: BrokerView, worker: WorkerInfo) -> None:
        metrics = worker.metrics
        if metrics:
            found = self.detector.load(worker.worker_id, {k: metrics[k] for k in UTILISATION_KEYS if k in metrics})
            if found is not None:
                self._raise(broker, found)

    def on_job_submitted(self, broker: BrokerView, job: Job) -> None:
        now = job.submitted_at
        for task_id in job.task_ids:
            self._queued[task_id] = now
        tasks = self._tasks
        with self._lock:
            for task_id in job.task_ids[-self.recent_tasks :]:
                tasks[task_id] = _frozen(broker.tasks[task_id], now)
            for task_id in list(itertools.islice(tasks, max(len(tasks) - self.recent_tasks, 0))):
                del tasks[task_id]
        self._notify(
            "tasks",
            {"timestamp": now, "event": {"event": "job_submitted", "job_id": job.job_id, "total": len(job.task_ids)}},
        )

    def on_job_released(self, broker: BrokerView, job: Job) -> None:
        """Its tasks are served from DuckDB now; holding them here would pin their memory."""
        tasks = self._tasks
        with self._lock:
            for task_id in job.task_ids:
                tasks.pop(task_id, None)

    def on_task_state(self, broker: BrokerView, task: Task) -> None:
        now = time.time()
        task_id = task.task_id
        state = task.state
        tasks = self._tasks
        entry = _frozen(task, now)
        with self._lock:
            tasks[task_id] = entry
            tasks.move_to_end(task_id)
            if len(tasks) > self.recent_tasks:
                tasks.popitem(last=False)
        kind = self._kinds.get(task_id)
        if kind is None:
            kind = self._kinds[task_id] = task_kind(task.plugin, task.name)
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
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
        elif state is TaskState.RUNNING:
            self._running[task_id] = (task.started_at or now, task.worker_id, kind, task.timeout)
        elif state.final:
            self._queued.pop(task_id, None)
            self._running.pop(task_id, None)
            self._kinds.pop(task_id, None)
            if state is not TaskState.CANCELLED:
                self._finished.append((now, state is TaskState.SUCCEEDED))
        if self.listeners:
            view = _view(entry)
            self._notify("tasks", {"timestamp": now, "event": {**view, "event": str(state), "kind": kind}})

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
        kind = self._kinds.get(task.task_id) or task_kind(task.plugin, task.name)
        self._durations.append((time.time(), seconds))
        for means in (stats.durations.setdefault(kind, [0, 0.0]), self._kind_means.setdefault(kind, [0, 0.0])):
            means[0] += 1
            means[1] += (seconds - means[1]) / means[0]
        found = self.detector.duration(attempt.worker_id, kind, seconds, task.task_id)
        if found is not None:
            self._raise(broker, found)

    def _raise(self, broker: BrokerView, anomaly: Anomaly) -> None:
        record = anomaly.to_dict()
        log.warning("anomaly %s (%s) on %s: %s", anomaly.type, anomaly.severity, anomaly.subject, anomaly.explanation)
        with self._lock:
            self._anomalies.append(record)
            self._anomaly_count += 1
        if self.store is not None:
            self.store.put(
                "anomalies",
                (
                    anomaly.ts,
                    anomaly.type,
                    anomaly.severity,
                    anomaly.subject,
                    anomaly.explanation,
                    anomaly.value,
                    anomaly.threshold,
                ),
            )
        broker.events.publish(events.ANOMALY, dict(record))
        self._notify("anomalies", {"timestamp": anomaly.ts, "anomaly": record})

    # ------------------------------------------------------------------ tick

    def on_tick(self, broker: BrokerView, now: float) -> None:
        t = time.time()
        cutoff = t - self.window
        for series in (self._finished, self._waits, self._durations):
            while series and series[0][0] < cutoff:
                series.popleft()
        span = max(min(self.window, t - self.started_at), 1e-3)
        health = broker.health
        interval = getattr(health, "interval", defaults.HEARTBEAT_INTERVAL)
        liveness = getattr(health, "liveness", defaults.HEARTBEAT_LIVENESS)
        mono = time.monotonic()
        fleet_means = {kind: m[1] for kind, m in self._kind_means.items()}
        workers: dict[str, dict[str, Any]] = {}
        lb_workers: dict[str, dict[str, Any]] = {}
        active = busy = slots = slots_busy = 0
        for w in broker.registry:
            stats = self._stats(w.worker_id)
            beat = getattr(w, "heartbeat_interval", 0.0) or interval
            silence = max(mono - w.last_seen, 0.0)
            state = getattr(w, "state", "alive")
            running = len(w.inflight)
            if state != "alive":
                status = state
            elif silence > 2 * beat:
                status = "silent"
            else:
                status = "busy" if running else "idle"
            active += status in ("busy", "idle")
            busy += running > 0
            slots += w.slots
            slots_busy += min(running, w.slots)
            perf = score.performance(
                stats.succeeded,
                stats.finished,
                {k: (int(n), mean) for k, (n, mean) in stats.durations.items()},
                fleet_means,
                stats.uptime(t),
                silence,
                beat,
                liveness,
            )
            runs = sum(int(n) for n, _ in stats.durations.values())
            reported = w.metrics or {}
            workers[w.worker_id] = {
                "ts": t,
                "worker_id": w.worker_id,
                "status": status,
                "hardware": w.hardware,
                "profile": w.capabilities.get("profile"),
                "hostname": w.capabilities.get("hostname"),
                "gpu_model": w.capabilities.get("gpu_model"),
                "memory_gb": w.capabilities.get("memory_gb"),
                "slots": w.slots,
                "running": running,
                "load": round(running / w.slots, 4) if w.slots else 0.0,
                "completed": w.completed,
                "failed": stats.finished - stats.succeeded,
                "success_rate": _round(stats.succeeded / stats.finished) if stats.finished else None,
                "duration_mean": _round(sum(n * m for n, m in stats.durations.values()) / runs) if runs else None,
                "cpu_percent": reported.get("cpu_percent"),
                "memory_percent": reported.get("memory_percent"),
                "gpu_percent": reported.get("gpu_percent"),
                "silence_s": round(silence, 3),
                "uptime_s": round(t - w.registered_at, 3),
                **perf.to_dict(),
            }
            lb_workers[w.worker_id] = {
                "hardware": w.hardware,
                "slots": w.slots,
                "running": running,
                "load": workers[w.worker_id]["load"],
                "assignments": stats.assignments,
                "by_kind": dict(stats.by_kind),
            }
        counts = broker.state_counts
        blocked = broker.scheduler.blocked() if counts[TaskState.QUEUED] else []
        finished = len(self._finished)
        succeeded_w = sum(1 for _, ok in self._finished if ok)
        waits = sorted(w for _, w in self._waits)
        oldest = t - next(iter(self._queued.values())) if self._queued else 0.0
        throughput = finished / span
        system = {
            "ts": t,
            "workers_total": len(workers),
            "workers_active": active,
            "workers_busy": busy,
            "slots_total": slots,
            "slots_busy": slots_busy,
            "utilisation": round(slots_busy / slots, 4) if slots else 0.0,
            "queued": counts[TaskState.QUEUED],
            # Queued tasks no live worker can run, and why (capped: it travels every second).
            "blocked": sum(b["tasks"] for b in blocked),
            "blocked_reasons": blocked[: defaults.BLOCKED_SHOWN],
            "assigned": counts[TaskState.ASSIGNED],
            "running": counts[TaskState.RUNNING],
            "succeeded": counts[TaskState.SUCCEEDED],
            "failed": counts[TaskState.FAILED],
            "timed_out": counts[TaskState.TIMED_OUT],
            "cancelled": counts[TaskState.CANCELLED],
            "throughput": round(throughput, 4),
            "queue_wait_mean": _round(sum(waits) / len(waits)) if waits else None,
            "queue_wait_p95": _round(waits[min(int(len(waits) * 0.95), len(waits) - 1)]) if waits else None,
            "queue_oldest_wait": round(max(oldest, 0.0), 4),
            "success_rate": _round(succeeded_w / finished) if finished else None,
            "task_duration_mean": _round(sum(d for _, d in self._durations) / len(self._durations))
            if self._durations
            else None,
            "anomalies_total": self._anomaly_count,
        }
        inflight = counts[TaskState.ASSIGNED] + counts[TaskState.RUNNING]
        settled = self._assignments - inflight
        per_slot = [lb["assignments"] / lb["slots"] for lb in lb_workers.values() if lb["slots"]]
        squares = sum(x * x for x in per_slot)
        load_balancer = {
            "ts": t,
            "strategy": self.info.get("strategy"),
            "utilisation": system["utilisation"],
            "assignments": self._assignments,
            "results": self._results,
            # Placements that ended in a result rather than being lost with their worker.
            "placement_success": round(min(self._results / settled, 1.0), 4) if settled > 0 else None,
            # Jain's fairness index of assignments per slot: 1 = perfectly even, 1/n = one worker took all.
            "fairness": round(sum(per_slot) ** 2 / (len(per_slot) * squares), 4) if squares else None,
            "workers": lb_workers,
        }
        # The scheduler's own counters: steals, queue wait, and assignment efficiency (the best
        # duration learned for a kind of task / the duration it actually took where placed).
        placement = broker.scheduler.stats()
        load_balancer.update(
            steals=placement["steals"],
            avg_queue_wait_s=_round(placement["avg_queue_wait_s"]),
            assignment_efficiency=_round(placement["assignment_efficiency"]),
        )
        self.snapshot = {"ts": t, "system": system, "workers": workers, "load_balancer": load_balancer}

        broker.events.publish(events.SYSTEM_METRICS, dict(system))
        for worker_id, row in workers.items():
            broker.events.publish(events.WORKER_METRICS + worker_id.encode(), dict(row))
        self._store(t, system, workers)
        self._judge(broker, t, oldest, system["queued"], throughput, blocked)
        if self.listeners:
            self._notify("system_metrics", {"timestamp": t, "metrics": system})
            self._notify("workers", {"timestamp": t, "metrics": workers})

    def _store(self, t: float, system: dict[str, Any], workers: dict[str, dict[str, Any]]) -> None:
        if self.store is None:
            return
        self.store.put("metrics_system", (t, *(system[m] for m in SYSTEM_METRICS)))
        # Every interval, and at once when the fleet changes (so a short-lived worker is on record).
        if t - self._last_worker_store >= self.worker_store_interval or workers.keys() != self._stored_fleet:
            self._last_worker_store = t
            self._stored_fleet = set(workers)
            for worker_id, row in workers.items():
                self.store.put("metrics_worker", (t, worker_id, row["status"], *(row[m] for m in WORKER_METRICS)))

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

    # ------------------------------------------------------------ history

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
            ("metrics_worker", WORKER_METRICS)
            if worker_id is not None
            else (
                "metrics_system",
                SYSTEM_METRICS,
            )
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
