"""The live view of recently changed tasks, as the HTTP API and the WebSocket serve them.

Entries are taken on the broker's thread at each state change (:func:`dtf_bus.task.live_row`)
and read on the API's threads, so a view is never built from a Task the loop is changing (it
could mix two states). Dicts are built when read, not at each of the several state changes of
every task. The store serves older tasks; the API overlays this fresher view on its rows.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from dtf_bus import defaults
from dtf_bus.task import LIVE_FIELDS, Task, live_row, live_view


class RecentTasks:
    """The ``limit`` most recently changed tasks (least recently changed first), under one
    lock held for microseconds."""

    def __init__(self, limit: int = defaults.MONITOR_RECENT_TASKS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, tuple] = OrderedDict()

    def changed(self, task: Task, now: float) -> tuple:
        """Take ``task`` as it is now; returns the entry (see :func:`dtf_bus.task.live_view`)."""
        entry = live_row(task, now)
        tasks = self._tasks
        with self._lock:
            tasks[task.task_id] = entry
            tasks.move_to_end(task.task_id)
            if len(tasks) > self.limit:
                tasks.popitem(last=False)
        return entry

    def submitted(self, tasks: Iterable[Task], now: float) -> None:
        """A job's tasks, all at once (only its last ``limit`` can stay)."""
        entries = self._tasks
        with self._lock:
            for task in list(tasks)[-self.limit :]:
                entries[task.task_id] = live_row(task, now)
            for task_id in list(itertools.islice(entries, max(len(entries) - self.limit, 0))):
                del entries[task_id]

    def forget(self, task_ids: Iterable[str]) -> None:
        """A released job's tasks are served from DuckDB; holding them here would pin their memory."""
        with self._lock:
            for task_id in task_ids:
                self._tasks.pop(task_id, None)

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._tasks.get(task_id)
        return None if entry is None else live_view(entry)

    def all(self) -> list[dict[str, Any]]:
        """Newest last."""
        with self._lock:
            entries = list(self._tasks.values())
        return [live_view(entry) for entry in entries]


__all__ = ["LIVE_FIELDS", "RecentTasks"]
