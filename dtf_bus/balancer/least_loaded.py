"""least_loaded: the worker with the smallest share of its slots in use.

Ties go to the worker that has waited longest since its last assignment, so equal workers
take turns instead of the first one in the registry taking everything.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task


class LeastLoaded:
    name = "least_loaded"
    sampled = True  # the least loaded of a random few: the power of d choices

    def __init__(self) -> None:
        self._tick = itertools.count()
        self._last: dict[str, int] = {}

    def add_worker(self, worker: WorkerInfo) -> None:
        self._last.setdefault(worker.worker_id, -1)

    def remove_worker(self, worker_id: str) -> None:
        self._last.pop(worker_id, None)

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        pass

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo:
        last = self._last
        best = min(candidates, key=lambda w: (w.load, last.get(w.worker_id, -1)))
        last[best.worker_id] = next(self._tick)
        return best
