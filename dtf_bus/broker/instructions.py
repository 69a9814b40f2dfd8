"""What goes into the broker's state machine (events) and what comes out (instructions).

The state (:mod:`dtf_bus.broker.state`) never touches a socket: it is handed an event and the
time, and returns instructions that :mod:`dtf_bus.broker.server` carries out. A send that fails
comes back as one more event, handled after the one whose instruction it was, so no handler is
ever re-entered from the middle of another (dask's worker_state_machine has the same shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------ instructions


@dataclass(slots=True)
class Send:
    """One message to one peer on the ROUTER socket."""

    peer: bytes
    kind: str
    body: dict[str, Any]


@dataclass(slots=True)
class Publish:
    """One event on the PUB socket (``topic`` from :mod:`dtf_bus.events`)."""

    topic: bytes
    body: dict[str, Any]


Instruction = Send | Publish

# ------------------------------------------------------------------------ events


@dataclass(slots=True)
class Message:
    """A decoded frame from a peer. ``key``: its CURVE key, when the broker checks roles."""

    peer: bytes
    kind: str
    body: dict[str, Any]
    key: Any = None


@dataclass(slots=True)
class SendFailed:
    """A send to ``peer`` found it gone (unreachable) or not reading (its pipe full).
    ``kind``: the message that failed, when it matters (a REGISTERED, see lifecycle)."""

    peer: bytes
    reason: str
    kind: str = ""


@dataclass(slots=True)
class Disconnected:
    """The socket monitor saw the connection on descriptor ``fd`` close."""

    fd: int


@dataclass(slots=True)
class Revoked:
    """These workers' CURVE keys were revoked: they are cut off."""

    worker_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Archived:
    """Jobs and answers the archive thread read back (``dtf_bus.store.archive.Loaded``)."""

    loaded: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Heartbeats:
    """Time to send every worker a heartbeat."""


@dataclass(slots=True)
class HealthCheck:
    """Time to judge silent workers (``backlog_since``: frames wait unread since then)."""

    backlog_since: float | None = None


@dataclass(slots=True)
class Tick:
    """The metrics interval: store learned durations, expire, release finished jobs."""


@dataclass(slots=True)
class StealRound:
    """Time to look for prefetched tasks an idle worker would finish sooner."""


@dataclass(slots=True)
class LoopTurn:
    """The end of a loop turn: release retries due, answer followers, place."""


@dataclass(slots=True)
class BatchDone:
    """The frames of a loop turn are handled: their durable replies wait for one store mark."""


@dataclass(slots=True)
class StoreCommitted:
    """The store's writer committed rows: release the replies that waited for them."""


@dataclass(slots=True)
class Stopping:
    """The broker is closing: store what is learned but not yet stored."""
