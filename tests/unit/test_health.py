"""Liveness rules on pure data: missing vs dead, and the interval that grows with the fleet."""

import pytest

from dtf_bus.broker.health import Health
from dtf_bus.broker.workers import Registry, WorkerInfo

pytestmark = pytest.mark.unit


def fleet(n: int, last_seen: float, interval: float = 1.0) -> Registry:
    registry = Registry()
    for i in range(n):
        w = WorkerInfo(f"w{i}", f"p{i}".encode(), {"hardware": ["cpu"]}, 1, frozenset({"sim"}))
        w.last_seen = last_seen
        w.heartbeat_interval = interval
        registry.add(w)
    return registry


def test_interval_grows_with_fleet_size():
    health = Health(interval=1.0, budget=500)
    assert health.interval_for(10) == 1.0
    assert health.interval_for(500) == 1.0
    assert health.interval_for(2000) == 4.0


def test_missing_after_liveness_dead_after_dead_liveness():
    health = Health(interval=1.0, liveness=3, dead_liveness=10)
    registry = fleet(1, last_seen=100.0)
    assert health.check(registry, 102.9) == ([], [])
    missing, dead = health.check(registry, 103.5)
    assert [w.worker_id for w in missing] == ["w0"] and dead == []
    missing[0].state = "missing"
    assert health.check(registry, 105.0) == ([], [])  # reported once, not every tick
    missing, dead = health.check(registry, 110.5)
    assert missing == [] and [w.worker_id for w in dead] == ["w0"]


def test_workers_are_judged_by_the_longer_of_told_and_current_interval():
    health = Health(interval=1.0, liveness=3, dead_liveness=10, budget=500)
    # Told 4 s when the fleet was large; the fleet shrank, the current interval is 1 s.
    registry = fleet(1, last_seen=100.0, interval=4.0)
    assert health.check(registry, 110.0) == ([], [])
    assert len(health.check(registry, 113.0)[0]) == 1
