"""Placement: match queued tasks to workers with free slots, through the chosen strategy.

The broker calls :meth:`Scheduler.place` once per batch of messages; it returns the
assignments to send. Which workers can run which requirement key is cached until the
registry changes, so a placement costs one look at each key's head, not a queue scan.
"""

from __future__ import annotations

from dtf_bus import matching
from dtf_bus.balancer import Strategy
from dtf_bus.queue import TaskQueue
from dtf_bus.registry import Registry, WorkerInfo
from dtf_bus.task import Task


class Scheduler:
    def __init__(self, registry: Registry, strategy: Strategy) -> None:
        self.registry = registry
        self.strategy = strategy
        self.queue = TaskQueue()
        self._capable: dict[str, list[WorkerInfo]] = {}
        self._capable_version = -1

    def enqueue(self, task: Task) -> None:
        self.queue.push(matching.requirement_key(task.plugin, task.requires), task)

    def capable(self, key: str, task: Task) -> list[WorkerInfo]:
        if self._capable_version != self.registry.version:
            self._capable.clear()
            self._capable_version = self.registry.version
        workers = self._capable.get(key)
        if workers is None:
            workers = [w for w in self.registry if matching.can_run(task.plugin, task.requires, w)]
            self._capable[key] = workers
        return workers

    def place(self) -> list[tuple[Task, WorkerInfo]]:
        """Assign as many queued tasks as free capable slots allow, best task first."""
        placements: list[tuple[Task, WorkerInfo]] = []
        free = self.registry.free_slots()
        while free > 0 and len(self.queue):
            for key, task in self.queue.heads():
                candidates = [w for w in self.capable(key, task) if w.free_slots > 0]
                if candidates:
                    break
            else:
                return placements  # nothing queued can run on any free slot
            self.queue.pop(key)
            worker = self.strategy.choose(task, candidates)
            worker.inflight[task.task_id] = task.attempt
            placements.append((task, worker))
            free -= 1
        return placements

    def why_queued(self, task: Task) -> list[str]:
        """Reasons a queued task cannot be placed; empty when it only waits for a free slot."""
        key = matching.requirement_key(task.plugin, task.requires)
        if self.capable(key, task):
            return []
        return matching.explain(task.plugin, task.requires, self.registry)
