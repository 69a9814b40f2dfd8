"""Kill, stop and disconnect real worker processes; every task still ends exactly once."""

from __future__ import annotations

import signal

import duckdb
import msgpack
import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.testing.cluster import wait_for
from tests.conftest import task_where

pytestmark = pytest.mark.fault


def running_task(client, job):
    return task_where(client, job, lambda t: t["state"] == "running", what="the task to start running")


def test_sigkill_mid_task_completes_elsewhere_on_attempt_2(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "long", "plugin": "sim", "params": {"seconds": 1.5}}])
        victim = running_task(client, job)["worker_id"]
        cluster.kill_worker(victim, signal.SIGKILL)
        status = client.wait(job, timeout=30)
        [task] = client.results(job)
    assert status["succeeded"] == 1
    assert task["attempts"] == 2 and task["worker_id"] != victim
    assert [(h["worker_id"], h["outcome"]) for h in task["history"]] == [
        (victim, "lost"),
        (task["worker_id"], "succeeded"),
    ]
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    assert con.execute("select count(*), min(state), max(attempts) from tasks").fetchone() == (1, "succeeded", 2)
    assert con.execute("select attempt, worker_id, outcome from attempts order by attempt").fetchall() == [
        (1, victim, "lost"),
        (2, task["worker_id"], "succeeded"),
    ]


def test_closed_socket_is_detected_and_late_result_is_stale(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}}, faults=True)
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 1.0}}])
        victim = running_task(client, job)["worker_id"]
        cluster.close_worker_socket(victim)  # process alive, DEALER gone
        status = client.wait(job, timeout=30)
        assert status["succeeded"] == 1
        [task] = client.results(job)
        survivor = task["worker_id"]
        assert survivor != victim and task["attempts"] == 2
        # The partitioned worker finished attempt 1 too; let it reconnect and deliver.
        cluster.reopen_worker_socket(victim)
        task = task_where(client, job, lambda t: t["history"][0]["stale"], what="the stale result to arrive")
        assert task["state"] == "succeeded" and task["worker_id"] == survivor and task["attempts"] == 2
        assert task["history"][0]["outcome"] == "succeeded"  # what the late worker said, fenced out
        cluster.wait_for_workers([victim])
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    assert con.execute("select count(*), min(worker_id) from tasks").fetchone() == (1, survivor)
    assert con.execute("select attempt, stale from attempts order by attempt").fetchall() == [(1, True), (2, False)]


def worker_state(client, worker_id):
    return next((w["state"] for w in client.workers() if w["worker_id"] == worker_id), None)


def test_sigstopped_worker_goes_missing_its_task_requeued_and_it_comes_back(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 1.0}}])
        victim = running_task(client, job)["worker_id"]
        cluster.pause_worker(victim)
        try:
            wait_for(lambda: worker_state(client, victim) == "missing", 10, "the hung worker to go missing")
            status = client.wait(job, timeout=30)
        finally:
            cluster.resume_worker(victim)
        [task] = client.results(job)
        assert status["succeeded"] == 1 and task["worker_id"] != victim
        assert task["history"][0]["outcome"] == "lost" and "missing" in task["history"][0]["error"]
        # Resumed, it speaks again and is taken back without re-registering; its old attempt is
        # cancelled there, and it serves new work.
        wait_for(lambda: worker_state(client, victim) == "idle", 10, "the worker to be back")
        job2 = client.submit([{"name": f"t{i}", "plugin": "sim", "params": {"seconds": 0.2}} for i in range(4)])
        assert client.wait(job2, timeout=30)["succeeded"] == 4
        assert victim in {t["worker_id"] for t in client.results(job2)}


def test_worker_silent_past_dead_limit_is_removed_and_reregisters(make_cluster):
    cluster = make_cluster(workers={"w1": {}}, heartbeat_liveness=2, dead_liveness=4)
    with cluster.client() as client:
        cluster.pause_worker("w1")
        try:
            wait_for(lambda: worker_state(client, "w1") is None, 10, "the silent worker to be removed")
        finally:
            cluster.resume_worker("w1")
        cluster.wait_for_workers(["w1"])  # told to re-register, it does
        job = client.submit([{"name": "t", "plugin": "sim"}])
        assert client.wait(job, timeout=20)["succeeded"] == 1


def test_worker_restarted_with_same_id_reregisters_cleanly(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 0.5}}])
        running_task(client, job)
        cluster.kill_worker("w1", signal.SIGKILL)
        cluster.start_worker("w1")  # back before the broker noticed the death
        status = client.wait(job, timeout=30)
        [task] = client.results(job)
        workers = client.workers()
    assert status["succeeded"] == 1 and task["attempts"] == 2 and task["worker_id"] == "w1"
    assert [w["worker_id"] for w in workers] == ["w1"]


def test_workers_reconnect_after_broker_restart(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    cluster.kill_broker(signal.SIGKILL)
    cluster.start_broker()  # same endpoint, same database
    cluster.wait_for_workers(["w1", "w2"], timeout=20)
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "repeat": 4}])
        assert client.wait(job, timeout=20)["succeeded"] == 4


def test_malformed_frames_never_stop_the_broker(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(cluster.endpoint)
    garbage = [
        b"",
        b"\xc1\xc1",
        b"\x92\x01",
        msgpack.packb({"x": 1}),
        msgpack.packb([1, "ping", "body"]),
        msgpack.packb([9, "ping", {"req": 1}]),
        msgpack.packb([1, "nope", {}]),
        msgpack.packb([1, "submit", {"req": 2, "tasks": "x"}]),
        msgpack.packb([1, "submit", {"req": 3, "tasks": [{"name": "x"}]}]),
        msgpack.packb([1, "register", {"worker_id": "", "capabilities": {}, "slots": 0, "plugins": []}]),
        msgpack.packb(
            [1, "task_result", {"results": [{"task_id": "zz", "attempt": 1, "outcome": "succeeded", "ended_at": 1.0}]}]
        ),
        msgpack.packb([1, "status", {"req": 4, "job_id": "nope"}]),
    ]
    try:
        for frame in garbage:
            rogue.send(frame)
        rogue.send_multipart([b"two", b"frames"])
        replies = []

        def collected():
            while rogue.poll(50):
                replies.append(protocol.decode(rogue.recv()))
            return len(replies) >= len(garbage)

        wait_for(collected, 10, "an answer to every bad message")
        errors = [body["error"] for kind, body in replies if kind == protocol.ERROR]
        assert any("not msgpack" in e for e in errors)
        assert any("unsupported protocol version 9" in e for e in errors)
        assert any("invalid spec: task #1: field 'name' is required" in e or "field 'plugin'" in e for e in errors)
        assert any(e == "unknown job 'nope'" for e in errors)
        assert (protocol.REREGISTER, {"reason": "unknown worker, please register"}) in replies
    finally:
        rogue.close()
    assert cluster.broker.alive()
    with cluster.client() as client:
        job = client.submit([{"name": "ok", "plugin": "sim", "repeat": 3}])
        assert client.wait(job, timeout=20)["succeeded"] == 3


def test_poison_task_that_kills_its_workers_fails_after_three(make_cluster):
    cluster = make_cluster(workers={f"w{i}": {} for i in range(4)})
    with cluster.client() as client:
        job = client.submit([{"name": "poison", "plugin": "shell", "params": {"cmd": "kill -9 $PPID"}}])
        status = client.wait(job, timeout=30)
        [task] = client.results(job)
        survivors = client.workers()
    assert status["counts"] == {"failed": 1}
    assert task["attempts"] == 3 and task["error"].startswith("lost 3 workers")
    assert [h["outcome"] for h in task["history"]] == ["lost"] * 3
    assert len(survivors) == 1


def test_a_worker_that_went_silent_and_came_back_is_no_evidence_against_its_task(make_cluster):
    """With --max-lost-workers 1, counting a stopped (SIGSTOP) worker against its task would fail
    the task at once; the task must instead run elsewhere and succeed."""
    cluster = make_cluster(start=False)
    cluster.start_broker(extra_args=["--max-lost-workers", "1"])
    for worker_id in ("a", "b"):
        cluster.start_worker(worker_id)
    cluster.wait_for_workers(["a", "b"])
    with cluster.client() as client:
        job = client.submit([{"name": "slow", "plugin": "sim", "params": {"seconds": 2.0}}])
        running = task_where(client, job, lambda t: t["state"] == "running", what="the task to run")
        cluster.pause_worker(running["worker_id"])
        try:
            status = client.wait(job, timeout=30)
        finally:
            cluster.resume_worker(running["worker_id"])
        [task] = client.results(job)
    assert status["counts"] == {"succeeded": 1}, task
    assert task["worker_id"] != running["worker_id"]
    assert task["history"][0]["outcome"] == "lost" and "missing" in task["history"][0]["error"]
