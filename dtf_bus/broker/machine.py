"""The broker's state machine, wired: the core state and its extensions, no sockets.

:class:`BrokerMachine` is what :class:`dtf_bus.broker.server.Broker` feeds with events and
what the state-machine unit tests drive directly: the same object either way, so a test of
``handle(event, now) -> instructions`` exercises exactly the broker's decisions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dtf_bus import balancer, defaults
from dtf_bus.balancer import Strategy
from dtf_bus.broker.clients import Clients
from dtf_bus.broker.health import Health
from dtf_bus.broker.instructions import Instruction, Tick
from dtf_bus.broker.lifecycle import WorkerLifecycle
from dtf_bus.broker.persistence import Persistence
from dtf_bus.broker.placement import Placement
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.state import BrokerState, no_hook
from dtf_bus.broker.stealing import WorkStealing
from dtf_bus.broker.workers import Registry
from dtf_bus.durations import Durations
from dtf_bus.store.db import Store


class BrokerMachine:
    def __init__(
        self,
        store: Store,
        *,
        ships: Any,
        archive: Any = None,
        guard: Any = None,
        strategy: str | Strategy = defaults.STRATEGY,
        prefetch: int | None = defaults.PREFETCH,
        health: Health | None = None,
        max_lost_workers: int = defaults.MAX_LOST_WORKERS,
        max_live_tasks: int = defaults.MAX_LIVE_TASKS,
        submitter_quota: int = defaults.SUBMITTER_QUOTA,
        finished_job_ttl: float = defaults.FINISHED_JOB_TTL,
        hook: Callable[..., None] = no_hook,
        wanted: Callable[[bytes], bool] = lambda topic: True,
        rng: random.Random | None = None,
    ) -> None:
        """``ships``: the shipped-code store (its messages are served here too); ``archive``,
        ``guard``, ``hook``, ``wanted``: see :class:`~dtf_bus.broker.state.BrokerState`;
        ``strategy``: a name (an entry point, looked up) or a strategy built already."""
        self.registry = Registry()
        self.history = Durations()
        if isinstance(strategy, str):
            strategy = balancer.load(strategy, self.history)
        self.scheduler = Scheduler(self.registry, strategy, self.history, prefetch)
        self.state = BrokerState(
            self.registry,
            self.scheduler,
            self.history,
            store,
            health or Health(),
            max_lost_workers=max_lost_workers,
            max_live_tasks=max_live_tasks,
            submitter_quota=submitter_quota,
            finished_job_ttl=finished_job_ttl,
            guard=guard,
            archive=archive,
            hook=hook,
            wanted=wanted,
            rng=rng,
        )
        self.workers = WorkerLifecycle(self.state)
        self.stealing = WorkStealing(self.scheduler)
        self.stealing.attach(self.state)
        self.clients = Clients(self.state, self.workers, ships)
        self.placement = Placement(self.state)  # after clients: followers are answered, then placed
        self.persistence = Persistence(self.state)
        self.state.handlers.update(ships.handlers(self.state.send))  # ship_have, ship_put, ship_get
        self.state.on(Tick, lambda tick: hook("on_tick", self.state.now))  # after the state's own tick

    def handle(self, event: Any, now: float, wall: float | None = None) -> list[Instruction]:
        """One event in, the instructions it leads to out (see BrokerState.handle)."""
        return self.state.handle(event, now, wall)

    def restore(self, now: float, wall: float) -> None:
        """Resume the jobs the store holds unfinished (once, before serving)."""
        self.workers.bindings_due = self.persistence.restore(now, wall, self.state.guard is not None)
