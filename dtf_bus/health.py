"""Worker liveness: any message from a worker proves it alive; silence past the limit kills it.

The broker marks ``last_seen`` on every frame (Majordomo's rule: every command is a
heartbeat) and asks :meth:`Health.dead` on each tick. Heartbeat sending lives in the broker
loop; this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtf_bus import defaults
from dtf_bus.registry import Registry, WorkerInfo


@dataclass(slots=True)
class Health:
    interval: float = defaults.HEARTBEAT_INTERVAL
    liveness: int = defaults.HEARTBEAT_LIVENESS

    @property
    def expiry(self) -> float:
        """Seconds of silence after which a worker is dead."""
        return self.interval * self.liveness

    def dead(self, registry: Registry, now: float) -> list[WorkerInfo]:
        limit = now - self.expiry
        return [w for w in registry if w.last_seen < limit]
