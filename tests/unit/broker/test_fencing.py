"""Attempt fencing: only the current attempt on its own worker moves a task; anything else is
stale, recorded as such, and never changes the verdict."""

from __future__ import annotations

import pytest

from dtf_bus import protocol
from dtf_bus.broker.instructions import SendFailed
from dtf_bus.broker.lifecycle import CONNECTION_CLOSED
from dtf_bus.task import TaskState
from tests.unit.broker.driver import assigned, cancels, published, sends, specs

pytestmark = pytest.mark.unit

OUTCOMES = ["succeeded", "failed", "timed_out", "crashed", "cancelled"]


def _one_assigned(driver, slots: int = 1):
    driver.register("w1", slots=slots)
    job = driver.submit(specs("a"))
    out = driver.turn()
    assert assigned(out) == [(b"w1", f"{job}.0", 1)]
    return driver.task(job)


def test_a_submitted_task_is_assigned_to_a_registered_worker_as_attempt_1(driver):
    task = _one_assigned(driver)
    assert task.state is TaskState.ASSIGNED and task.worker_id == "w1" and task.attempt == 1
    assert driver.state.registry.get("w1").inflight == {task.task_id: 1}


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "timed_out", "crashed"])
def test_the_current_attempt_decides(driver, outcome):
    task = _one_assigned(driver)
    job = task.job_id
    driver.started("w1", task.task_id, 1)
    assert task.state is TaskState.RUNNING
    driver.result("w1", task.task_id, 1, outcome)
    expected = {
        "succeeded": TaskState.SUCCEEDED,
        "failed": TaskState.FAILED,
        "timed_out": TaskState.TIMED_OUT,
        "crashed": TaskState.FAILED,
    }
    assert task.state is expected[outcome]
    assert driver.state.jobs[job].done
    assert driver.state.registry.get("w1").inflight == {}


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("attempt", [0, 2, 7])
def test_a_result_for_another_attempt_is_stale(driver, outcome, attempt):
    task = _one_assigned(driver)
    driver.result("w1", task.task_id, attempt, outcome)
    assert task.state is TaskState.ASSIGNED and task.attempt == 1
    assert task.history[-1].outcome == "assigned"  # never an attempt it holds: nothing recorded


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_result_from_another_worker_is_stale(driver, outcome):
    task = _one_assigned(driver)
    driver.register("w2")
    driver.result("w2", task.task_id, 1, outcome)
    assert task.state is TaskState.ASSIGNED
    assert task.history[-1].outcome == "assigned" and not task.history[-1].stale


@pytest.mark.parametrize("attempt", [0, 2, 5])
def test_a_start_of_another_attempt_is_cancelled_as_superseded(driver, attempt):
    task = _one_assigned(driver)
    out = driver.started("w1", task.task_id, attempt)
    assert cancels(out) == [(b"w1", task.task_id, attempt, "superseded")]
    assert task.state is TaskState.ASSIGNED


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_the_lost_attempt_result_is_recorded_stale_and_the_requeued_one_decides(driver, outcome):
    driver.register("w1")
    driver.register("w2")
    job = driver.submit(specs("a"))
    (first,) = assigned(driver.turn())
    task = driver.task(job)
    holder = first[0].decode()
    other = "w2" if holder == "w1" else "w1"
    driver.event(SendFailed(first[0], "not reading its messages"))  # dropped: no evidence
    assert task.state is TaskState.QUEUED and task.attempt == 2 and task.lost_workers == 0
    assert assigned(driver.turn()) == [(other.encode(), task.task_id, 2)]
    driver.register(holder)  # back, under a new registration: its old result still arrives
    driver.result(holder, task.task_id, 1, outcome)
    record = task.attempt_record(1)
    assert record.stale and record.outcome == outcome
    assert task.state is TaskState.ASSIGNED and task.attempt == 2
    driver.result(holder, task.task_id, 1, "succeeded")  # a re-delivery: recorded once
    assert record.outcome == outcome
    driver.result(other, task.task_id, 2, "succeeded")
    assert task.state is TaskState.SUCCEEDED


def test_results_of_a_batch_are_acknowledged_together_once_committed(driver):
    driver.register("w1", slots=3)
    job = driver.submit(specs("a", "b", "c"))
    driver.turn()
    body = {
        "results": [
            {"task_id": f"{job}.{i}", "attempt": 1, "outcome": "succeeded", "ended_at": 1.7e9, "started_at": 1.7e9}
            for i in range(3)
        ]
        + [{"task_id": "nope.0", "attempt": 1, "outcome": "succeeded", "ended_at": 1.7e9}]
    }
    out = driver.msg(b"w1", protocol.TASK_RESULT, **body)
    assert sends(out, protocol.RESULT_ACK) == []  # not before the store has them
    acks = sends(driver.commit(), protocol.RESULT_ACK)
    assert [a.body["acks"] for a in acks] == [[(f"{job}.{i}", 1) for i in range(3)] + [("nope.0", 1)]]


def test_a_result_for_a_task_the_broker_never_held_is_only_logged(driver):
    driver.register("w1")
    out = driver.result("w1", "gone.3", 4)
    assert out == [] and driver.state.tasks == {}


@pytest.mark.parametrize("events_wanted", [True, False])
def test_task_events_are_built_only_for_subscribers(make_driver, events_wanted):
    driver = make_driver(wanted=lambda topic: events_wanted)
    driver.register("w1")
    driver.submit(specs("a"))
    assert bool(published(driver.turn(), "assigned")) is events_wanted


def test_progress_of_the_current_attempt_reaches_followers_and_stale_progress_does_not(driver):
    task = _one_assigned(driver)
    job = task.job_id
    driver.request(protocol.FOLLOW, job_id=job, since=0, progress_since=0, wait=30)
    updates = [
        {"task_id": task.task_id, "attempt": 9, "data": "old"},
        {"task_id": task.task_id, "attempt": 1, "data": 1},
    ]
    driver.msg(b"w1", protocol.TASK_PROGRESS, updates=updates)
    out = driver.turn()
    (reply,) = [s.body["data"] for s in sends(out, protocol.REPLY)]
    assert reply["progress"] == [{"task_id": task.task_id, "name": "a", "data": 1}]


def test_a_connection_closed_under_a_task_counts_against_it(driver):
    task = _one_assigned(driver)
    driver.event(SendFailed(b"w1", CONNECTION_CLOSED))
    assert task.lost_workers == 1 and task.lost_on == ["w1 (connection closed)"]
    assert task.state is TaskState.QUEUED and task.attempt == 2
    assert task.attempt_record(1).outcome == "lost"
