"""How long tasks take: one model, read by placement, prefetch, anomalies and the monitor.

A task's *kind* is its plugin and its name without the ``[i]`` repeat suffix
(:func:`dtf_bus.spec.base_name`), so the copies of a repeated task teach each other; it prints
as ``plugin:name``. For each (worker, kind), each kind fleet-wide and each worker across kinds
the model keeps an exponentially weighted mean and variance (:class:`Ewma`), learned from every
attempt that ran, whatever its outcome: how long a task holds a slot is what placement and
prefetch need. Anomaly detection judges a successful run against the same series (slow means
slow *for this kind on this worker*), the monitor's speed score compares a worker's per-kind
means with the fleet's. The broker persists the per-(worker, kind) series in ``task_durations``
so a restarted broker still knows them.

Estimates for combinations never seen fall back, in order: the same kind on other workers
scaled by relative ``speed`` (a capability, default 1); a sim task's ``seconds`` param scaled
by speed; this plugin's average on this worker; a default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from dtf_bus import defaults
from dtf_bus.spec import base_name


class Kind(NamedTuple):
    """What durations are learned by: the plugin and the task's name without its repeat suffix."""

    plugin: str
    key: str

    def __str__(self) -> str:
        return f"{self.plugin}:{self.key}" if self.plugin else self.key


def kind_of(plugin: str, name: str) -> Kind:
    """``sim:unit`` for ``unit[3]``: repeats of one spec task are one kind."""
    return Kind(plugin, base_name(name))


def as_kind(kind: Kind | str) -> Kind:
    """A Kind, or its printed form (``sim:unit``; a bare ``unit`` has no plugin)."""
    if isinstance(kind, Kind):
        return kind
    plugin, _, key = kind.rpartition(":")
    return Kind(plugin, key)


class Ewma:
    """Exponentially weighted mean and variance (West's incremental form). ``fresh`` counts the
    samples seen by this process: a series loaded from the store has its mean and count but not
    its spread, which is known again after a few fresh samples."""

    __slots__ = ("alpha", "fresh", "mean", "n", "var")

    def __init__(self, alpha: float = defaults.DURATION_ALPHA, mean: float = 0.0, n: int = 0) -> None:
        self.alpha = alpha
        self.n = n
        self.fresh = 0
        self.mean = mean
        self.var = 0.0

    def update(self, x: float) -> None:
        if self.n == 0:
            self.mean = x
        else:
            diff = x - self.mean
            incr = self.alpha * diff
            self.mean += incr
            self.var = (1 - self.alpha) * (self.var + diff * incr)
        self.n += 1
        self.fresh += 1

    def spread(self, min_relative: float = defaults.ANOMALY_MIN_SPREAD) -> float:
        """The standard deviation, never below ``min_relative`` of the mean."""
        return max(math.sqrt(self.var), abs(self.mean) * min_relative, 1e-9)

    def z(self, x: float) -> float:
        return (x - self.mean) / self.spread()

    # What the store's task_durations row calls them.
    @property
    def ewma(self) -> float:
        return self.mean

    @property
    def count(self) -> int:
        return self.n


class Placed(Protocol):
    """A worker as the model sees it (:class:`dtf_bus.broker.workers.WorkerInfo` is one)."""

    worker_id: str
    capabilities: dict[str, Any]


class Timed(Protocol):
    """A task as the model sees it (:class:`dtf_bus.task.Task` is one)."""

    plugin: str
    key: str
    params: dict[str, Any]


def speed(worker: Placed) -> float:
    value = worker.capabilities.get("speed", 1.0)
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


class Durations:
    """The model. ``stats`` maps (worker id, plugin, task key) to that series, as stored."""

    def __init__(self, alpha: float = defaults.DURATION_ALPHA) -> None:
        self.alpha = alpha
        self.stats: dict[tuple[str, str, str], Ewma] = {}
        self.kinds: dict[Kind, Ewma] = {}  # fleet-wide, per kind
        self.workers: dict[str, Ewma] = {}  # per worker, across kinds (sizes auto prefetch)
        self._by_worker: dict[str, dict[Kind, Ewma]] = {}
        # kind -> {worker_id: (mean, speed)} for cross-worker fallbacks, and the sum of
        # mean x speed over them, so the fallback is O(1) however many workers know the kind
        self._by_kind: dict[Kind, dict[str, tuple[float, float]]] = {}
        self._kind_work: dict[Kind, float] = {}

    # ------------------------------------------------------------ learning

    def load(self, rows: Iterable[tuple[str, str, str, float, int]], speeds: dict[str, float] | None = None) -> None:
        """What a previous broker learned (``task_durations``): the means, not the spreads."""
        for worker_id, plugin, key, mean, count in rows:
            kind = Kind(plugin, key)
            series = Ewma(self.alpha, mean, count)
            self.stats[(worker_id, plugin, key)] = series
            self._by_worker.setdefault(worker_id, {})[kind] = series
            self._learned(kind, worker_id, mean, (speeds or {}).get(worker_id, 1.0))

    def learn(self, worker_id: str, kind: Kind | str, seconds: float, worker_speed: float = 1.0) -> Ewma:
        """One attempt of ``kind`` ran ``seconds`` on ``worker_id``; returns that series."""
        kind = as_kind(kind)
        key = (worker_id, *kind)
        series = self.stats.get(key)
        if series is None:
            series = self.stats[key] = Ewma(self.alpha)
            self._by_worker.setdefault(worker_id, {})[kind] = series
        series.update(seconds)
        for table, name in ((self.kinds, kind), (self.workers, worker_id)):
            overall = table.get(name)
            if overall is None:
                overall = table[name] = Ewma(self.alpha)
            overall.update(seconds)
        self._learned(kind, worker_id, series.mean, worker_speed)
        return series

    def record(self, worker: Placed, task: Timed, duration: float) -> Ewma:
        """:meth:`learn` for a placed task (the scheduler's call)."""
        return self.learn(worker.worker_id, Kind(task.plugin, task.key), duration, speed(worker))

    def _learned(self, kind: Kind, worker_id: str, mean: float, worker_speed: float) -> None:
        known = self._by_kind.setdefault(kind, {})
        old = known.get(worker_id)
        work = self._kind_work.get(kind, 0.0) - (old[0] * old[1] if old else 0.0)
        self._kind_work[kind] = work + mean * worker_speed
        known[worker_id] = (mean, worker_speed)

    # ------------------------------------------------------------- reading

    def series(self, worker_id: str, kind: Kind | str) -> Ewma | None:
        return self.stats.get((worker_id, *as_kind(kind)))

    def fleet(self, kind: Kind | str) -> Ewma | None:
        return self.kinds.get(as_kind(kind))

    def of_worker(self, worker_id: str) -> dict[Kind, Ewma]:
        """Every kind ``worker_id`` has run, with its series there."""
        return self._by_worker.get(worker_id, {})

    def worker_mean(self, worker_id: str) -> float | None:
        """The moving mean of everything ``worker_id`` ran, any kind."""
        overall = self.workers.get(worker_id)
        return overall.mean if overall is not None else None

    def best(self, task: Timed, workers: Iterable[Placed]) -> float | None:
        """The shortest learned duration of this kind of task among ``workers``, if any."""
        known = self._by_kind.get(Kind(task.plugin, task.key), {})
        values = [known[w.worker_id][0] for w in workers if w.worker_id in known]
        return min(values) if values else None

    def estimate(self, worker: Placed, task: Timed) -> float:
        """Expected seconds for ``task`` on ``worker``."""
        kind = Kind(task.plugin, task.key)
        series = self.stats.get((worker.worker_id, *kind))
        if series is not None:
            return series.mean
        mine = speed(worker)
        elsewhere = self._by_kind.get(kind)
        if elsewhere:  # the mean over them of mean x their speed / my speed
            return self._kind_work[kind] / len(elsewhere) / mine
        seconds = task.params.get("seconds") if task.plugin == "sim" else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return float(seconds) / mine
        same_plugin = [s.mean for k, s in self.of_worker(worker.worker_id).items() if k.plugin == task.plugin]
        if same_plugin:
            return sum(same_plugin) / len(same_plugin)
        return defaults.DEFAULT_TASK_ESTIMATE / mine
