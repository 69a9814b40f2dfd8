"""Broker restarts lose nothing; drains finish work; retries back off."""

from __future__ import annotations

import os
import signal
import threading
import time

import duckdb
import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.testing.cluster import wait_for
from tests.conftest import task_where
from tests.integration.test_cli import dtf

pytestmark = pytest.mark.fault


def test_broker_sigkill_and_restart_resumes_without_loss(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    marker = cluster.workdir / "first-done"
    tasks = [
        {"name": "first", "plugin": "shell", "params": {"cmd": f"sleep 0.8; touch {marker}"}},
        {"name": "second", "plugin": "sim", "params": {"seconds": 0.1}},
        {"name": "third", "plugin": "sim", "params": {"seconds": 0.1}},
    ]
    outcome: dict = {}
    with cluster.client() as client:
        job = client.submit(tasks)
        task_where(client, job, lambda t: t["name"] == "first" and t["state"] == "running")

        def waiter() -> None:  # a client blocked in wait() across the restart
            with cluster.client() as other:
                outcome["status"] = other.wait(job, timeout=60)

        thread = threading.Thread(target=waiter)
        thread.start()
        cluster.kill_broker(signal.SIGKILL)
        # The worker finishes "first" while no broker is there to hear it.
        wait_for(marker.exists, 10, "the first task to finish during the outage")
        cluster.start_broker()
        thread.join(60)
        assert outcome["status"]["succeeded"] == 3
        results = {r["name"]: r for r in client.results(job)}
    # Kept, not rerun: the worker reported it on reconnect and delivered the result.
    assert results["first"]["attempts"] == 1 and results["first"]["worker_id"] == "w1"
    assert [r["attempts"] for r in results.values()] == [1, 1, 1]
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    assert con.execute("select count(*) from tasks where job_id = ? and state = 'succeeded'", [job]).fetchone()[0] == 3
    assert con.execute("select count(*) from attempts where task_id like ?", [f"{job}.%"]).fetchone()[0] == 3


def test_submitted_job_survives_an_immediate_broker_kill(make_cluster):
    cluster = make_cluster()
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "repeat": 5}])
    cluster.kill_broker(signal.SIGKILL)  # right after the acknowledgement: it must be on disk
    cluster.start_broker()
    cluster.start_worker("w1", slots=2)
    with cluster.client() as client:
        assert client.status(job)["total"] == 5
        assert client.wait(job, timeout=30)["succeeded"] == 5


def test_unreturned_workers_tasks_are_requeued_after_restart(make_cluster):
    cluster = make_cluster(workers={"gone": {}})
    with cluster.client() as client:
        # Long on its first attempt only, so the rerun is quick. A SIGKILLed worker cannot
        # clean up after itself, so the test stops the orphaned command by its pid.
        pidfile = cluster.workdir / "first-attempt.pid"
        cmd = f'if [ "$DTF_ATTEMPT" = 1 ]; then echo $$ > {pidfile}; exec sleep 30; fi'
        job = client.submit([{"name": "t", "plugin": "shell", "params": {"cmd": cmd}}])
        task_where(client, job, lambda t: t["state"] == "running")
    cluster.kill_broker(signal.SIGKILL)
    cluster.kill_worker("gone", signal.SIGKILL)
    wait_for(pidfile.exists, 5, "the first attempt's pid")
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    cluster.start_broker()
    cluster.start_worker("new")
    with cluster.client() as client:
        status = client.wait(job, timeout=60)
        [task] = client.results(job)
    assert status["succeeded"] == 1
    assert task["history"][0]["outcome"] == "lost" and "did not return" in task["history"][0]["error"]
    assert task["attempts"] == 2 and task["worker_id"] == "new"


class RawWorker:
    """A worker's socket driven by the test: it registers holding what the test says (what a
    broker that died had sent it) and shows what the broker sends back."""

    def __init__(self, endpoint: str, worker_id: str) -> None:
        self.worker_id = worker_id
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.got: list[tuple[str, dict]] = []

    def register(self, running: list[list]) -> None:
        body = {"worker_id": self.worker_id, "capabilities": {"hardware": ["cpu"]}, "slots": 1, "plugins": ["sim"]}
        self.sock.send(protocol.encode(protocol.REGISTER, {**body, "running": running}))
        wait_for(lambda: self.received(protocol.REGISTERED), 10, f"{self.worker_id} to be registered")

    def received(self, kind: str) -> dict | None:
        """The first message of this kind so far (heartbeating while it looks)."""
        self.sock.send(protocol.encode(protocol.HEARTBEAT, {}))
        while self.sock.poll(20):
            self.got.append(protocol.decode(self.sock.recv()))
        return next((body for k, body in self.got if k == kind), None)

    def result(self, task_id: str, attempt: int, outcome: str) -> None:
        result = {"task_id": task_id, "attempt": attempt, "outcome": outcome, "error": None, "ended_at": time.time()}
        self.sock.send(protocol.encode(protocol.TASK_RESULT, {"results": [result]}))


def test_a_restarted_broker_never_reissues_an_attempt_a_worker_holds(make_cluster):
    """The previous broker sent attempt 1 of a task to a worker and died before storing it (an
    ASSIGN goes out before its row is committed): the database says queued, attempt 1. The
    worker registers holding attempt 1 and is told to cancel it. The task must run as attempt 2:
    were 1 handed out again, the cancelled run's result would carry the live (task, attempt) and
    end the task cancelled (the chaos bench's 'lost' task)."""
    cluster = make_cluster()
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim"}])
    cluster.kill_broker(signal.SIGKILL)
    cluster.start_broker()
    task_id = f"{job}.0"
    worker = RawWorker(cluster.endpoint, "w")
    try:
        worker.register([[task_id, 1]])
        assignment = wait_for(lambda: worker.received(protocol.ASSIGN), 10, "the task to be assigned")["tasks"][0]
        assert (protocol.CANCEL, {"task_id": task_id, "attempt": 1, "reason": "superseded"}) in worker.got
        worker.result(task_id, 1, "cancelled")  # what the cancelled run reports
        worker.result(task_id, assignment["attempt"], "succeeded")
        with cluster.client() as client:
            status = client.wait(job, timeout=20)
            [task] = client.results(job)
    finally:
        worker.sock.close()
    assert status["counts"] == {"succeeded": 1}, task
    # Attempt 1 was never stored (nor is it now): history holds only what this broker handed out.
    assert assignment["attempt"] == 2 and [h["attempt"] for h in task["history"]] == [2]


def test_a_requeued_task_skips_the_attempts_workers_reported(make_cluster):
    """The database two steps behind: it says attempt 1 on worker a, while the dead broker had
    lost a and sent attempt 2 to b. b registers first, holding 2; a comes back without 1. The
    task is requeued as attempt 3, not 2, whichever of them it goes to."""
    cluster = make_cluster()
    a = RawWorker(cluster.endpoint, "a")
    b = None
    try:
        a.register([])
        with cluster.client() as client:
            job = client.submit([{"name": "t", "plugin": "sim"}])
        task_id = f"{job}.0"
        wait_for(lambda: a.received(protocol.ASSIGN), 10, "attempt 1 on a")
        cluster.stop_broker()  # stored: the database says attempt 1 on a
        cluster.start_broker()
        b = RawWorker(cluster.endpoint, "b")
        b.register([[task_id, 2]])
        a.got.clear()
        a.register([])
        assignments = []
        for worker in wait_for(lambda: [w for w in (a, b) if w.received(protocol.ASSIGN)], 10, "the requeue"):
            assignments += [t for k, body in worker.got if k == protocol.ASSIGN for t in body["tasks"]]
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.sock.close()
    assert [(t["task_id"], t["attempt"]) for t in assignments] == [(task_id, 3)]


def test_a_cancelled_result_of_a_restored_attempt_is_no_verdict(make_cluster):
    """The dead broker had superseded attempt 1 (its worker went missing) and told the worker to
    cancel it, but died before storing that: the database still says attempt 1 on the worker,
    which registers holding the cancelled run's unacknowledged result. A worker cancels only when
    told, so the result says nothing about the task: it runs again instead of ending cancelled."""
    cluster = make_cluster()
    worker = RawWorker(cluster.endpoint, "w")
    try:
        worker.register([])
        with cluster.client() as client:
            job = client.submit([{"name": "t", "plugin": "sim"}])
        task_id = f"{job}.0"
        wait_for(lambda: worker.received(protocol.ASSIGN), 10, "attempt 1")
        cluster.stop_broker()  # stored: the database says attempt 1 on w
        cluster.start_broker()
        worker.got.clear()
        worker.register([[task_id, 1]])
        worker.result(task_id, 1, "cancelled")
        with cluster.client() as client:
            heard = task_where(client, job, lambda t: t["history"][0]["outcome"] == "cancelled", what="the result")
        assert heard["state"] != "cancelled", heard
        again = wait_for(lambda: worker.received(protocol.ASSIGN), 10, "the task to run again")["tasks"][0]
        worker.result(task_id, again["attempt"], "succeeded")
        with cluster.client() as client:
            status = client.wait(job, timeout=20)
            [task] = client.results(job)
    finally:
        worker.sock.close()
    assert status["counts"] == {"succeeded": 1}, task
    assert [(h["attempt"], h["outcome"]) for h in task["history"]] == [(1, "cancelled"), (2, "succeeded")]


def test_a_second_register_on_the_same_connection_keeps_what_crossed_it(make_cluster):
    """A worker answers each REREGISTER of a burst (one per message it had sent a restarted
    broker). A REGISTER it built before an ASSIGN reached it does not list that task; over the
    same connection that is no restart: the attempt is kept, not lost against the task."""
    cluster = make_cluster()
    worker = RawWorker(cluster.endpoint, "w")
    try:
        worker.register([])
        with cluster.client() as client:
            job = client.submit([{"name": "t", "plugin": "sim"}])
            task_id = f"{job}.0"
            wait_for(lambda: worker.received(protocol.ASSIGN), 10, "attempt 1")
            worker.got.clear()
            worker.register([])  # built before the ASSIGN arrived
            [held] = client.results(job)
            assert [(h["attempt"], h["outcome"]) for h in held["history"]] == [(1, "assigned")], held
            worker.result(task_id, 1, "succeeded")
            status = client.wait(job, timeout=20)
            [task] = client.results(job)
    finally:
        worker.sock.close()
    assert status["counts"] == {"succeeded": 1} and task["attempts"] == 1


def test_dtf_drain_finishes_current_task_and_exits(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    with cluster.client() as client:
        job = client.submit([{"name": f"t{i}", "plugin": "sim", "params": {"seconds": 0.4}} for i in range(6)])
        running = task_where(client, job, lambda t: t["state"] == "running" and t["worker_id"] == "w1")
        run = dtf("drain", "w1", broker=cluster.endpoint)
        assert run.returncode == 0 and run.stdout.startswith("worker w1 draining")
        wait_for(lambda: cluster.workers["w1"].popen.poll() is not None, 15, "w1 to exit")
        assert cluster.workers["w1"].popen.returncode == 0
        assert client.wait(job, timeout=30)["succeeded"] == 6
        results = {r["task_id"]: r for r in client.results(job)}
    drained = results[running["task_id"]]
    assert drained["worker_id"] == "w1" and drained["attempts"] == 1  # finished, not requeued
    assert all(r["attempts"] == 1 for r in results.values())


def test_sigterm_drains_and_double_sigint_exits_at_once(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "long", "plugin": "sim", "params": {"seconds": 30}}])
        victim = task_where(client, job, lambda t: t["state"] == "running")["worker_id"]
        proc = cluster.workers[victim]
        proc.signal(signal.SIGINT)
        wait_for(lambda: "draining" in proc.log_path.read_text(), 10, "the first SIGINT to start a drain")
        assert proc.alive()  # draining: the 30 s task keeps running
        proc.signal(signal.SIGINT)
        wait_for(lambda: proc.popen.poll() is not None, 10, "the second SIGINT to stop the worker")
        task = task_where(client, job, lambda t: t["attempts"] == 2 and t["state"] == "running")
        assert task["worker_id"] != victim
        client.cancel(job)

    with cluster.client() as client:  # SIGTERM: finish, then exit
        survivor = next(w for w in cluster.workers if w != victim)
        job = client.submit([{"name": "short", "plugin": "sim", "params": {"seconds": 0.5}}])
        task_where(client, job, lambda t: t["state"] == "running")
        cluster.drain_worker(survivor)
        wait_for(lambda: cluster.workers[survivor].popen.poll() is not None, 15, "the drained worker to exit")
        [task] = client.results(job)
    assert task["state"] == "succeeded" and task["attempts"] == 1


def test_retries_back_off_exponentially(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    task = {"name": "flaky", "plugin": "sim", "params": {"outcome": "fail"}, "retries": 2, "retry_backoff": 0.2}
    with cluster.client() as client:
        job = client.submit([task])
        client.wait(job, timeout=30)
        [result] = client.results(job)
    history = result["history"]
    assert [h["outcome"] for h in history] == ["failed"] * 3
    gaps = [history[i + 1]["assigned_at"] - history[i]["ended_at"] for i in range(2)]
    # Jitter is in [0.5, 1.5) of 0.2 s, then of 0.4 s: these lower bounds hold by construction.
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2


def test_a_worker_back_with_thousands_of_unacknowledged_results_is_not_flooded_with_cancels(make_cluster):
    """The soak's hang: a worker that reconnected under load listed its unacknowledged results
    as held; the broker answered each one it no longer held with a CANCEL, thousands of them
    filled the connection to its high-water mark, and the REGISTERED and ASSIGN behind them were
    dropped: two tasks stayed assigned to a worker that never had them. Finished attempts are
    reported apart and never cancelled; the worker's next task reaches it."""
    cluster = make_cluster()
    worker = RawWorker(cluster.endpoint, "w")
    try:
        finished = [[f"gone{i:05d}.0", 1] for i in range(5000)]  # a released job's results
        body = {"worker_id": "w", "capabilities": {"hardware": ["cpu"]}, "slots": 1, "plugins": ["sim"]}
        worker.sock.send(protocol.encode(protocol.REGISTER, {**body, "running": [], "finished": finished}))
        wait_for(lambda: worker.received(protocol.REGISTERED), 10, "w to be registered")
        with cluster.client() as client:
            client.submit([{"name": "t", "plugin": "sim"}])
        wait_for(lambda: worker.received(protocol.ASSIGN), 10, "the task to reach the worker")
        assert not [body for kind, body in worker.got if kind == protocol.CANCEL]
    finally:
        worker.sock.close()
