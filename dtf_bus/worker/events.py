"""The worker state machine's vocabulary: the events it takes and the instructions it gives.

Small frozen dataclasses, after Dask's worker state machine: an event says what happened (a
message arrived, time passed, a slot thread finished an attempt), an instruction says what to
do about it (send, start, cancel). :mod:`dtf_bus.worker.state` maps one to the other; the
worker and the simulated fleet (bench/simfleet.py) carry instructions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------ records and instructions


@dataclass(slots=True, eq=False)
class Running:
    """An attempt that holds a slot here (compared by identity: a task id may run twice)."""

    task_id: str
    attempt: int
    plugin: str
    params: dict[str, Any]
    timeout: float | None
    started_at: float  # epoch seconds, as results carry it
    deadline: float | None  # monotonic; None: no timeout, or already enforced
    report_at: float | None  # when to send TASK_STARTED (None: sent, or never needed)
    taken: dict[str, list[str]] = field(default_factory=dict)  # resource ids, given back at its end


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the broker (dropped by the connection while there is none)."""

    kind: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """A HEARTBEAT: the sender adds this machine's metrics (a read of /proc, not state)."""


@dataclass(frozen=True, slots=True)
class Execute:
    """Run this attempt on a free slot thread."""

    run: Running


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop a running attempt; its result (cancelled or timed out) follows."""

    task_id: str
    attempt: int
    reason: str


Instruction = Send | SendHeartbeat | Execute | Cancel


# -------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Connected:
    """A new connection: registration starts afresh on it."""

    now: float


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is gone (closed, or the broker fell silent)."""


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message from the broker."""

    kind: str
    body: dict[str, Any]
    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True, slots=True)
class HeartbeatDue:
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: timeouts to enforce, TASK_STARTED reports come due."""

    now: float


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A slot thread ran ``run`` to its end; ``report`` is its TASK_RESULT item."""

    run: Running
    report: dict[str, Any]
    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True, slots=True)
class ProgressReported:
    """A task's progress update, already sized (``size``: its packed bytes)."""

    update: dict[str, Any]
    size: int


@dataclass(frozen=True, slots=True)
class Collect:
    """Send what the slot threads left: progress first, then results."""


@dataclass(frozen=True, slots=True)
class DrainRequested:
    """Finish what runs, take nothing new, deliver every result, then exit."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stopping:
    """Exit now: every running attempt is cancelled (the broker requeues them)."""


Event = (
    Connected
    | Disconnected
    | Received
    | HeartbeatDue
    | Tick
    | TaskFinished
    | ProgressReported
    | Collect
    | DrainRequested
    | Stopping
)
