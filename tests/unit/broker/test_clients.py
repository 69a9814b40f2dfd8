"""Client requests: what is refused and why (one line each), what waits for the store, and
what a job not in memory costs (a read on the archive thread, answered when it is back)."""

from __future__ import annotations

import pytest

from dtf_bus import protocol
from dtf_bus.broker.instructions import Archived
from dtf_bus.task import TaskState
from dtf_bus.testing.cluster import wait_for
from tests.unit.broker.driver import CLIENT, assigned, errors, replies, sends, specs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("tasks", "error"),
    [
        ([], "invalid spec: spec has no tasks"),
        ("nope", "invalid spec: spec has no tasks"),
        ([{"name": "a"}], "invalid spec"),
        ([{"name": "a", "plugin": "sim"}, {"name": "a", "plugin": "sim"}], "duplicate name"),
        ([{"name": "a", "plugin": "sim", "depends_on": ["zz"]}], "invalid spec"),
        ([{"name": "a", "plugin": "sim", "retries": -1}], "invalid spec"),
    ],
)
def test_an_invalid_spec_is_refused_with_its_reason(driver, tasks, error):
    out = driver.request(protocol.SUBMIT, tasks=tasks)
    (message,) = errors(out)
    assert message.startswith("invalid spec") and error in message
    assert driver.state.jobs == {}


def test_invalid_metadata_is_refused(driver):
    out = driver.request(protocol.SUBMIT, tasks=specs("a"), meta={"commit": 12})
    assert errors(out)[0].startswith("invalid metadata")


@pytest.mark.parametrize(("cap", "quota", "first", "second"), [(5, 100, 3, 3), (100, 4, 2, 3)])
def test_submits_past_the_task_cap_or_the_quota_are_refused(make_driver, cap, quota, first, second):
    driver = make_driver(max_live_tasks=cap, submitter_quota=quota)
    driver.submit(specs(*[f"a{i}" for i in range(first)]))
    (message,) = errors(driver.request(protocol.SUBMIT, tasks=specs(*[f"b{i}" for i in range(second)])))
    flag = "--max-live-tasks" if cap < quota else "--submitter-quota"
    assert message.startswith("submit refused") and flag in message


def test_the_quota_is_freed_as_tasks_finish(make_driver):
    driver = make_driver(submitter_quota=1)
    driver.register("w1")
    job = driver.submit(specs("a"))
    driver.turn()
    assert errors(driver.request(protocol.SUBMIT, tasks=specs("b")))
    driver.result("w1", f"{job}.0", 1)
    driver.submit(specs("b"))


def test_the_submit_reply_waits_until_the_job_is_committed(driver):
    driver.register("w1")
    out = driver.request(protocol.SUBMIT, tasks=specs("a", "b"))
    assert replies(out) == []
    job = next(iter(driver.state.jobs))
    assert replies(driver.commit()) == [{"job_id": job, "total": 2}]


def test_a_submit_nobody_can_run_says_why_at_once(driver):
    driver.register("w1", plugins=("pytest",))
    driver.request(protocol.SUBMIT, tasks=specs("a", "b", "c", "d"))
    (reply,) = replies(driver.commit())
    (warning,) = reply["warnings"]
    assert warning.startswith("4 task(s) (a, b, c and 1 more) cannot run on any live worker")


def test_a_task_waiting_on_another_is_warned_about_too(driver):
    driver.register("w1")
    tasks = [{"name": "a", "plugin": "sim"}, {"name": "b", "plugin": "pytest", "depends_on": ["a"]}]
    driver.request(protocol.SUBMIT, tasks=tasks)
    (reply,) = replies(driver.commit())
    (warning,) = reply["warnings"]
    assert warning.startswith("1 task(s) (b) cannot run on any live worker: plugin=pytest")
    driver.request(protocol.SUBMIT, tasks=specs("c", "d"))  # all runnable: no warning
    (reply,) = replies(driver.commit())
    assert "warnings" not in reply


@pytest.mark.parametrize(
    ("request_kind", "extra"),
    [
        (protocol.STATUS, {}),
        (protocol.WAIT, {}),
        (protocol.RESULTS, {}),
        (protocol.CANCEL_JOB, {}),
        (protocol.CLOSE_JOB, {}),
        (protocol.FOLLOW, {"since": 0}),
    ],
)
def test_a_job_nobody_knows_is_looked_up_off_the_loop_then_refused_by_name(driver, request_kind, extra):
    out = driver.request(request_kind, job_id="feedfacecafe", **extra)
    assert out == []  # handed to the archive thread
    archive = driver.state.archive
    loaded = []
    wait_for(lambda: loaded.extend(archive.taken()) or loaded, 10, "the archive to answer")
    out = driver.event(Archived(loaded))
    assert errors(out) == ["unknown job 'feedfacecafe'"]


@pytest.mark.parametrize("action", [protocol.CANCEL_JOB, protocol.CLOSE_JOB])
def test_only_the_submitter_or_an_admin_may_change_a_job(driver, action):
    job = driver.submit(specs("a"), _who=("alice", "submitter"))
    (message,) = errors(driver.request(action, job_id=job, _who=("mallory", "submitter")))
    assert "it was submitted by 'alice'; only that key or an admin key may change it" in message
    assert not errors(driver.request(action, job_id=job, _who=("root", "admin")))


def test_a_closed_job_takes_no_more_tasks(driver):
    job = driver.submit(specs("a"))
    (message,) = errors(driver.request(protocol.SUBMIT, tasks=specs("b"), job_id=job))
    assert message == f"job {job} is closed: it takes no more tasks"


def test_an_open_job_refuses_a_name_it_has(driver):
    job = driver.submit(specs("a"), keep_open=True)
    (message,) = errors(driver.request(protocol.SUBMIT, tasks=specs("a"), job_id=job))
    assert "duplicate name" in message


def test_draining_an_unknown_worker_is_refused_by_name(driver):
    assert errors(driver.request(protocol.DRAIN_WORKER, worker_id="ghost")) == ["unknown worker 'ghost'"]


def test_an_unknown_query_is_refused(driver):
    (message,) = errors(driver.request(protocol.QUERY, what="everything"))
    assert "everything" in message


@pytest.mark.parametrize("kind", [protocol.ASSIGN, protocol.REPLY, protocol.REGISTERED, protocol.RESULT_ACK])
def test_a_kind_only_the_broker_sends_is_refused(driver, kind):
    assert errors(driver.msg(CLIENT, kind)) == [f"the broker does not take {kind} messages"]


def test_a_bug_of_ours_is_an_internal_error_not_a_crash(driver):
    (message,) = errors(driver.request(protocol.SUBMIT))  # no tasks field: a KeyError inside
    assert message == "internal error handling submit"


# ---------------------------------------------------------------- answers


def test_a_waiter_is_answered_once_the_job_is_done_and_committed(driver):
    driver.register("w1")
    job = driver.submit(specs("a"))
    driver.turn()
    assert replies(driver.request(protocol.WAIT, job_id=job)) == []
    out = driver.result("w1", f"{job}.0", 1)
    assert replies(out) == []
    (status,) = [r for r in replies(driver.commit()) if "counts" in r]
    assert status["done"] and status["counts"] == {"succeeded": 1}


def test_status_says_why_queued_tasks_wait(driver):
    job = driver.submit([{"name": "a", "plugin": "sim"}, {"name": "b", "plugin": "sim", "depends_on": ["a"]}])
    (status,) = replies(driver.request(protocol.STATUS, job_id=job))
    assert status["counts"] == {"queued": 2} and status["unplaceable"] == [f"{job}.0"]
    reasons = {tuple(b["tasks"]): b["reasons"] for b in status["blocked"]}
    assert reasons[("b",)] == ["waiting for dependencies: a"]


@pytest.mark.parametrize("wait", [0, 5])
def test_follow_answers_now_or_when_something_finishes_or_the_wait_runs_out(driver, wait):
    driver.register("w1")
    job = driver.submit(specs("a", "b"))
    driver.turn()
    out = driver.request(protocol.FOLLOW, job_id=job, since=0, wait=wait)
    if not wait:
        assert replies(out) == [{"tasks": [], "next": 0, "done": False}]
        return
    assert replies(out) == []
    driver.result("w1", f"{job}.0", 1)
    (reply,) = replies(driver.turn())
    assert reply["next"] == 1 and [t["name"] for t in reply["tasks"]] == ["a"]
    driver.request(protocol.FOLLOW, job_id=job, since=1, wait=wait)
    driver.advance(wait + 0.01)
    assert replies(driver.turn()) == [{"tasks": [], "next": 1, "done": False}]


def test_ping_workers_and_results_describe_what_the_broker_holds(driver):
    driver.register("w1", slots=2)
    job = driver.submit(specs("a"))
    driver.turn()
    (ping,) = replies(driver.request(protocol.PING))
    assert ping["workers"] == 1 and ping["jobs_in_memory"] == 1 and ping["tasks_in_memory"] == 1
    (workers,) = replies(driver.request(protocol.WORKERS))
    assert [(w["worker_id"], w["running"], w["state"]) for w in workers] == [("w1", 1, "busy")]
    (results,) = replies(driver.request(protocol.RESULTS, job_id=job))
    assert [(r["name"], r["state"]) for r in results] == [("a", "assigned")]
    (stats,) = replies(driver.request(protocol.BALANCER_STATS))
    assert stats["assignments"] == {"w1": 1}


def test_a_finished_job_leaves_memory_after_its_ttl_and_stays_answerable(make_driver):
    driver = make_driver(finished_job_ttl=1.0)
    driver.register("w1")
    job = driver.submit(specs("a"))
    driver.turn()
    driver.result("w1", f"{job}.0", 1)
    driver.commit()
    driver.tick()
    assert job in driver.state.jobs  # not yet due
    driver.advance(1.5)
    driver.tick()
    assert job not in driver.state.jobs and f"{job}.0" not in driver.state.tasks
    (status,) = replies(driver.request(protocol.STATUS, job_id=job))
    assert status["done"] and status["counts"] == {"succeeded": 1}
    assert driver.task  # the driver is still usable
    assert [s.kind for s in sends(driver.request(protocol.WAIT, job_id=job))] == [protocol.REPLY]


def test_cancelled_tasks_are_never_placed(driver):
    job = driver.submit(specs("a", "b"))
    driver.request(protocol.CANCEL_JOB, job_id=job)
    driver.register("w1", slots=2)
    assert assigned(driver.turn()) == []
    assert {driver.task(job, i).state for i in range(2)} == {TaskState.CANCELLED}
