"""Worker liveness: who is missing (silent, may come back) and who is dead (removed).

Any message from a worker proves it alive (Majordomo's rule: every command is a heartbeat);
the broker stamps ``last_seen`` and asks :meth:`Health.check` on each tick. A closed TCP
connection does not wait for this: the broker's socket monitor sees it within a millisecond.
Silence is the net for what a socket cannot show: a SIGSTOPped process, a stuck event loop,
a network that drops packets without closing anything.

The heartbeat interval grows with the fleet so that the broker handles at most
``budget`` heartbeats a second: ``interval = max(base, workers / budget)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtf_bus import defaults
from dtf_bus.broker.workers import Registry, WorkerInfo


@dataclass(slots=True)
class Health:
    interval: float = defaults.HEARTBEAT_INTERVAL
    liveness: int = defaults.HEARTBEAT_LIVENESS
    dead_liveness: int = defaults.DEAD_LIVENESS
    budget: float = defaults.HEARTBEAT_BUDGET

    @property
    def return_grace(self) -> float:
        """How long what a worker held waits for it to come back and claim it (after a broker
        restart, or when its REGISTERED found its connection closed) before being requeued."""
        return self.interval * self.liveness * 2

    def interval_for(self, workers: int) -> float:
        """The heartbeat interval for a fleet of this size."""
        return max(self.interval, workers / self.budget)

    def check(self, registry: Registry, now: float) -> tuple[list[WorkerInfo], list[WorkerInfo]]:
        """Workers that just went missing, and workers silent long enough to be dead."""
        current = self.interval_for(len(registry))
        missing, dead = [], []
        for worker in registry:
            # Judge each worker by the longer of the interval it was told and the current one,
            # so a shrinking fleet never condemns a worker still on its old, longer interval.
            silent_intervals = (now - worker.last_seen) / max(worker.heartbeat_interval, current)
            if silent_intervals > self.dead_liveness:
                dead.append(worker)
            elif silent_intervals > self.liveness and worker.state != "missing":
                missing.append(worker)
        return missing, dead
