"""performance_based: the worker expected to finish the task soonest, from history.

Expected finish on a worker = the estimated work it already holds, spread over its slots,
plus this task's estimated duration there (the duration model, :mod:`dtf_bus.durations`,
learns durations per worker and kind of task and falls back to speed-scaled guesses). A fast
worker with a short backlog beats an idle slow one, which is what heterogeneous fleets need;
with prefetch the task then waits on the fast worker, and stealing corrects a guess that
turned out wrong.

Earliest finish counts every capable worker, not only those with room now (HEFT's rule, and
dask's ``decide_worker`` by occupancy): a task that would only be *prefetched* on the best
worker with room stays queued when a full worker would finish it sooner, and goes to that
worker when it frees a slot. Stealing cannot correct such a placement, since thieves are idle
workers and a busy fleet has none: a long task queued behind another on a slow worker would
otherwise start there late and set the makespan (bench/makespan.py). A free slot is never
left idle for this: a worker that would start the task now always gets it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dtf_bus import defaults
from dtf_bus.broker import matching
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.task import Task


class PerformanceBased:
    name = "performance_based"
    sampled = True  # large fleets: the earliest finish among a random few; stealing corrects

    def __init__(self, history: Durations | None = None) -> None:
        self.history = history or Durations()
        self._held: dict[str, dict[str, float]] = {}  # worker -> {task id: estimate}
        self._fleet: list[WorkerInfo] = []  # every worker, full ones included

    def add_worker(self, worker: WorkerInfo) -> None:
        # A re-registering worker is removed first (lifecycle), so a registration stays O(1).
        self._held[worker.worker_id] = {}
        self._fleet.append(worker)

    def remove_worker(self, worker_id: str) -> None:
        self._held.pop(worker_id, None)
        self._fleet = [w for w in self._fleet if w.worker_id != worker_id]

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        self._held.get(worker.worker_id, {}).pop(task.task_id, None)

    def _backlog(self, worker: WorkerInfo) -> float:
        held = self._held.setdefault(worker.worker_id, {})
        for task_id in [t for t in held if t not in worker.inflight]:  # lost, stolen, cancelled
            del held[task_id]
        return sum(held.values()) / worker.slots

    def _finish(self, worker: WorkerInfo, task: Task) -> float:
        return self._backlog(worker) + self.history.estimate(worker, task)

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo | None:
        best = min(candidates, key=lambda w: self._finish(w, task))
        if best.idle_slots == 0 and self._sooner_when_full(task, self._finish(best, task)):
            return None  # a full worker would finish it sooner: it takes it when it has room
        self._held.setdefault(best.worker_id, {})[task.task_id] = self.history.estimate(best, task)
        return best

    def _sooner_when_full(self, task: Task, finish: float) -> bool:
        """Whether a worker with no room now would still finish ``task`` before ``finish``:
        among a random few of a large fleet, as placement samples its candidates."""
        fleet = self._fleet
        if len(fleet) > defaults.PLACE_SAMPLE:
            fleet = random.sample(fleet, defaults.PLACE_SAMPLE)
        return any(
            w.state == "alive"
            and w.free_slots <= 0
            and matching.can_run(task.plugin, task.requires, w, task.resources)
            and self._finish(w, task) < finish
            for w in fleet
        )
