"""Anomaly detection: statistics over what the broker sees, not only fixed thresholds.

Each series keeps an exponentially weighted mean and variance: task durations per worker and
task kind are the shared duration model's (:mod:`dtf_bus.durations`), so "slow" means slow *for
this kind of task on this worker* by the same numbers placement uses, and the baseline follows a
fleet that changes; queue waits keep a series of their own. A value is anomalous when it lies more
than ``z`` spreads above its mean. Floors (``ANOMALY_QUEUE_WAIT_MIN``, ``ANOMALY_STALL_MIN``,
``ANOMALY_MIN_SPREAD``) keep millisecond jitter from ever being reported.

Kinds of anomaly:

- ``slow_task``: a duration far above its (worker, kind) mean.
- ``queue_wait``: the oldest queued task has waited far longer than tasks usually wait.
- ``success_rate_drop``: a worker's (or the fleet's) recent success rate fell well below its own past.
- ``stalled_task``: a task running many times longer than its kind usually takes.
- ``overloaded_worker``: cpu, memory or gpu at the limit for ``ANOMALY_OVERLOAD_SECONDS`` on end.

Every anomaly has a type, a severity (``warning`` or ``critical``), a subject (a worker, a task
or ``queue``) and an explanation a person can act on. The same (type, subject) is not raised
again within ``ANOMALY_COOLDOWN`` seconds, so a lasting condition is one line, not a flood.
This module is pure logic (the monitor feeds it), which is why it takes a clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dtf_bus import defaults
from dtf_bus.durations import Durations, Ewma, Kind, as_kind

WARNING, CRITICAL = "warning", "critical"


@dataclass(frozen=True, slots=True)
class Anomaly:
    type: str
    severity: str
    subject: str
    explanation: str
    value: float
    threshold: float
    ts: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class AnomalyDetector:
    def __init__(
        self,
        z: float = defaults.ANOMALY_Z,
        z_critical: float = defaults.ANOMALY_Z_CRITICAL,
        min_samples: int = defaults.ANOMALY_MIN_SAMPLES,
        slow_min: float = defaults.ANOMALY_SLOW_MIN,
        queue_wait_min: float = defaults.ANOMALY_QUEUE_WAIT_MIN,
        success_window: int = defaults.ANOMALY_SUCCESS_WINDOW,
        success_drop: float = defaults.ANOMALY_SUCCESS_DROP,
        stall_factor: float = defaults.ANOMALY_STALL_FACTOR,
        stall_min: float = defaults.ANOMALY_STALL_MIN,
        stall_no_history: float = defaults.ANOMALY_STALL_NO_HISTORY,
        overload_percent: float = defaults.ANOMALY_OVERLOAD_PERCENT,
        overload_seconds: float = defaults.ANOMALY_OVERLOAD_SECONDS,
        cooldown: float = defaults.ANOMALY_COOLDOWN,
        clock: Callable[[], float] = time.time,
        durations: Durations | None = None,
    ) -> None:
        """``durations``: the model to judge by (the broker's, which learns from every result);
        None: one of its own, which :meth:`duration` teaches."""
        self.z = z
        self.z_critical = z_critical
        self.min_samples = min_samples
        self.slow_min = slow_min
        self.queue_wait_min = queue_wait_min
        self.success_window = success_window
        self.success_drop = success_drop
        self.stall_factor = stall_factor
        self.stall_min = stall_min
        self.stall_no_history = stall_no_history
        self.overload_percent = overload_percent
        self.overload_seconds = overload_seconds
        self.cooldown = cooldown
        self.clock = clock
        self.durations = durations or Durations()
        self.queue_waits = Ewma(defaults.ANOMALY_QUEUE_WAIT_ALPHA)
        # subject -> (recent outcomes, [ok before them, n before them, ok among them])
        self._outcomes: dict[str, tuple[deque[bool], list[int]]] = {}
        self._hot_since: dict[str, float] = {}
        self._last_raised: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------ raising

    def _raise(
        self, type_: str, severity: str, subject: str, explanation: str, value: float, threshold: float
    ) -> Anomaly | None:
        now = self.clock()
        key = (type_, subject)
        last = self._last_raised.get(key)
        if last is not None and now - last < self.cooldown:
            return None
        self._last_raised[key] = now
        if len(self._last_raised) > 10_000:  # forget subjects long quiet (finished tasks, gone workers)
            self._last_raised = {k: t for k, t in self._last_raised.items() if now - t < self.cooldown}
        return Anomaly(type_, severity, subject, explanation, round(value, 6), round(threshold, 6), now)

    def _severity(self, z: float) -> str:
        return CRITICAL if z >= self.z_critical else WARNING

    # ---------------------------------------------------------- durations

    def duration(
        self, worker_id: str, kind: Kind | str, seconds: float, task_id: str, learn: bool = True
    ) -> Anomaly | None:
        """Judge one finished attempt's duration, then (``learn``) teach the model. A shared
        model learns from the broker instead; judged first, a slow run is compared with what
        came before it, not with itself."""
        kind = as_kind(kind)
        stats = self.durations.series(worker_id, kind)
        found = None
        if stats is not None and stats.fresh >= self.min_samples and seconds - stats.mean >= self.slow_min:
            z = stats.z(seconds)
            if z >= self.z:
                threshold = stats.mean + self.z * stats.spread()
                found = self._raise(
                    "slow_task",
                    self._severity(z),
                    worker_id,
                    f"task {task_id} ({kind}) took {seconds:.3g}s on {worker_id}, {z:.1f} standard deviations "
                    f"above its usual {stats.mean:.3g}s ± {stats.spread():.2g}s there ({stats.n} runs)",
                    seconds,
                    threshold,
                )
        if learn:
            self.durations.learn(worker_id, kind, seconds)
        return found

    def stall_threshold(self, kind: Kind | str, timeout: float | None) -> float | None:
        """Seconds after which a running task of ``kind`` is stalled; None: leave it to its timeout."""
        fleet = self.durations.fleet(kind)
        if fleet is not None and fleet.fresh >= self.min_samples:
            return max(self.stall_min, fleet.mean * self.stall_factor + self.z * fleet.spread())
        if timeout is not None:
            return None  # the worker enforces the timeout; we know nothing better
        return self.stall_no_history

    def stalled(
        self, task_id: str, worker_id: str, kind: Kind | str, elapsed: float, timeout: float | None
    ) -> Anomaly | None:
        threshold = self.stall_threshold(kind, timeout)
        if threshold is None or elapsed < threshold:
            return None
        fleet = self.durations.fleet(kind)
        usual = f"tasks of this kind usually take {fleet.mean:.3g}s" if fleet and fleet.n else "no task of this kind"
        if not (fleet and fleet.n):
            usual += " has finished yet"
        return self._raise(
            "stalled_task",
            CRITICAL if elapsed >= 2 * threshold else WARNING,
            task_id,
            f"task {task_id} ({as_kind(kind)}) has been running on {worker_id} for {elapsed:.1f}s; {usual}",
            elapsed,
            threshold,
        )

    # -------------------------------------------------------------- queue

    def queue(
        self, oldest_wait: float, queued: int, waits: list[float], throughput: float, blocked: int = 0
    ) -> Anomaly | None:
        """Judge the queue once per tick: ``waits`` are the queue waits of tasks placed since the last.
        ``blocked`` queued tasks no live worker can run are reported apart (:meth:`unplaceable`):
        a drain estimate for them would be a promise nobody keeps."""
        base = self.queue_waits
        found = None
        if queued > blocked and oldest_wait >= self.queue_wait_min:
            known = base.n >= self.min_samples
            threshold = max(self.queue_wait_min, base.mean + self.z * base.spread()) if known else self.queue_wait_min
            if oldest_wait >= threshold:
                z = base.z(oldest_wait) if known else self.z
                placeable = queued - blocked
                if blocked:
                    drain = f"{blocked} of them cannot be placed on any live worker"
                elif throughput > 0:
                    drain = f"~{placeable / throughput:.0f}s to drain at {throughput:.2g} tasks/s"
                else:
                    drain = "nothing finishing right now"
                usual = (
                    f"tasks usually wait {base.mean:.3g}s ± {base.spread():.2g}s"
                    if known
                    else ("no usual wait known yet")
                )
                found = self._raise(
                    "queue_wait",
                    self._severity(z) if known else WARNING,
                    "queue",
                    f"{queued} task(s) queued, the oldest for {oldest_wait:.1f}s ({usual}); {drain}",
                    oldest_wait,
                    threshold,
                )
        for wait in waits:
            base.update(wait)
        return found

    def unplaceable(self, blocked: list[dict[str, Any]]) -> list[Anomaly]:
        """One warning per requirement no live worker meets, with the broker's reasons (again
        after the cooldown while it lasts)."""
        found = []
        for block in blocked:
            anomaly = self._raise(
                "unplaceable",
                WARNING,
                block["requirement"],
                f"{block['tasks']} queued task(s) ({block['requirement']}) cannot be placed: "
                + "; ".join(block["reasons"]),
                block["tasks"],
                0,
            )
            if anomaly is not None:
                found.append(anomaly)
        return found

    # ----------------------------------------------------------- outcomes

    def outcome(self, subject: str, ok: bool) -> Anomaly | None:
        """Record one result for ``subject`` (a worker id, or ``fleet``) and judge its success rate."""
        entry = self._outcomes.get(subject)
        if entry is None:
            entry = self._outcomes[subject] = (deque(maxlen=self.success_window), [0, 0, 0])
        recent, counts = entry
        if len(recent) == recent.maxlen:
            oldest = recent[0]
            counts[0] += oldest
            counts[1] += 1
            counts[2] -= oldest
        recent.append(ok)
        counts[2] += ok
        if len(recent) < recent.maxlen or counts[1] < self.success_window:
            return None
        past = counts[0] / counts[1]
        now = counts[2] / len(recent)
        if past - now < self.success_drop:
            return None
        return self._raise(
            "success_rate_drop",
            CRITICAL if now <= 0.2 else WARNING,
            subject,
            f"{subject}: {now:.0%} of its last {len(recent)} tasks succeeded, against {past:.0%} of the "
            f"{counts[1]} before them",
            now,
            past - self.success_drop,
        )

    # --------------------------------------------------------------- load

    def load(self, worker_id: str, metrics: dict[str, float]) -> Anomaly | None:
        """Judge one heartbeat's utilisation: at the limit for long enough is an overload."""
        hot = {k: v for k, v in metrics.items() if isinstance(v, int | float) and v >= self.overload_percent}
        if not hot:
            self._hot_since.pop(worker_id, None)
            return None
        now = self.clock()
        since = self._hot_since.setdefault(worker_id, now)
        if now - since < self.overload_seconds:
            return None
        what = ", ".join(f"{k.removesuffix('_percent')} {v:.0f}%" for k, v in sorted(hot.items()))
        return self._raise(
            "overloaded_worker",
            CRITICAL if hot.get("memory_percent", 0) >= 99 else WARNING,
            worker_id,
            f"{worker_id} at {what}, at or above {self.overload_percent:.0f}% for {now - since:.0f}s",
            max(hot.values()),
            self.overload_percent,
        )

    def forget_worker(self, worker_id: str) -> None:
        self._hot_since.pop(worker_id, None)
