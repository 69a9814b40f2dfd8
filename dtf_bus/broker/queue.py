"""The task queue: highest priority first, ties in submit order, bucketed by requirements.

Tasks with the same requirements are interchangeable for placement, so each requirement key
has its own heap. Placement then looks at one head per key instead of scanning every queued
task, which keeps it flat as the queue grows.

No starvation: a task's effective priority grows by one level for every ``aging`` seconds it
has waited, so a steady stream of high-priority work cannot hold low-priority work back
forever (priority 0 submitted ``10 x aging`` seconds ago ranks with priority 10 submitted
now). Because every task ages at the same rate, the order between two tasks never changes
while they wait, and the heap key can be computed once: ``priority - submitted_at / aging``.
Tasks submitted together keep plain priority order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from dtf_bus import defaults
from dtf_bus.task import Task, TaskState


class TaskQueue:
    def __init__(self, aging: float = defaults.PRIORITY_AGING) -> None:
        self._heaps: dict[str, list[tuple[float, int, Task]]] = {}
        self._size = 0
        self.aging = aging

    def __len__(self) -> int:
        return self._size

    def push(self, key: str, task: Task) -> None:
        rank = task.priority - task.submitted_at / self.aging
        heapq.heappush(self._heaps.setdefault(key, []), (-rank, task.seq, task))
        self._size += 1

    def heads(self) -> Iterator[tuple[str, Task]]:
        """The best queued task of each requirement key, best first."""
        heads = []
        for key in list(self._heaps):
            task = self._peek(key)
            if task is not None:
                heads.append((self._heaps[key][0][0], task.seq, key, task))
        heads.sort(key=lambda h: (h[0], h[1]))
        for _, _, key, task in heads:
            yield key, task

    def size(self, key: str) -> int:
        """Entries under ``key`` (a cancelled task counts until placement or prune drops it)."""
        return len(self._heaps.get(key, ()))

    def pop(self, key: str) -> Task:
        _, _, task = heapq.heappop(self._heaps[key])
        self._size -= 1
        if not self._heaps[key]:
            del self._heaps[key]
        return task

    def depths(self) -> dict[str, int]:
        """Entries per requirement key, for /metrics. Safe from another thread: the dict is copied in
        one step (no Python code runs while ``list`` walks it) and ``len`` of a list is atomic. A
        cancelled task counts until placement or :meth:`prune` drops it."""
        return {key: len(heap) for key, heap in list(self._heaps.items())}

    def prune(self) -> None:
        """Drop entries no longer queued (a cancelled job's tasks), which ``_peek`` would only
        drop once placement reached them: a cancelled job must not stay referenced here."""
        for key, heap in list(self._heaps.items()):
            kept = [entry for entry in heap if entry[2].state is TaskState.QUEUED]
            self._size -= len(heap) - len(kept)
            if kept:
                heapq.heapify(kept)
                self._heaps[key] = kept
            else:
                del self._heaps[key]

    def _peek(self, key: str) -> Task | None:
        heap = self._heaps[key]
        while heap and heap[0][2].state is not TaskState.QUEUED:
            heapq.heappop(heap)
            self._size -= 1
        if not heap:
            del self._heaps[key]
            return None
        return heap[0][2]
