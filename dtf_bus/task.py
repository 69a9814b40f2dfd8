"""Tasks, jobs and the task state machine.

A task moves queued -> assigned -> running -> one final state. A lost worker or a retried
failure sends it back to queued with ``attempt + 1``; the attempt number is the fence that
keeps a late result from a superseded attempt from ever counting.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from dtf_bus.projection import compile_tuple
from dtf_bus.spec import base_name


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT})

# Legal transitions; anything else is a bug in the caller, not a user error.
_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.ASSIGNED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.ASSIGNED: frozenset({TaskState.RUNNING, TaskState.QUEUED, *FINAL_STATES}),
    TaskState.RUNNING: frozenset({TaskState.QUEUED, *FINAL_STATES}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(slots=True)
class Attempt:
    """One try of a task on one worker; ``stale`` marks a result that arrived too late."""

    number: int
    worker_id: str
    assigned_at: float
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str = "assigned"
    stale: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(slots=True)
class Task:
    """One unit of work as the broker tracks it."""

    task_id: str
    job_id: str
    name: str
    plugin: str
    params: dict[str, Any]
    requires: dict[str, Any]
    priority: int
    timeout: float | None
    retries: int
    seq: int  # submit order: ties in priority run first-come first-served
    retry_backoff: float = 0.0
    state: TaskState = TaskState.QUEUED
    attempt: int = 1
    worker_id: str | None = None
    submitted_at: float = field(default_factory=time.time)
    assigned_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    failures: int = 0  # attempts that failed and consumed a retry
    lost_workers: int = 0  # attempts that ended because the worker died running them (poison evidence)
    placement_timeout: float | None = None  # fail if no live worker can take it this long after submit
    resources: dict[str, int] = field(default_factory=dict)  # consumable amounts it holds while assigned
    lost_on: list[str] = field(default_factory=list)  # "worker (how)" for each of those, for the error
    # The highest attempt a worker reported holding that this broker never handed out: its previous
    # incarnation did, and died before storing it. An attempt number is a fencing token, so the
    # task's next attempt comes after it (reused, a superseded run's result would count).
    reported_attempt: int = 0
    history: list[Attempt] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)  # task ids that must succeed first
    waiting_on: set[str] = field(default_factory=set)  # those of them not succeeded yet
    queued_at: float = 0.0  # when it last entered the queue, for queue-wait statistics
    key: str = field(init=False)  # the spec name without its repeat suffix: what history learns by

    def __post_init__(self) -> None:
        self.key = base_name(self.name)

    def attempt_record(self, number: int) -> Attempt | None:
        for record in reversed(self.history):
            if record.number == number:
                return record
        return None

    def skip_reported(self, attempt: int) -> None:
        """A worker registered holding ``attempt``, which this broker did not hand it: the next
        attempt comes after it (see ``reported_attempt``)."""
        if attempt > self.reported_attempt:
            self.reported_attempt = attempt
            if self.state is TaskState.QUEUED and self.attempt <= attempt:
                self.attempt = attempt + 1

    def move(self, new: TaskState) -> None:
        allowed = _TRANSITIONS.get(self.state, frozenset())
        if new not in allowed:
            raise IllegalTransition(f"task {self.task_id}: {self.state} -> {new}")
        self.state = new

    def to_dict(self) -> dict[str, Any]:
        """The public view of a task, as `dtf results` prints it."""
        return {
            **dict(zip(SUMMARY_FIELDS, _summary_values(self), strict=True)),
            "state": str(self.state),
            "attempts": len(self.history),  # handed to a worker; self.attempt is the fencing number
            "priority": self.priority,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "result": self.result,
            "error": self.error,
            "depends_on": self.depends_on,
            "resources": self.resources,
            "history": [
                {
                    "attempt": a.number,
                    "worker_id": a.worker_id,
                    "assigned_at": a.assigned_at,
                    "outcome": a.outcome,
                    "stale": a.stale,
                    "started_at": a.started_at,
                    "ended_at": a.ended_at,
                    "error": a.error,
                }
                for a in self.history
            ],
        }


# The projections of a Task, defined once; every name is a Task attribute. The store's row is
# declared in dtf_bus.store.schema (its columns map to these attributes, dtf_bus.store.rows).
SUMMARY_FIELDS = ("task_id", "job_id", "name", "plugin", "state", "worker_id")  # every view starts so
# The live view: what the monitor keeps of a recently changed task, the HTTP API overlays on the
# store's row and the ``tasks`` WebSocket events carry; ``updated_at`` is when it was taken.
LIVE_FIELDS = (
    *SUMMARY_FIELDS,
    "attempt",
    "submitted_at",
    "assigned_at",
    "started_at",
    "ended_at",
    "error",
    "updated_at",
)
_summary_values = attrgetter(*SUMMARY_FIELDS)
# The live view as a tuple, cheap enough for the broker's thread at every state change.
live_row: Callable[[Task, float], tuple] = compile_tuple(
    ("task", "now"), [*(("task", name) for name in LIVE_FIELDS[:-1]), ("now", "")]
)


def live_view(row: tuple) -> dict[str, Any]:
    """A :func:`live_row` as the API and events show it."""
    view = dict(zip(LIVE_FIELDS, row, strict=True))
    view["state"] = str(view["state"])
    return view


@dataclass(slots=True)
class Job:
    """A submitted batch of tasks; done when every task is in a final state."""

    job_id: str
    name: str
    task_ids: list[str]
    submitted_at: float = field(default_factory=time.time)
    unfinished: int = 0
    submitter: str = "anonymous"  # the CURVE key's name, the API key's id, or what a plaintext client claimed
    meta: dict[str, Any] = field(default_factory=dict)  # git commit, branch, dirty, labels (dtf_bus.runmeta)
    waiters: list[tuple[bytes, int]] = field(default_factory=list)  # (peer, req)
    open: bool = False  # takes more tasks (submit with keep_open) until closed
    finished: list[str] = field(default_factory=list)  # task ids in the order they finished
    followers: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)  # (peer, follow request)
    # Running tasks' progress for followers: entries from index progress_base on (older ones dropped).
    progress: list[dict[str, Any]] = field(default_factory=list)
    progress_base: int = 0

    @property
    def done(self) -> bool:
        return self.unfinished == 0 and not self.open
