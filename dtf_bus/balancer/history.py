"""The task analyzer: how long each kind of task takes on each worker, learned as it runs.

Durations are kept as an exponentially weighted moving average per (worker, plugin, task
key), where the key is the task's name without its ``[i]`` repeat suffix, so the copies of a
repeated task teach each other. The broker persists the averages in DuckDB
(``task_durations``) so a restarted broker still knows them.

Estimates for combinations never seen fall back, in order: the same kind on other workers
scaled by relative ``speed`` (a capability, default 1); a sim task's ``seconds`` param scaled
by speed; this plugin's average on this worker; a default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dtf_bus import defaults
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task


def speed(worker: WorkerInfo) -> float:
    value = worker.capabilities.get("speed", 1.0)
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


@dataclass(slots=True)
class Stat:
    ewma: float
    count: int


class History:
    def __init__(self, alpha: float = defaults.HISTORY_ALPHA) -> None:
        self.alpha = alpha
        self.stats: dict[tuple[str, str, str], Stat] = {}
        # (plugin, key) -> {worker_id: (ewma, speed)} for cross-worker fallbacks, and the sum
        # of ewma x speed over them, so the fallback is O(1) however many workers know the kind
        self._by_kind: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
        self._kind_work: dict[tuple[str, str], float] = {}

    def load(self, rows: Iterable[tuple[str, str, str, float, int]], speeds: dict[str, float] | None = None) -> None:
        for worker_id, plugin, key, ewma, count in rows:
            self.stats[(worker_id, plugin, key)] = Stat(ewma, count)
            self._learned((plugin, key), worker_id, ewma, (speeds or {}).get(worker_id, 1.0))

    def _learned(self, kind: tuple[str, str], worker_id: str, ewma: float, worker_speed: float) -> None:
        known = self._by_kind.setdefault(kind, {})
        old = known.get(worker_id)
        work = self._kind_work.get(kind, 0.0) - (old[0] * old[1] if old else 0.0)
        self._kind_work[kind] = work + ewma * worker_speed
        known[worker_id] = (ewma, worker_speed)

    def record(self, worker: WorkerInfo, task: Task, duration: float) -> Stat:
        key = (worker.worker_id, task.plugin, task.key)
        stat = self.stats.get(key)
        if stat is None:
            stat = self.stats[key] = Stat(duration, 1)
        else:
            stat.ewma += self.alpha * (duration - stat.ewma)
            stat.count += 1
        self._learned(key[1:], worker.worker_id, stat.ewma, speed(worker))
        return stat

    def best(self, task: Task, workers: Iterable[WorkerInfo]) -> float | None:
        """The shortest learned duration of this kind of task among ``workers``, if any."""
        known = self._by_kind.get((task.plugin, task.key), {})
        values = [known[w.worker_id][0] for w in workers if w.worker_id in known]
        return min(values) if values else None

    def estimate(self, worker: WorkerInfo, task: Task) -> float:
        """Expected seconds for ``task`` on ``worker``."""
        kind = (task.plugin, task.key)
        stat = self.stats.get((worker.worker_id, *kind))
        if stat is not None:
            return stat.ewma
        mine = speed(worker)
        elsewhere = self._by_kind.get(kind)
        if elsewhere:  # the mean over them of ewma x their speed / my speed
            return self._kind_work[kind] / len(elsewhere) / mine
        seconds = task.params.get("seconds") if task.plugin == "sim" else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return float(seconds) / mine
        same_plugin = [s.ewma for (w, p, _), s in self.stats.items() if w == worker.worker_id and p == task.plugin]
        if same_plugin:
            return sum(same_plugin) / len(same_plugin)
        return defaults.DEFAULT_TASK_ESTIMATE / mine
