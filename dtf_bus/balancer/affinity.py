"""affinity: sticky placement by a task key, so a worker's caches stay warm.

The key is the task's ``affinity`` param when given (e.g. a model name), else its name
without the ``[i]`` repeat suffix. The first task of a key goes to the least loaded worker;
later ones go back to that worker whenever it has room, and elsewhere (least loaded) only
when it is full, so stickiness never leaves the fleet idle.
"""

from __future__ import annotations

from collections.abc import Sequence

from dtf_bus.balancer.least_loaded import LeastLoaded
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task


def affinity_key(task: Task) -> str:
    value = task.params.get("affinity")
    return str(value) if value is not None else task.key


class Affinity(LeastLoaded):
    name = "affinity"

    def __init__(self) -> None:
        super().__init__()
        self._home: dict[str, str] = {}  # affinity key -> worker id

    def remove_worker(self, worker_id: str) -> None:
        super().remove_worker(worker_id)
        self._home = {k: w for k, w in self._home.items() if w != worker_id}

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo:
        key = affinity_key(task)
        home = self._home.get(key)
        for worker in candidates:
            if worker.worker_id == home:
                return worker
        chosen = super().choose(task, candidates)
        self._home.setdefault(key, chosen.worker_id)
        return chosen
