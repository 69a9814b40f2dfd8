"""The monitor's figures, computed once a tick: per worker, for the system, for the load balancer.

Pure functions over what the monitor counted and the broker's registry; the per-kind durations
come from the shared duration model (:mod:`dtf_bus.durations`), the performance score from
:mod:`dtf_bus.monitor.score`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from dtf_bus import defaults
from dtf_bus.durations import Durations, Kind
from dtf_bus.monitor import score


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

    def uptime(self, now: float) -> float:
        up = self.up_seconds + (now - self.up_since if self.up_since is not None else 0.0)
        return up / max(now - self.first_seen, 1e-9)


class Observed(Protocol):
    """A registered worker as the monitor reads it (:class:`dtf_bus.broker.workers.WorkerInfo`)."""

    worker_id: str
    capabilities: dict[str, Any]
    slots: int
    inflight: dict[str, int]
    metrics: dict[str, Any]
    completed: int
    state: str
    last_seen: float
    registered_at: float
    heartbeat_interval: float

    @property
    def hardware(self) -> list[str]: ...


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


def status(w: Observed, silence: float, beat: float) -> str:
    """alive workers are busy, idle or silent (unheard for two heartbeats); others their state."""
    if w.state != "alive":
        return w.state
    if silence > 2 * beat:
        return "silent"
    return "busy" if w.inflight else "idle"


@dataclass(frozen=True, slots=True)
class Clocks:
    """One tick's time (``t`` wall clock, ``mono`` monotonic) and the heartbeat settings."""

    t: float
    mono: float
    interval: float
    liveness: int


def worker_row(
    w: Observed, stats: WorkerStats, durations: Durations, fleet_means: dict[Kind, float], now: Clocks
) -> dict[str, Any]:
    """One worker's figures: what it reported, its load, its results and its performance score."""
    t, mono, interval, liveness = now.t, now.mono, now.interval, now.liveness
    beat = w.heartbeat_interval or interval
    silence = max(mono - w.last_seen, 0.0)
    running = len(w.inflight)
    mine = {kind: (series.n, series.mean) for kind, series in durations.of_worker(w.worker_id).items()}
    perf = score.performance(
        stats.succeeded, stats.finished, mine, fleet_means, stats.uptime(t), silence, beat, liveness
    )
    runs = sum(n for n, _ in mine.values())
    reported = w.metrics or {}
    return {
        "ts": t,
        "worker_id": w.worker_id,
        "status": status(w, silence, beat),
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
        "success_rate": rounded(stats.succeeded / stats.finished) if stats.finished else None,
        "duration_mean": rounded(sum(n * m for n, m in mine.values()) / runs) if runs else None,
        "cpu_percent": reported.get("cpu_percent"),
        "memory_percent": reported.get("memory_percent"),
        "gpu_percent": reported.get("gpu_percent"),
        "silence_s": round(silence, 3),
        "uptime_s": round(t - w.registered_at, 3),
        **perf.to_dict(),
    }


@dataclass(slots=True)
class Window:
    """What happened within the monitor's window, and since the start, for the system row."""

    span: float  # seconds the window covers (shorter right after the start)
    finished: list[bool]  # per finished task: succeeded
    waits: list[float]  # queue waits of tasks placed
    durations: list[float]  # of tasks that succeeded
    oldest_wait: float  # of the task queued longest, now
    anomalies: int  # raised since the start


def system_row(
    t: float, workers: dict[str, dict[str, Any]], counts: dict[Any, int], blocked: list[dict[str, Any]], w: Window
) -> dict[str, Any]:
    """The fleet's figures (``counts``: tasks per TaskState, which are strings)."""
    slots = sum(row["slots"] for row in workers.values())
    slots_busy = sum(min(row["running"], row["slots"]) for row in workers.values())
    finished = len(w.finished)
    waits = sorted(w.waits)
    return {
        "ts": t,
        "workers_total": len(workers),
        "workers_active": sum(row["status"] in ("busy", "idle") for row in workers.values()),
        "workers_busy": sum(row["running"] > 0 for row in workers.values()),
        "slots_total": slots,
        "slots_busy": slots_busy,
        "utilisation": round(slots_busy / slots, 4) if slots else 0.0,
        "queued": counts["queued"],
        # Queued tasks no live worker can run, and why (capped: it travels every second).
        "blocked": sum(b["tasks"] for b in blocked),
        "blocked_reasons": blocked[: defaults.BLOCKED_SHOWN],
        "assigned": counts["assigned"],
        "running": counts["running"],
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "timed_out": counts["timed_out"],
        "cancelled": counts["cancelled"],
        "throughput": round(finished / w.span, 4),
        "queue_wait_mean": rounded(sum(waits) / len(waits)) if waits else None,
        "queue_wait_p95": rounded(waits[min(int(len(waits) * 0.95), len(waits) - 1)]) if waits else None,
        "queue_oldest_wait": round(max(w.oldest_wait, 0.0), 4),
        "success_rate": rounded(sum(w.finished) / finished) if finished else None,
        "task_duration_mean": rounded(sum(w.durations) / len(w.durations)) if w.durations else None,
        "anomalies_total": w.anomalies,
    }


def load_balancer_row(
    t: float,
    strategy: str | None,
    system: dict[str, Any],
    workers: dict[str, dict[str, Any]],
    stats: dict[str, WorkerStats],
    assignments: int,
    results: int,
    placement: dict[str, Any],
) -> dict[str, Any]:
    """How placement is doing: fairness, placements that ended in a result, the scheduler's
    own counters (``placement``: steals, queue wait, assignment efficiency)."""
    lb_workers = {
        worker_id: {
            "hardware": row["hardware"],
            "slots": row["slots"],
            "running": row["running"],
            "load": row["load"],
            "assignments": stats[worker_id].assignments,
            "by_kind": dict(stats[worker_id].by_kind),
        }
        for worker_id, row in workers.items()
    }
    settled = assignments - (system["assigned"] + system["running"])
    per_slot = [lb["assignments"] / lb["slots"] for lb in lb_workers.values() if lb["slots"]]
    squares = sum(x * x for x in per_slot)
    return {
        "ts": t,
        "strategy": strategy,
        "utilisation": system["utilisation"],
        "assignments": assignments,
        "results": results,
        # Placements that ended in a result rather than being lost with their worker.
        "placement_success": round(min(results / settled, 1.0), 4) if settled > 0 else None,
        # Jain's fairness index of assignments per slot: 1 = perfectly even, 1/n = one worker took all.
        "fairness": round(sum(per_slot) ** 2 / (len(per_slot) * squares), 4) if squares else None,
        "workers": lb_workers,
        # The best duration learned for a kind of task / the duration it actually took where placed.
        "steals": placement["steals"],
        "avg_queue_wait_s": rounded(placement["avg_queue_wait_s"]),
        "assignment_efficiency": rounded(placement["assignment_efficiency"]),
    }


def fleet_means(durations: Durations) -> dict[Kind, float]:
    """Each kind's fleet-wide mean, what a worker's speed is compared with."""
    return {kind: series.mean for kind, series in durations.kinds.items()}
