"""The steal handshake: STEAL to the holder, and on its STEAL_ACK the task moves to the thief
under the same attempt, or stays, or is requeued when the thief cannot take it any more."""

from __future__ import annotations

import pytest

from dtf_bus import protocol
from dtf_bus.broker.instructions import SendFailed
from dtf_bus.broker.lifecycle import SEND_QUEUE_FULL
from dtf_bus.task import TaskState
from tests.unit.broker.driver import assigned, published, sends, specs

pytestmark = pytest.mark.unit


def _asked(driver, backlog: int = 3):
    """A busy worker holding ``backlog`` prefetched tasks beyond its one slot, an idle thief,
    and the STEAL asked for the task it would start last."""
    driver.register("busy")
    driver.state.registry.get("busy").prefetch = backlog
    job = driver.submit(specs(*[f"t{i}" for i in range(backlog + 1)]))
    assert len(assigned(driver.turn())) == backlog + 1
    driver.started("busy", f"{job}.0", 1)
    driver.register("idle")
    out = driver.steal_round()
    (steal,) = sends(out, protocol.STEAL, b"busy")
    return job, driver.state.tasks[steal.body["task_id"]], steal.body["attempt"]


def test_an_idle_worker_is_offered_the_task_the_holder_would_start_last(driver):
    job, task, attempt = _asked(driver)
    assert task.task_id == f"{job}.3" and attempt == 1
    assert driver.machine.stealing.in_flight == {task.task_id: ("idle", 1)}
    assert sends(driver.steal_round(), protocol.STEAL) == []  # asked once, not again


def test_nothing_is_asked_without_an_idle_worker_or_a_backlog(driver):
    driver.register("w1", slots=2)
    driver.submit(specs("a", "b"))
    driver.turn()
    driver.register("w2")
    assert sends(driver.steal_round(), protocol.STEAL) == []


def test_a_granted_steal_moves_the_attempt_to_the_thief(driver):
    _, task, attempt = _asked(driver)
    out = driver.msg(b"busy", protocol.STEAL_ACK, task_id=task.task_id, attempt=attempt, ok=True)
    assert assigned(out) == [(b"idle", task.task_id, attempt)]
    assert task.worker_id == "idle" and task.attempt == attempt and task.history[-1].worker_id == "idle"
    assert task.task_id not in driver.state.registry.get("busy").inflight
    assert driver.state.registry.get("idle").inflight == {task.task_id: attempt}
    assert published(out, "stolen") and driver.state.scheduler.steal_count == 1
    assert driver.machine.stealing.in_flight == {}
    driver.result("idle", task.task_id, attempt)
    assert task.state is TaskState.SUCCEEDED


def test_a_refused_steal_leaves_the_task_with_its_holder(driver):
    _, task, attempt = _asked(driver)
    out = driver.msg(b"busy", protocol.STEAL_ACK, task_id=task.task_id, attempt=attempt, ok=False)
    assert out == [] and task.worker_id == "busy" and driver.machine.stealing.in_flight == {}
    assert driver.state.scheduler.steal_count == 0


@pytest.mark.parametrize("ok", [True, False])
def test_an_answer_nobody_asked_for_is_ignored(driver, ok):
    driver.register("w1")
    job = driver.submit(specs("a"))
    driver.turn()
    out = driver.msg(b"w1", protocol.STEAL_ACK, task_id=f"{job}.0", attempt=1, ok=ok)
    assert out == [] and driver.task(job).worker_id == "w1"


def test_an_answer_about_another_attempt_moves_nothing(driver):
    _, task, attempt = _asked(driver)
    out = driver.msg(b"busy", protocol.STEAL_ACK, task_id=task.task_id, attempt=attempt + 1, ok=True)
    assert assigned(out) == [] and task.worker_id == "busy"


@pytest.mark.parametrize("thief_is", ["gone", "missing", "draining"])
def test_a_thief_that_cannot_take_it_any_more_gets_nothing_and_the_task_is_requeued(driver, thief_is):
    _, task, attempt = _asked(driver)
    if thief_is == "gone":
        driver.event(SendFailed(b"idle", SEND_QUEUE_FULL))
    else:
        driver.state.registry.get("idle").state = thief_is
    out = driver.msg(b"busy", protocol.STEAL_ACK, task_id=task.task_id, attempt=attempt, ok=True)
    assert assigned(out) == []
    assert task.state is TaskState.QUEUED and task.attempt == attempt + 1  # never started anywhere
    assert task.task_id not in driver.state.registry.get("busy").inflight


@pytest.mark.parametrize("how", ["started", "finished"])
def test_a_task_that_moves_on_before_the_answer_ends_the_ask(driver, how):
    _, task, attempt = _asked(driver)
    if how == "started":
        driver.started("busy", task.task_id, attempt)
    else:
        driver.result("busy", task.task_id, attempt)
    assert driver.machine.stealing.in_flight == {}
    out = driver.msg(b"busy", protocol.STEAL_ACK, task_id=task.task_id, attempt=attempt, ok=False)
    assert out == [] and task.worker_id == "busy"


def test_a_task_whose_attempt_a_worker_reported_is_never_stolen(driver):
    driver.register("busy")
    driver.state.registry.get("busy").prefetch = 1
    job = driver.submit(specs("a", "b"))
    driver.turn()
    driver.started("busy", f"{job}.0", 1)
    driver.task(job, 1).reported_attempt = 1
    driver.register("idle")
    assert sends(driver.steal_round(), protocol.STEAL) == []
