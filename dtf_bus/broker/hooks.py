"""Broker lifecycle hooks: cross-cutting concerns as small pieces (dramatiq's middleware idea).

The broker loop calls each hook at named points; a hook never owns broker state, it reacts
to it (record metrics, extract result rows, serve an API). Hooks run on the broker's thread,
so they must be quick: anything slow goes to a thread of the hook's own, or to the store's
writer. An exception in a hook is logged and never reaches the loop.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from dtf_bus.broker.health import Health
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.events import Publisher
from dtf_bus.store.db import Store
from dtf_bus.task import Attempt, Job, Task


class BrokerView(Protocol):
    """What a hook may read of the broker (:class:`dtf_bus.broker.server.Broker` is one):
    hooks depend on this, not on the broker, so no module below the broker imports it."""

    endpoint: str
    metrics_endpoint: str
    store: Store
    events: Publisher
    health: Health
    hooks: list[BrokerHook]
    history: Durations  # the duration model the broker learns into; the monitor reads it

    @property
    def registry(self) -> Registry: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def tasks(self) -> dict[str, Task]: ...

    @property
    def state_counts(self) -> Counter[str]: ...


class BrokerHook:
    """Subclass and override the points you need; every method is a no-op here."""

    def on_start(self, broker: BrokerView) -> None:
        """The broker is bound and about to serve."""

    def on_stop(self, broker: BrokerView) -> None:
        """The loop ended; the store is still open."""

    def on_tick(self, broker: BrokerView, now: float) -> None:
        """Once per metrics interval (``now`` is monotonic)."""

    def on_worker_registered(self, broker: BrokerView, worker: WorkerInfo) -> None: ...

    def on_worker_lost(self, broker: BrokerView, worker: WorkerInfo, reason: str) -> None: ...

    def on_job_submitted(self, broker: BrokerView, job: Job) -> None:
        """A job's tasks were just queued (they enter ``queued`` without an ``on_task_state``)."""

    def on_job_released(self, broker: BrokerView, job: Job) -> None:
        """A finished job left the broker's memory (DuckDB serves it now): drop what refers to it."""

    def on_heartbeat(self, broker: BrokerView, worker: WorkerInfo) -> None:
        """A heartbeat arrived; ``worker.metrics`` holds what the worker reported."""

    def on_task_state(self, broker: BrokerView, task: Task) -> None:
        """``task.state`` just changed."""

    def on_attempt_result(self, broker: BrokerView, task: Task, attempt: Attempt) -> None:
        """A worker reported how an attempt ended (``attempt.stale`` marks a fenced-out one)."""
