"""Anomaly detection as pure logic: a fake clock, series fed by hand."""

from __future__ import annotations

import pytest

from dtf_bus.durations import Ewma, kind_of
from dtf_bus.monitor.anomaly import AnomalyDetector

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(**kwargs) -> tuple[AnomalyDetector, Clock]:
    clock = Clock()
    return AnomalyDetector(clock=clock, **kwargs), clock


def test_ewma_tracks_mean_and_spread():
    stats = Ewma(alpha=0.5)
    for x in (1.0, 1.0, 1.0, 1.0):
        stats.update(x)
    assert stats.mean == pytest.approx(1.0)
    assert stats.spread() == pytest.approx(0.05)  # the relative floor, not zero
    stats.update(3.0)
    assert 1.0 < stats.mean < 3.0 and stats.spread() > 0.05


def test_task_kind_folds_repeats():
    assert str(kind_of("sim", "unit[3]")) == "sim:unit"
    assert kind_of("sim", "unit[3]") == kind_of("sim", "unit[7]") != kind_of("shell", "unit[3]")
    assert str(kind_of("shell", "uname")) == "shell:uname"


def test_slow_task_is_judged_against_its_own_worker_and_kind():
    d, _ = detector(min_samples=5)
    for i in range(10):
        assert d.duration("w1", "sim:unit", 1.0 + 0.01 * (i % 3), f"t{i}") is None
    found = d.duration("w1", "sim:unit", 5.0, "slow")
    assert found is not None and found.type == "slow_task" and found.subject == "w1"
    assert "slow" in found.explanation and "sim:unit" in found.explanation
    assert found.severity == "critical" and found.value == 5.0 and found.threshold < 5.0
    # Another worker has no history of its own yet: nothing to judge against.
    assert d.duration("w2", "sim:unit", 5.0, "other") is None
    for i in range(10):  # sub-millisecond tasks: ten times slower is still scheduling jitter
        d.duration("w3", "sim:noop", 0.0001, f"n{i}")
    assert d.duration("w3", "sim:noop", 0.001, "jitter") is None


def test_the_same_anomaly_is_not_repeated_within_the_cooldown():
    d, clock = detector(min_samples=2, cooldown=30)
    for _ in range(5):
        d.duration("w1", "k", 1.0, "t")
    assert d.duration("w1", "k", 10.0, "a") is not None
    assert d.duration("w1", "k", 50.0, "b") is None
    clock.now += 31
    assert d.duration("w1", "k", 500.0, "c") is not None


def test_queue_wait_needs_the_floor_and_a_departure_from_the_usual():
    d, _ = detector(queue_wait_min=2.0, min_samples=3)
    assert d.queue(oldest_wait=1.5, queued=10, waits=[0.1] * 5, throughput=1.0) is None  # under the floor
    found = d.queue(oldest_wait=4.0, queued=10, waits=[], throughput=2.0)
    assert found is not None and found.type == "queue_wait" and found.subject == "queue"
    assert "10 task(s) queued" in found.explanation and "to drain" in found.explanation
    # A fleet where long waits are normal: 30 s is the usual, so 32 s is not an anomaly.
    d2, _ = detector(queue_wait_min=2.0, min_samples=3)
    d2.queue(0.0, 0, [30.0, 31.0, 29.0, 30.0, 30.5], 1.0)
    assert d2.queue(oldest_wait=32.0, queued=5, waits=[], throughput=1.0) is None
    assert d2.queue(oldest_wait=300.0, queued=5, waits=[], throughput=1.0) is not None
    assert d.queue(oldest_wait=100.0, queued=0, waits=[], throughput=0.0) is None  # nothing queued


def test_a_queue_no_worker_can_run_gets_its_reasons_not_a_drain_estimate():
    d, clock = detector(queue_wait_min=2.0, min_samples=3)
    assert d.queue(oldest_wait=60.0, queued=4, waits=[], throughput=5.0, blocked=4) is None  # all unplaceable
    found = d.queue(oldest_wait=60.0, queued=10, waits=[], throughput=5.0, blocked=4)
    assert "4 of them cannot be placed on any live worker" in found.explanation
    assert "drain" not in found.explanation
    block = {"requirement": "plugin=shel", "tasks": 4, "reasons": ["plugin=shel: no live worker has it"]}
    [found] = d.unplaceable([block])
    assert found.type == "unplaceable" and found.subject == "plugin=shel" and found.severity == "warning"
    assert found.explanation == "4 queued task(s) (plugin=shel) cannot be placed: plugin=shel: no live worker has it"
    assert d.unplaceable([block]) == []  # once per cooldown while it lasts
    clock.now += d.cooldown
    assert len(d.unplaceable([block])) == 1


def test_success_rate_drop_compares_recent_results_with_earlier_ones():
    d, _ = detector(success_window=10, success_drop=0.3)
    found = [d.outcome("w1", True) for _ in range(20)]
    assert not any(found)
    found = [d.outcome("w1", False) for _ in range(6)]
    hits = [f for f in found if f is not None]
    assert len(hits) == 1 and hits[0].type == "success_rate_drop" and hits[0].subject == "w1"
    assert "succeeded" in hits[0].explanation
    # A worker failing from the start has no earlier rate to fall from.
    d2, _ = detector(success_window=10)
    assert not any(d2.outcome("w2", False) for _ in range(40))


def test_stalled_threshold_uses_the_kinds_history_or_leaves_it_to_the_timeout():
    d, _ = detector(min_samples=3, stall_factor=5, stall_min=1.0, stall_no_history=300)
    assert d.stall_threshold("k", timeout=10) is None
    assert d.stall_threshold("k", timeout=None) == 300
    for i in range(5):
        d.duration(f"w{i}", "k", 1.0, "t")
    assert d.stall_threshold("k", timeout=10) == pytest.approx(5.0 + 3 * 0.05)
    assert d.stalled("t9", "w1", "k", elapsed=2.0, timeout=None) is None
    found = d.stalled("t9", "w1", "k", elapsed=20.0, timeout=None)
    assert found is not None and found.type == "stalled_task" and found.subject == "t9"
    assert found.severity == "critical"


def test_overload_must_last():
    d, clock = detector(overload_percent=95, overload_seconds=10)
    assert d.load("w1", {"cpu_percent": 99.0}) is None
    clock.now += 5
    assert d.load("w1", {"cpu_percent": 99.0}) is None
    clock.now += 6
    found = d.load("w1", {"cpu_percent": 99.0, "memory_percent": 20.0})
    assert found is not None and found.type == "overloaded_worker" and "cpu 99%" in found.explanation
    # A calm heartbeat resets the clock.
    d.load("w2", {"cpu_percent": 99.0})
    clock.now += 20
    d.load("w2", {"cpu_percent": 10.0})
    assert d.load("w2", {"cpu_percent": 99.0}) is None
