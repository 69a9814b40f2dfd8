"""performance_based: the worker expected to finish the task soonest, from history.

Expected finish on a worker = the estimated work it already holds, spread over its slots,
plus this task's estimated duration there (the duration model, :mod:`dtf_bus.durations`,
learns durations per worker and kind of task and falls back to speed-scaled guesses). A fast
worker with a short backlog beats an idle slow one, which is what heterogeneous fleets need;
with prefetch the task then waits on the fast worker, and stealing corrects a guess that
turned out wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.task import Task


class PerformanceBased:
    name = "performance_based"
    sampled = True  # large fleets: the earliest finish among a random few; stealing corrects

    def __init__(self, history: Durations | None = None) -> None:
        self.history = history or Durations()
        self._held: dict[str, dict[str, float]] = {}  # worker -> {task id: estimate}

    def add_worker(self, worker: WorkerInfo) -> None:
        self._held[worker.worker_id] = {}

    def remove_worker(self, worker_id: str) -> None:
        self._held.pop(worker_id, None)

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        self._held.get(worker.worker_id, {}).pop(task.task_id, None)

    def _backlog(self, worker: WorkerInfo) -> float:
        held = self._held.setdefault(worker.worker_id, {})
        for task_id in [t for t in held if t not in worker.inflight]:  # lost, stolen, cancelled
            del held[task_id]
        return sum(held.values()) / worker.slots

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo:
        estimate = self.history.estimate
        best = min(candidates, key=lambda w: self._backlog(w) + estimate(w, task))
        self._held.setdefault(best.worker_id, {})[task.task_id] = estimate(best, task)
        return best
