"""The worker registry: who is connected, what they can do, what they are running.

Workers are keyed twice: by their ZeroMQ routing id (what the ROUTER hands us with each
frame) and by their stable worker id (what users and the store see). A worker that reconnects
gets a new routing id; re-registering under the same worker id replaces the old entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dtf_bus import resources


@dataclass(slots=True, eq=False)  # identity: one entry per registration, usable in sets
class WorkerInfo:
    worker_id: str
    peer: bytes  # ROUTER routing id of the current connection
    capabilities: dict[str, Any]
    slots: int  # tasks run at once
    plugins: frozenset[str]
    registered_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    inflight: dict[str, int] = field(default_factory=dict)  # task_id -> attempt
    metrics: dict[str, Any] = field(default_factory=dict)
    completed: int = 0
    state: str = "alive"  # alive | missing (silent, may come back) | draining (no new work)
    fd: int | None = None  # the connection's socket descriptor, to match socket-monitor events
    heartbeat_interval: float = 0.0  # the interval this worker was last told to use
    prefetch: int = 0  # tasks it may hold queued beyond its slots
    abandoned: dict[str, int] = field(default_factory=dict)  # attempts requeued while it was missing
    reported: dict[str, int] = field(default_factory=dict)  # attempts it said it held when it registered
    resources: dict[str, int] = field(default_factory=dict)  # consumable totals (dtf_bus.resources)
    # What its assigned tasks asking for resources hold; an entry whose task left inflight no
    # longer counts (dropped when next read), so the many places that end an assignment need
    # not know about resources.
    claims: dict[str, dict[str, int]] = field(default_factory=dict)

    def take(self, task_id: str, attempt: int, wanted: dict[str, int]) -> None:
        """The task is assigned here: it counts against slots, and holds what it asked for."""
        self.inflight[task_id] = attempt
        if wanted:
            self.claims[task_id] = wanted

    def free_resources(self) -> dict[str, int]:
        for task_id in [t for t in self.claims if t not in self.inflight]:
            del self.claims[task_id]
        return resources.free(self.resources, list(self.claims.values()))

    @property
    def hardware(self) -> list[str]:
        return list(self.capabilities.get("hardware", []))

    @property
    def free_slots(self) -> int:
        """Tasks it can take now: slots plus prefetch, minus what it holds."""
        if self.state != "alive":
            return 0
        return self.slots + self.prefetch - len(self.inflight)

    @property
    def idle_slots(self) -> int:
        """Slots with nothing to run: the worker could start a task this moment."""
        return max(self.slots - len(self.inflight), 0) if self.state == "alive" else 0

    @property
    def load(self) -> float:
        return len(self.inflight) / self.slots

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "capabilities": self.capabilities,
            "hardware": self.hardware,
            "slots": self.slots,
            "plugins": sorted(self.plugins),
            "running": len(self.inflight),
            "prefetch": self.prefetch,
            "resources": self.resources,
            "resources_free": self.free_resources() if self.resources else {},
            "completed": self.completed,
            "registered_at": self.registered_at,
            "idle_s": round(time.monotonic() - self.last_seen, 3),
            "state": self.state if self.state != "alive" else ("busy" if self.inflight else "idle"),
        }


class Registry:
    """Live workers. ``version`` changes whenever the set of workers or their abilities does,
    so placement can cache which workers match which requirements."""

    def __init__(self) -> None:
        self._by_peer: dict[bytes, WorkerInfo] = {}
        self._by_id: dict[str, WorkerInfo] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def by_peer(self, peer: bytes) -> WorkerInfo | None:
        return self._by_peer.get(peer)

    def get(self, worker_id: str) -> WorkerInfo | None:
        return self._by_id.get(worker_id)

    def add(self, worker: WorkerInfo) -> WorkerInfo | None:
        """Register ``worker``; returns the entry it replaces (same worker id), if any."""
        old = self._by_id.get(worker.worker_id)
        if old is not None:
            self._by_peer.pop(old.peer, None)
        stale_peer_owner = self._by_peer.get(worker.peer)
        if stale_peer_owner is not None and stale_peer_owner is not old:
            # One connection re-registering under a new id: drop its former identity.
            self._by_id.pop(stale_peer_owner.worker_id, None)
        self._by_id[worker.worker_id] = worker
        self._by_peer[worker.peer] = worker
        self.version += 1
        return old

    def remove(self, worker_id: str) -> WorkerInfo | None:
        worker = self._by_id.pop(worker_id, None)
        if worker is not None:
            self._by_peer.pop(worker.peer, None)
            self.version += 1
        return worker

    def free_slots(self) -> int:
        return sum(max(w.free_slots, 0) for w in self._by_id.values())
