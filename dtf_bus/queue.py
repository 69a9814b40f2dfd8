"""The task queue: highest priority first, ties in submit order, bucketed by requirements.

Tasks with the same requirements are interchangeable for placement, so each requirement key
has its own heap. Placement then looks at one head per key instead of scanning every queued
task, which keeps it flat as the queue grows.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from dtf_bus.task import Task, TaskState


class TaskQueue:
    def __init__(self) -> None:
        self._heaps: dict[str, list[tuple[int, int, Task]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, key: str, task: Task) -> None:
        heapq.heappush(self._heaps.setdefault(key, []), (-task.priority, task.seq, task))
        self._size += 1

    def heads(self) -> Iterator[tuple[str, Task]]:
        """The best queued task of each requirement key, best first."""
        heads = []
        for key in list(self._heaps):
            task = self._peek(key)
            if task is not None:
                heads.append((-task.priority, task.seq, key, task))
        heads.sort(key=lambda h: (h[0], h[1]))
        for _, _, key, task in heads:
            yield key, task

    def pop(self, key: str) -> Task:
        _, _, task = heapq.heappop(self._heaps[key])
        self._size -= 1
        if not self._heaps[key]:
            del self._heaps[key]
        return task

    def _peek(self, key: str) -> Task | None:
        heap = self._heaps[key]
        while heap and heap[0][2].state is not TaskState.QUEUED:
            heapq.heappop(heap)
            self._size -= 1
        if not heap:
            del self._heaps[key]
            return None
        return heap[0][2]
