"""Worker lifecycle: registration and its reconciliation, missing, back, dead, drained, and the
session messages of a peer the broker does not know."""

from __future__ import annotations

import pytest

from dtf_bus import protocol
from dtf_bus.broker.instructions import Disconnected, SendFailed
from dtf_bus.broker.lifecycle import CONNECTION_CLOSED, SEND_QUEUE_FULL, SESSION_KINDS
from dtf_bus.task import TaskState
from tests.unit.broker.driver import DEAD, INTERVAL, LIVENESS, assigned, cancels, errors, published, sends, specs

pytestmark = pytest.mark.unit


def _held(driver, worker_id: str = "w1", count: int = 1, slots: int = 1, prefetch: int = 0):
    driver.register(worker_id, slots=slots)
    driver.state.registry.get(worker_id).prefetch = prefetch
    job = driver.submit(specs(*[f"t{i}" for i in range(count)]))
    driver.turn()
    return [driver.task(job, i) for i in range(count)]


# ------------------------------------------------------------------ registration


@pytest.mark.parametrize("kind", sorted(SESSION_KINDS))
def test_a_session_message_from_an_unknown_peer_asks_it_to_register(driver, kind):
    out = driver.msg(b"stranger", kind, task_id="x.0", attempt=1)
    assert [s.kind for s in out] == [protocol.REREGISTER]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"worker_id": "  "}, "worker_id must be non-empty"),
        ({"slots": 0}, "slots >= 1"),
        ({"capabilities": {"hardware": "cpu"}}, "hardware a list"),
    ],
)
def test_a_malformed_registration_is_refused_by_name(driver, body, error):
    full = {"worker_id": "w1", "capabilities": {"hardware": ["cpu"]}, "slots": 1, "plugins": ["sim"], **body}
    out = driver.msg(b"w1", protocol.REGISTER, **full)
    assert len(errors(out)) == 1 and error in errors(out)[0]
    assert len(driver.state.registry) == 0


def test_one_connection_is_one_worker_id(driver):
    driver.register("w1", peer=b"conn")
    out = driver.register("w2", peer=b"conn")
    assert errors(out) == ["register: this connection is worker 'w1'; one id per connection"]


def test_registration_replies_with_the_heartbeat_settings_and_is_announced(driver):
    out = driver.register("w1")
    (reply,) = sends(out, protocol.REGISTERED, b"w1")
    assert reply.body == {"heartbeat_interval": INTERVAL, "heartbeat_liveness": LIVENESS}
    assert published(out, "registered")[0]["worker"]["worker_id"] == "w1"


@pytest.mark.parametrize("listed_as", ["running", "finished"])
def test_a_worker_back_on_a_new_connection_keeps_what_it_reports(driver, listed_as):
    (task,) = _held(driver)
    out = driver.register("w1", peer=b"w1-again", **{listed_as: [[task.task_id, 1]]})
    assert cancels(out) == []
    assert driver.state.registry.get("w1").inflight == {task.task_id: 1}
    assert task.state is TaskState.ASSIGNED and task.lost_workers == 0


def test_a_worker_back_without_a_task_it_held_lost_it_to_a_restart(driver):
    (task,) = _held(driver)
    driver.register("w1", peer=b"w1-again", running=[])
    assert task.state is TaskState.QUEUED and task.attempt == 2
    assert task.lost_on == ["w1 (restarted)"]
    assert task.attempt_record(1).error == "worker w1 re-registered without it"


def test_a_second_register_on_the_same_connection_keeps_what_crossed_it(driver):
    (task,) = _held(driver)
    driver.register("w1", running=[])  # sent before our ASSIGN reached it
    assert driver.state.registry.get("w1").inflight == {task.task_id: 1}
    assert task.state is TaskState.ASSIGNED


@pytest.mark.parametrize(("listed_as", "cancelled"), [("running", True), ("finished", False)])
def test_an_attempt_the_broker_does_not_hold_there(driver, listed_as, cancelled):
    """Running: cancelled as superseded. Finished: its result is coming, never cancelled. Either
    way that attempt number is never handed out again."""
    (task,) = _held(driver)
    driver.event(SendFailed(b"w1", SEND_QUEUE_FULL))
    assert task.attempt == 2
    out = driver.register("w1", peer=b"w1-again", **{listed_as: [[task.task_id, 5]]})
    assert cancels(out) == ([(b"w1-again", task.task_id, 5, "superseded")] if cancelled else [])
    assert task.reported_attempt == 5
    assert assigned(driver.turn()) == [(b"w1-again", task.task_id, 6)]


def test_malformed_entries_of_a_running_list_are_ignored(driver):
    out = driver.register("w1", running=[["x.0"], "nonsense", ["x.1", 1, 2]])
    assert not errors(out) and cancels(out) == []


# ------------------------------------------------------------------------ liveness


def test_a_silent_worker_goes_missing_and_its_tasks_are_requeued_without_evidence(driver):
    tasks = _held(driver, count=2, slots=2)
    driver.advance(INTERVAL * LIVENESS + 0.01)
    out = driver.health()
    worker = driver.state.registry.get("w1")
    assert worker.state == "missing" and worker.inflight == {}
    assert worker.abandoned == {t.task_id: 1 for t in tasks}
    assert all(t.state is TaskState.QUEUED and t.attempt == 2 and t.lost_workers == 0 for t in tasks)
    assert published(out, "missing")
    assert assigned(driver.turn()) == []  # a missing worker takes nothing


@pytest.mark.parametrize("kind", [protocol.HEARTBEAT, protocol.TASK_PROGRESS])
def test_a_missing_worker_that_speaks_is_back_and_told_to_stop_what_it_ran(driver, kind):
    (task,) = _held(driver)
    driver.advance(INTERVAL * LIVENESS + 0.01)
    driver.health()
    out = driver.msg(b"w1", kind, updates=[])
    assert cancels(out) == [(b"w1", task.task_id, 1, "superseded")]
    assert driver.state.registry.get("w1").state == "alive" and published(out, "back")
    assert assigned(driver.turn()) == [(b"w1", task.task_id, 2)]


@pytest.mark.parametrize("silent_intervals", [DEAD + 0.5, DEAD * 2])
def test_a_worker_silent_past_the_dead_limit_is_removed(driver, silent_intervals):
    (task,) = _held(driver)
    driver.advance(INTERVAL * silent_intervals)
    out = driver.health()
    assert driver.state.registry.get("w1") is None and published(out, "dead")
    assert task.state is TaskState.QUEUED and task.lost_workers == 0  # silence is no evidence


@pytest.mark.parametrize("silent_intervals", [0.5, LIVENESS - 0.5])
def test_a_worker_heard_from_in_time_is_alive(driver, silent_intervals):
    _held(driver)
    driver.advance(INTERVAL * silent_intervals)
    driver.health()
    assert driver.state.registry.get("w1").state == "alive"


def test_no_one_is_judged_silent_while_frames_wait_unread(driver):
    _held(driver)
    driver.advance(INTERVAL * DEAD * 0.9)
    driver.health(backlog_since=driver.now - 0.1)
    assert driver.state.registry.get("w1").state == "alive"


@pytest.mark.parametrize("slots", [1, 2, 3])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_closed_connection_is_evidence_only_against_what_it_was_running(driver, slots, prefetch):
    tasks = _held(driver, count=slots + prefetch, slots=slots, prefetch=prefetch)
    out = driver.event(SendFailed(b"w1", CONNECTION_CLOSED))
    assert published(out, "dead")
    assert [t.lost_workers for t in tasks] == [1] * slots + [0] * prefetch
    assert all(t.state is TaskState.QUEUED and t.attempt == 2 for t in tasks)


@pytest.mark.parametrize("max_lost", [1, 2, 3])
def test_a_task_that_kills_its_workers_fails_as_poison(make_driver, max_lost):
    driver = make_driver(max_lost_workers=max_lost)
    job = driver.submit(specs("bomb"))
    task = driver.task(job)
    for n in range(max_lost):
        driver.register(f"w{n}")
        assert assigned(driver.turn()) == [(f"w{n}".encode(), task.task_id, n + 1)]
        driver.event(SendFailed(f"w{n}".encode(), CONNECTION_CLOSED))
    assert task.state is TaskState.FAILED
    assert task.error.startswith(f"lost {max_lost} workers running it: w0 (connection closed)")


@pytest.mark.parametrize(
    ("how", "state"), [("unregister", "left"), ("full", "dead"), ("unreachable", "dead"), ("revoked", "dead")]
)
def test_every_way_out_requeues_through_one_loop(driver, how, state):
    from dtf_bus.broker.instructions import Revoked

    tasks = _held(driver, count=2, slots=2)
    event = {
        "unregister": None,
        "full": SendFailed(b"w1", SEND_QUEUE_FULL),
        "unreachable": SendFailed(b"w1", CONNECTION_CLOSED),
        "revoked": Revoked(["w1"]),
    }[how]
    out = driver.msg(b"w1", protocol.UNREGISTER) if event is None else driver.event(event)
    assert published(out, state) and driver.state.registry.get("w1") is None
    assert all(t.state is TaskState.QUEUED and t.attempt == 2 for t in tasks)
    assert sum(t.lost_workers for t in tasks) == (2 if how == "unreachable" else 0)
    assert driver.event(SendFailed(b"w1", CONNECTION_CLOSED)) == []  # gone already: nothing twice


def test_a_closed_descriptor_is_probed_and_the_probe_failing_loses_the_worker(driver):
    driver.register("w1", _fd=42)
    out = driver.event(Disconnected(42))
    assert [(s.peer, s.kind) for s in out] == [(b"w1", protocol.HEARTBEAT)]
    driver.event(SendFailed(b"w1", CONNECTION_CLOSED))  # what the server reports for that probe
    assert driver.state.registry.get("w1") is None
    assert driver.event(Disconnected(42)) == []


def test_heartbeats_go_to_every_worker_with_the_fleet_interval(driver):
    from dtf_bus.broker.instructions import Heartbeats

    for n in range(3):
        driver.register(f"w{n}")
    out = driver.event(Heartbeats())
    assert sorted(s.peer for s in sends(out, protocol.HEARTBEAT)) == [b"w0", b"w1", b"w2"]
    assert {s.body["interval"] for s in out} == {INTERVAL}


# -------------------------------------------------------------------------- drain


@pytest.mark.parametrize("by", ["worker", "client"])
def test_a_draining_worker_finishes_what_it_has_and_takes_nothing_new(driver, by):
    (task,) = _held(driver)
    if by == "worker":
        driver.msg(b"w1", protocol.DRAIN, reason="SIGTERM")
    else:
        out = driver.request(protocol.DRAIN_WORKER, worker_id="w1")
        assert [(s.peer, s.kind) for s in sends(out) if s.kind == protocol.DRAIN] == [(b"w1", protocol.DRAIN)]
    assert driver.state.registry.get("w1").state == "draining"
    job2 = driver.submit(specs("later"))
    assert assigned(driver.turn()) == []
    driver.result("w1", task.task_id, 1)
    assert task.state is TaskState.SUCCEEDED and driver.task(job2).state is TaskState.QUEUED


# ------------------------------------------------- a REGISTERED that found its connection closed


def _finished_while_away(driver):
    """w1 runs a task, then registers again on a new connection saying it finished it (its
    result not yet delivered): what a worker does after it judged the broker silent."""
    (task,) = _held(driver)
    driver.started("w1", task.task_id, 1)
    driver.register("w1", peer=b"w1-second", finished=[[task.task_id, 1]])
    return task


def test_a_registered_that_found_the_connection_closed_keeps_what_the_worker_reported(driver):
    task = _finished_while_away(driver)
    driver.event(SendFailed(b"w1-second", CONNECTION_CLOSED, protocol.REGISTERED))
    assert driver.state.registry.get("w1") is None
    assert task.state is TaskState.RUNNING and task.attempt == 1 and task.lost_workers == 0
    # It registers once more, on the connection it kept this time, and delivers the result.
    driver.register("w1", peer=b"w1-third", finished=[[task.task_id, 1]])
    assert driver.state.registry.get("w1").inflight == {task.task_id: 1}
    driver.result("w1", task.task_id, 1, peer=b"w1-third")
    assert task.state is TaskState.SUCCEEDED and task.attempt == 1
    assert [r.outcome for r in task.history] == ["succeeded"]


def test_a_worker_that_never_registers_again_has_its_attempts_requeued_after_the_grace(driver):
    task = _finished_while_away(driver)
    driver.event(SendFailed(b"w1-second", CONNECTION_CLOSED, protocol.REGISTERED))
    driver.advance(driver.state.health.return_grace * 0.9)
    driver.health()
    assert task.state is TaskState.RUNNING
    driver.advance(driver.state.health.return_grace * 0.2)
    driver.health()
    assert task.state is TaskState.QUEUED and task.attempt == 2 and task.lost_workers == 0
    assert task.attempt_record(1).error == "worker w1 did not return in time"


def test_what_went_out_with_an_unanswered_registered_is_requeued_at_once_without_evidence(driver):
    driver.register("w1", slots=2)
    job = driver.submit(specs("a"))
    assert assigned(driver.turn()) == [(b"w1", f"{job}.0", 1)]
    task = driver.task(job)
    driver.event(SendFailed(b"w1", CONNECTION_CLOSED, protocol.REGISTERED))
    assert task.state is TaskState.QUEUED and task.attempt == 2 and task.lost_workers == 0
    assert not driver.state.orphans


def test_any_other_send_that_finds_the_connection_closed_still_loses_the_worker(driver):
    task = _finished_while_away(driver)
    driver.event(SendFailed(b"w1-second", CONNECTION_CLOSED, protocol.ASSIGN))
    assert task.state is TaskState.QUEUED and task.attempt == 2 and not driver.state.orphans
