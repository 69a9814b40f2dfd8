"""round_robin: capable workers strictly in turn, ignoring load and speed.

Every capable worker gets the same share: when the next worker in the cycle has no room, the
task waits for it rather than going elsewhere. That is the classic dispatcher the other
strategies are measured against (bench/makespan.py); work stealing can still rescue it.
"""

from __future__ import annotations

from collections.abc import Sequence

from dtf_bus.broker import matching
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._order: list[WorkerInfo] = []
        self._next = 0

    def add_worker(self, worker: WorkerInfo) -> None:
        self.remove_worker(worker.worker_id)
        self._order.append(worker)

    def remove_worker(self, worker_id: str) -> None:
        self._order = [w for w in self._order if w.worker_id != worker_id]

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        pass

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo | None:
        n = len(self._order)
        for step in range(n):
            worker = self._order[(self._next + step) % n]
            if matching.can_run(task.plugin, task.requires, worker, task.resources):
                if worker not in candidates:
                    return None  # its turn, but it is full: wait for it
                self._next = (self._next + step + 1) % n
                return worker
        return candidates[0]
