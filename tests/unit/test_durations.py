"""One duration model: placement, prefetch, anomalies and the monitor read the same numbers."""

from __future__ import annotations

import pytest

from dtf_bus.durations import Durations, Kind, as_kind, kind_of
from dtf_bus.monitor.anomaly import AnomalyDetector
from dtf_bus.monitor.monitor import Monitor
from dtf_bus.store.db import Store
from dtf_bus.task import Attempt, Task

pytestmark = pytest.mark.unit


class Placed:
    def __init__(self, worker_id: str, speed: float = 1.0) -> None:
        self.worker_id = worker_id
        self.capabilities = {"speed": speed}


def task(name: str, plugin: str = "sim") -> Task:
    return Task(f"j.{name}", "j", name, plugin, {}, {}, 0, None, 0, 0)


def test_one_kind_for_every_reader():
    assert kind_of("sim", "unit[3]") == Kind("sim", "unit") == as_kind("sim:unit")
    assert str(kind_of("sim", "unit[3]")) == "sim:unit" and str(as_kind("bare")) == "bare"
    assert Kind(task("unit[2]").plugin, task("unit[2]").key) == kind_of("sim", "unit[9]")


def test_placement_and_prefetch_read_what_was_learned():
    model = Durations(alpha=0.5)
    fast = Placed("fast", speed=4)
    model.record(fast, task("unit[0]"), 2.0)
    model.record(fast, task("unit[1]"), 4.0)
    model.record(fast, task("lint", "shell"), 1.0)
    assert model.estimate(fast, task("unit[5]")) == 3.0
    assert model.series("fast", "sim:unit").n == 2 and model.fleet(kind_of("sim", "unit")).mean == 3.0
    assert model.worker_mean("fast") == pytest.approx(2.0)  # 2 -> 3 -> 2: every kind, one mean
    assert set(model.of_worker("fast")) == {Kind("sim", "unit"), Kind("shell", "lint")}


def test_the_detector_judges_by_the_shared_model_before_it_learns():
    model = Durations()
    detector = AnomalyDetector(min_samples=5, durations=model)
    for i in range(10):
        model.learn("w1", Kind("sim", "unit"), 1.0 + 0.01 * (i % 3))
    found = detector.duration("w1", Kind("sim", "unit"), 5.0, "slow", learn=False)
    assert found is not None and found.type == "slow_task" and "sim:unit" in found.explanation
    assert model.series("w1", "sim:unit").n == 10  # judged, not learned: the broker teaches it


def test_a_series_loaded_from_the_store_is_judged_only_once_its_spread_is_known_again():
    model = Durations()
    model.load([("w1", "sim", "unit", 1.0, 50)])
    detector = AnomalyDetector(min_samples=5, durations=model)
    assert detector.duration("w1", "sim:unit", 1.3, "t0", learn=False) is None  # no spread stored
    for i in range(5):
        model.learn("w1", "sim:unit", 1.0 + 0.01 * (i % 2))
    assert detector.duration("w1", "sim:unit", 5.0, "slow", learn=False) is not None


class Broker:
    """Only what attach() reads; the monitor is otherwise fed by hand."""

    def __init__(self, store) -> None:
        self.store = store
        self.history = Durations()
        self.endpoint, self.metrics_endpoint = "tcp://127.0.0.1:1", None
        self.scheduler = type("Scheduler", (), {"strategy": type("S", (), {"name": "least_loaded"})()})()


def test_an_attached_monitor_reads_the_brokers_model_and_teaches_none_of_its_own(tmp_path):
    store = Store(tmp_path / "r.duckdb", flush_interval=0.05)
    broker = Broker(store)
    monitor = Monitor()
    monitor.attach(broker)
    try:
        assert monitor.durations is broker.history is monitor.detector.durations
        t = task("unit[0]")
        monitor.on_task_state(broker, t)
        attempt = Attempt(1, "w1", 1.0, started_at=1.0, ended_at=3.0, outcome="succeeded")
        monitor.on_attempt_result(broker, t, attempt)
        assert broker.history.series("w1", "sim:unit") is None  # the broker's scheduler learns it, once
    finally:
        monitor.on_stop(broker)
        store.close()
