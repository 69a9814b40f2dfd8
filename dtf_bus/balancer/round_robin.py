"""round_robin: capable workers in turn, ignoring load — the baseline others are measured by."""

from __future__ import annotations

from collections.abc import Sequence

from dtf_bus.registry import WorkerInfo
from dtf_bus.task import Task


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._order: list[str] = []
        self._next = 0

    def add_worker(self, worker: WorkerInfo) -> None:
        if worker.worker_id not in self._order:
            self._order.append(worker.worker_id)

    def remove_worker(self, worker_id: str) -> None:
        if worker_id in self._order:
            self._order.remove(worker_id)

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        pass

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo:
        by_id = {w.worker_id: w for w in candidates}
        n = len(self._order)
        for step in range(n):
            worker_id = self._order[(self._next + step) % n]
            if worker_id in by_id:
                self._next = (self._next + step + 1) % n
                return by_id[worker_id]
        return candidates[0]
