"""The worker's state machine, stimulus in, instructions out: no socket, no thread, no clock."""

from __future__ import annotations

import pytest

from dtf_bus import defaults, protocol
from dtf_bus.worker.events import (
    Cancel,
    Collect,
    Connected,
    Disconnected,
    DrainRequested,
    Execute,
    HeartbeatDue,
    ProgressReported,
    Received,
    Send,
    SendHeartbeat,
    Stopping,
    TaskFinished,
    Tick,
)
from dtf_bus.worker.state import WorkerState

pytestmark = pytest.mark.unit

INTERVAL, LIVENESS = 0.5, 4
REGISTERED = Received(protocol.REGISTERED, {"heartbeat_interval": INTERVAL, "heartbeat_liveness": LIVENESS})


def make(slots: int = 1, registered: bool = True, **kwargs) -> WorkerState:
    state = WorkerState("w1", {"hardware": ["cpu"]}, ["sim", "shell"], slots=slots, **kwargs)
    state.handle(Connected(now=0.0))
    if registered:
        state.handle(REGISTERED)
    return state


def task(task_id: str, attempt: int = 1, **extra) -> dict:
    return {"task_id": task_id, "attempt": attempt, "plugin": "sim", "params": {}, **extra}


def assign(*tasks: dict, now: float = 0.0, wall: float = 1000.0) -> Received:
    return Received(protocol.ASSIGN, {"tasks": list(tasks)}, now, wall)


def sends(instructions: list, kind: str | None = None) -> list[Send]:
    return [i for i in instructions if isinstance(i, Send) and (kind is None or i.kind == kind)]


def started(instructions: list) -> list[tuple[str, int]]:
    return [(i.run.task_id, i.run.attempt) for i in instructions if isinstance(i, Execute)]


def finish(state: WorkerState, task_id: str, outcome: str = "succeeded", now: float = 1.0) -> list:
    run = state.running[task_id]
    report = {"task_id": task_id, "attempt": run.attempt, "outcome": outcome, "started_at": 1.0, "ended_at": 2.0}
    return state.handle(TaskFinished(run, report, now, 1001.0))


# ------------------------------------------------------------------------ assignment


@pytest.mark.parametrize(("slots", "tasks", "running"), [(1, 1, 1), (1, 3, 1), (2, 3, 2), (4, 3, 3)])
def test_an_assign_starts_what_free_slots_take_and_keeps_the_rest_pending_in_order(slots, tasks, running):
    state = make(slots=slots)
    out = state.handle(assign(*[task(f"t{i}") for i in range(tasks)], now=5.0, wall=1234.0))
    assert started(out) == [(f"t{i}", 1) for i in range(running)]
    assert list(state.pending) == [f"t{i}" for i in range(running, tasks)]
    run = out[0].run
    assert (run.started_at, run.report_at, run.deadline) == (1234.0, 5.0 + defaults.STARTED_REPORT_DELAY, None)


@pytest.mark.parametrize(
    ("first", "then", "pending_attempt", "why"),
    [
        (2, 2, 2, "the same delivery twice"),
        (2, 1, 2, "an older attempt arriving late"),
        (1, 2, 2, "a newer attempt replaces the older one still waiting here"),
    ],
)
def test_a_second_assign_of_a_pending_task(first, then, pending_attempt, why):
    state = make(slots=1)
    state.handle(assign(task("busy")))  # the slot is taken: what follows waits
    state.handle(assign(task("j.1", first)), assign(task("j.1", then)))
    assert state.pending["j.1"]["attempt"] == pending_attempt, why
    assert len(state.pending) == 1


def test_a_newer_attempt_survives_the_cancel_of_the_older_one():
    """Attempt 2 arriving while attempt 1 still waited here used to be dropped as a duplicate;
    attempt 1's CANCEL then left the task assigned to this worker and never run."""
    state = make(slots=1)
    state.handle(assign(task("busy")), assign(task("j.1", 1)), assign(task("j.1", 2)))
    out = state.handle(Received(protocol.CANCEL, {"task_id": "j.1", "attempt": 1, "reason": "superseded"}))
    assert out == [] and state.pending["j.1"]["attempt"] == 2


def test_a_running_attempt_delivered_again_is_not_started_twice():
    state = make(slots=2)
    state.handle(assign(task("j.1")))
    assert state.handle(assign(task("j.1"))) == [] and not state.pending


def test_a_finished_slot_starts_the_next_pending_task_at_once():
    state = make(slots=1)
    state.handle(assign(task("a"), task("b"), task("c")))
    assert started(finish(state, "a")) == [("b", 1)]
    assert list(state.pending) == ["c"] and list(state.running) == ["b"]


def test_resources_hold_a_task_back_until_they_are_given_back():
    state = make(slots=2, resources={"gpus": 1}, devices={"gpus": ["GPU-7"]})
    out = state.handle(assign(task("a", resources={"gpus": 1}), task("b", resources={"gpus": 1})))
    assert started(out) == [("a", 1)] and out[0].run.taken == {"gpus": ["GPU-7"]}
    out = finish(state, "a")
    assert started(out) == [("b", 1)] and out[0].run.taken == {"gpus": ["GPU-7"]}


def test_a_task_without_resources_passes_one_waiting_for_them():
    state = make(slots=2, resources={"gpus": 1})
    state.handle(assign(task("a", resources={"gpus": 1})))
    out = state.handle(assign(task("b", resources={"gpus": 1}), task("c")))
    assert started(out) == [("c", 1)] and list(state.pending) == ["b"]


def test_the_end_of_a_superseded_run_leaves_the_newer_attempt_running():
    state = make(slots=2)
    state.handle(assign(task("j.1", 1)))
    old = state.running["j.1"]
    state.handle(assign(task("j.1", 2)))  # the broker moved on: attempt 2 starts beside attempt 1
    assert state.running["j.1"].attempt == 2
    state.handle(TaskFinished(old, {"task_id": "j.1", "attempt": 1, "outcome": "cancelled"}))
    assert state.running["j.1"].attempt == 2 and ("j.1", 1) in state.unacked


# ------------------------------------------------------------------- cancel and steal


@pytest.mark.parametrize(
    ("where", "attempt", "expected", "still_held"),
    [
        ("pending", 1, [], False),  # never started: dropped, nothing to report
        ("pending", 2, [], True),  # another attempt: not ours to drop
        ("running", 1, [Cancel("t", 1, "cancelled")], True),  # stopped; its result follows
        ("running", 2, [], True),
        ("nowhere", 1, [], False),
    ],
)
def test_cancel(where, attempt, expected, still_held):
    state = make(slots=1)
    if where == "running":
        state.handle(assign(task("t")))
    elif where == "pending":
        state.handle(assign(task("busy"), task("t")))
    out = state.handle(Received(protocol.CANCEL, {"task_id": "t", "attempt": attempt, "reason": "job cancelled"}))
    assert out == expected
    assert ("t" in state.pending or "t" in state.running) == still_held


@pytest.mark.parametrize(
    ("where", "attempt", "ok"),
    [("pending", 1, True), ("pending", 2, False), ("running", 1, False), ("nowhere", 1, False)],
)
def test_a_steal_request_is_answered_and_gives_up_only_a_pending_task(where, attempt, ok):
    state = make(slots=1)
    state.handle(assign(task("t" if where == "running" else "busy")))
    if where == "pending":
        state.handle(assign(task("t")))
    out = state.handle(Received(protocol.STEAL, {"task_id": "t", "attempt": attempt}))
    assert out == [Send(protocol.STEAL_ACK, {"task_id": "t", "attempt": attempt, "ok": ok})]
    assert ("t" in state.pending) == (where == "pending" and not ok)
    assert ("t" in state.running) == (where == "running")


# --------------------------------------------------------------------------- results


def test_results_are_sent_once_and_held_until_acknowledged():
    state = make(slots=2)
    state.handle(assign(task("a"), task("b")))
    finish(state, "a")
    finish(state, "b", "failed")
    [message] = state.handle(Collect())
    assert message.kind == protocol.TASK_RESULT
    assert [(r["task_id"], r["outcome"]) for r in message.body["results"]] == [("a", "succeeded"), ("b", "failed")]
    assert state.handle(Collect()) == []  # sent: not again on this connection
    state.handle(Received(protocol.RESULT_ACK, {"acks": [["a", 1], "junk", ["x"]]}))
    assert list(state.unacked) == [("b", 1)]


def test_a_result_finished_while_unregistered_goes_out_with_registered():
    state = make(slots=1, registered=False)
    state.handle(assign(task("a")))
    finish(state, "a")
    assert state.handle(Collect()) == []  # not registered: nothing but REGISTER on this connection
    out = state.handle(REGISTERED)
    assert [r["task_id"] for m in sends(out, protocol.TASK_RESULT) for r in m.body["results"]] == ["a"]
    assert state.handle(Collect()) == []  # and not a second time


@pytest.mark.parametrize("count", [1, defaults.RESULTS_PER_MESSAGE, defaults.RESULTS_PER_MESSAGE + 1, 200])
def test_results_leave_in_batches_of_at_most_results_per_message(count):
    state = make(slots=count)
    state.handle(assign(*[task(f"t{i}") for i in range(count)]))
    for i in range(count):
        finish(state, f"t{i}")
    messages = state.handle(Collect())
    sizes = [len(m.body["results"]) for m in messages]
    assert sum(sizes) == count and max(sizes) <= defaults.RESULTS_PER_MESSAGE
    assert len(messages) == -(-count // defaults.RESULTS_PER_MESSAGE)


@pytest.mark.parametrize(
    ("sizes", "batches"),
    [
        ([10, 10], [2]),
        ([defaults.PROGRESS_MESSAGE_BYTES // 2 + 1] * 3, [1, 1, 1]),
        ([600_000, 400_000, 100_000], [2, 1]),
    ],
)
def test_progress_goes_before_results_in_messages_of_bounded_size(sizes, batches):
    state = make(slots=1)
    state.handle(assign(task("a")))
    for n, size in enumerate(sizes):
        state.handle(ProgressReported({"task_id": "a", "attempt": 1, "data": {"n": n}}, size))
    finish(state, "a")
    out = state.handle(Collect())
    assert [m.kind for m in out] == [protocol.TASK_PROGRESS] * len(batches) + [protocol.TASK_RESULT]
    assert [len(m.body["updates"]) for m in out[:-1]] == batches


def test_progress_without_registration_is_dropped():
    state = make(slots=1, registered=False)
    state.handle(ProgressReported({"task_id": "a", "attempt": 1, "data": {}}, 10))
    assert state.handle(Collect()) == [] and state.progress == []


# -------------------------------------------------------------------- registration


def test_register_reports_running_and_pending_apart_from_finished():
    state = make(slots=1)
    state.handle(assign(task("a"), task("b"), task("c", 3)))
    finish(state, "a")  # b starts; c waits
    [register] = state.handle(Disconnected(), Connected(now=10.0))
    assert register.kind == protocol.REGISTER
    body = register.body
    assert body["running"] == [["b", 1], ["c", 3]] and body["finished"] == [["a", 1]]
    assert (body["worker_id"], body["slots"], body["plugins"]) == ("w1", 1, ["shell", "sim"])
    assert not state.registered


def test_a_new_connection_resets_registration_and_resends_every_unacknowledged_result():
    state = make(slots=2)
    state.handle(assign(task("a"), task("b")))
    finish(state, "a")
    finish(state, "b")
    state.handle(Collect())  # sent on the old connection, never acknowledged
    state.handle(Received(protocol.RESULT_ACK, {"acks": [["a", 1]]}))
    state.handle(Disconnected(), Connected(now=3.0))
    assert state.handle(Collect()) == []
    out = state.handle(REGISTERED)
    assert [r["task_id"] for m in sends(out, protocol.TASK_RESULT) for r in m.body["results"]] == ["b"]


@pytest.mark.parametrize(
    ("registered", "now", "expected"),
    [
        (True, 1.0, [SendHeartbeat()]),
        (False, 1.0, []),  # its REGISTER may still be answered
        (False, INTERVAL * LIVENESS, [protocol.REGISTER]),  # unanswered for a liveness period: ask again
    ],
)
def test_a_due_heartbeat(registered, now, expected):
    state = WorkerState("w1", {}, ["sim"], heartbeat_interval=INTERVAL, heartbeat_liveness=LIVENESS)
    state.handle(Connected(now=0.0))
    if registered:
        state.handle(REGISTERED)
    out = state.handle(HeartbeatDue(now))
    assert [i.kind if isinstance(i, Send) else i for i in out] == expected


def test_an_unanswered_register_is_asked_again_once_per_liveness_period():
    state = WorkerState("w1", {}, ["sim"], heartbeat_interval=1.0, heartbeat_liveness=3)
    state.handle(Connected(now=0.0))
    asked = [t for t in range(1, 10) if state.handle(HeartbeatDue(float(t)))]
    assert asked == [3, 6, 9]


def test_registered_and_heartbeat_carry_the_brokers_timing():
    state = make()
    assert (state.interval, state.liveness) == (INTERVAL, LIVENESS)
    state.handle(Received(protocol.HEARTBEAT, {"interval": 2.0}))
    assert state.interval == 2.0


def test_reregister_asks_again_on_the_same_connection():
    state = make()
    out = state.handle(Received(protocol.REREGISTER, {"reason": "unknown worker"}))
    assert [m.kind for m in out] == [protocol.REGISTER] and not state.registered


@pytest.mark.parametrize("kind", [protocol.SUBMIT, "nonsense"])
def test_an_unexpected_message_changes_nothing(kind):
    state = make()
    assert state.handle(Received(kind, {})) == [] and state.registered


# ------------------------------------------------------------------------ time


def test_a_timeout_cancels_once_when_its_deadline_passes():
    state = make()
    state.handle(assign(task("t", timeout=2.0), now=10.0))
    assert [i for i in state.handle(Tick(11.9)) if isinstance(i, Cancel)] == []
    assert [i for i in state.handle(Tick(12.0)) if isinstance(i, Cancel)] == [Cancel("t", 1, "timeout")]
    assert [i for i in state.handle(Tick(13.0)) if isinstance(i, Cancel)] == []


@pytest.mark.parametrize("registered", [True, False])
def test_task_started_is_sent_once_for_a_task_still_running_after_the_delay(registered):
    state = make(registered=registered)
    state.handle(assign(task("t"), now=10.0, wall=500.0))
    assert state.handle(Tick(10.0)) == []
    out = state.handle(Tick(10.0 + defaults.STARTED_REPORT_DELAY))
    expected = [Send(protocol.TASK_STARTED, {"task_id": "t", "attempt": 1, "started_at": 500.0})]
    assert out == (expected if registered else [])
    if not registered:  # kept until there is someone to tell
        state.handle(REGISTERED)
        assert state.handle(Tick(20.0)) == expected
    assert state.handle(Tick(30.0)) == []


def test_a_task_ended_within_the_delay_is_reported_by_its_result_alone():
    state = make()
    state.handle(assign(task("t"), now=10.0))
    finish(state, "t")
    assert state.handle(Tick(11.0)) == []


@pytest.mark.parametrize(
    ("setup", "due"),
    [
        ("idle", 9.0),  # nothing here: the caller's own deadline
        ("pending", 1.0 + defaults.STARTED_REPORT_DELAY),  # slot threads may start it meanwhile
        ("timeout", 1.0 + defaults.STARTED_REPORT_DELAY),
    ],
)
def test_next_due(setup, due):
    state = make(slots=1)
    if setup == "pending":
        state.pending["t"] = task("t")
    elif setup == "timeout":
        state.handle(assign(task("t", timeout=0.01), now=1.0))
        due = 1.01
    assert state.next_due(1.0, 9.0) == pytest.approx(due)


# ------------------------------------------------------------------- drain and stop


def test_drain_is_announced_once_and_repeated_after_a_reconnect():
    state = make()
    assert state.handle(DrainRequested("SIGTERM")) == [Send(protocol.DRAIN, {"reason": "SIGTERM"})]
    assert state.handle(DrainRequested("SIGTERM")) == []
    state.handle(Disconnected(), Connected(now=1.0))
    assert state.handle(REGISTERED)[0] == Send(protocol.DRAIN, {"reason": "still draining"})


def test_the_broker_can_ask_for_a_drain():
    state = make()
    assert state.handle(Received(protocol.DRAIN, {})) == [Send(protocol.DRAIN, {"reason": "asked by the broker"})]
    assert state.draining


def test_drained_once_nothing_runs_and_every_result_is_acknowledged():
    state = make(slots=1)
    state.handle(assign(task("a"), task("b")))
    state.handle(DrainRequested("SIGTERM"))
    assert not state.drained(0.0)  # running, and one pending
    finish(state, "a")
    finish(state, "b")
    assert not state.drained(0.0)  # results not collected yet
    state.handle(Collect())
    state.handle(Received(protocol.RESULT_ACK, {"acks": [["a", 1], ["b", 1]]}))
    assert state.drained(0.0)


def test_a_drain_gives_up_on_a_silent_broker_after_one_liveness_period():
    state = make(slots=1)
    state.handle(assign(task("a")), DrainRequested("SIGTERM"))
    finish(state, "a")
    state.handle(Collect())
    assert not state.drained(100.0)
    assert not state.drained(100.0 + INTERVAL * LIVENESS - 0.01)
    assert state.drained(100.0 + INTERVAL * LIVENESS)


def test_not_draining_is_never_drained():
    assert not make().drained(0.0)


def test_stopping_cancels_what_runs_and_starts_nothing_more():
    state = make(slots=2)
    state.handle(assign(task("a"), task("b"), task("c")))
    assert state.handle(Stopping()) == [Cancel("a", 1, "worker stopping"), Cancel("b", 1, "worker stopping")]
    assert started(finish(state, "a")) == [] and list(state.pending) == ["c"]
