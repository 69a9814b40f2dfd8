"""Placement strategies: one small Protocol, one file per strategy, chosen by name.

As in pytest-xdist's scheduler protocol, a strategy is told when workers come and go and when
tasks finish, and is asked to choose a worker for a task among those that can run it now.
Capability matching and slot accounting happen before it is asked, so a strategy is pure
preference. Third-party strategies register under the ``dtf.strategies`` entry-point group.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task

if TYPE_CHECKING:
    from dtf_bus.durations import Durations

ENTRY_POINT_GROUP = "dtf.strategies"


@runtime_checkable
class Strategy(Protocol):
    """``sampled = True`` on a strategy lets the scheduler show it a random sample of
    ``PLACE_SAMPLE`` candidates when more are free (a pure preference such as least load);
    a strategy that must see every worker (strict turns, stickiness) leaves it out."""

    name: str

    def add_worker(self, worker: WorkerInfo) -> None: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None: ...

    def choose(self, task: Task, candidates: Sequence[WorkerInfo]) -> WorkerInfo | None:
        """Pick one of ``candidates`` (never empty; each can run ``task`` and has room), or
        None to keep the task queued until the worker the strategy wants has room."""
        ...


class UnknownStrategy(LookupError):
    pass


def available() -> dict[str, object]:
    """Strategy name -> entry point, from installed distributions (ours included)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str, history: Durations | None = None) -> Strategy:
    """Build the named strategy; one whose constructor takes ``history`` gets the broker's."""
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise UnknownStrategy(f"unknown strategy {name!r} (available: {known})")
    factory = eps[name].load()
    wants_history = "history" in inspect.signature(factory).parameters
    strategy = factory(history=history) if wants_history and history is not None else factory()
    if not isinstance(strategy, Strategy):
        raise UnknownStrategy(f"strategy {name!r} does not implement the Strategy protocol")
    return strategy
