"""Open jobs, following a job's finished tasks, and test history: what `pytest --dtf` is built on."""

from __future__ import annotations

import time

import duckdb
import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.client import ClientError
from dtf_bus.testing.cluster import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.api]


def sim(name: str, seconds: float = 0.0, **extra) -> dict:
    return {"name": name, "plugin": "sim", "params": {"seconds": seconds}, **extra}


def test_an_open_job_takes_tasks_until_closed(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([sim("a")], keep_open=True)
        wait_for(lambda: client.status(job)["counts"].get("succeeded") == 1, 20, "a to finish")
        assert client.status(job)["done"] is False  # open: more may come
        assert client.submit([sim("b"), sim("c")], job_id=job, keep_open=True) == job
        with pytest.raises(ClientError, match="duplicate name"):
            client.submit([sim("a")], job_id=job, keep_open=True)
        assert client.close_job(job)["job_id"] == job
        status = client.wait(job, timeout=30)
        assert status["done"] and status["total"] == 3 and status["succeeded"] == 3
        with pytest.raises(ClientError, match="is closed"):
            client.submit([sim("d")], job_id=job)
        assert [t["task_id"] for t in client.results(job)] == [f"{job}.0", f"{job}.1", f"{job}.2"]


def test_follow_streams_finished_tasks_in_order_with_a_long_poll(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([sim("slow", 0.6), sim("fast", 0.0, depends_on=["slow"])])
        started = time.monotonic()
        first = client.follow(job, since=0, wait=3.0)
        assert [t["name"] for t in first["tasks"]] == ["slow"]
        assert 0.3 < time.monotonic() - started < 2.5  # answered when slow finished, not at the deadline
        seen = first["tasks"]
        cursor = first["next"]
        while True:
            page = client.follow(job, since=cursor, wait=3.0, status=True)
            seen += page["tasks"]
            cursor = page["next"]
            if page["done"]:
                break
        assert [t["name"] for t in seen] == ["slow", "fast"]
        assert page["counts"] == {"succeeded": 2} and page["unplaceable"] == []
        assert seen[0]["state"] == "succeeded" and "result" in seen[0]
        again = client.follow(job, since=cursor, wait=0.5)
        assert again["tasks"] == [] and again["done"]  # at once: the job is over


def test_follow_names_tasks_no_live_worker_can_run(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([sim("here"), sim("nowhere", requires={"hardware": "cuda"})])
        page = client.follow(job, since=0, wait=0, status=True)
        assert page["unplaceable"] == [f"{job}.1"]
        assert any("cuda" in reason for block in page["blocked"] for reason in block["reasons"])
        started = time.monotonic()
        nothing = client.follow(job, since=1, wait=0.4)  # only 'here' can finish
        assert nothing["tasks"] == [] and time.monotonic() - started >= 0.35


def test_test_history_of_a_rootdir(make_cluster, tmp_path):
    """Rows of the `tests` shape land in test_results with the task's rootdir, reruns as flaky."""
    cluster = make_cluster(workers={"w1": {}})
    rootdir = str(tmp_path / "suite")

    def report(name: str, tests: list[dict], rerun: bool = False) -> dict:
        params = {"seconds": 0, "result": {"tests": tests}, "rootdir": rootdir}
        if rerun:
            params["rerun"] = True
        return {"name": name, "plugin": "sim", "params": params}

    with cluster.client() as client:
        runs = [
            [{"nodeid": "t.py::a", "outcome": "failed", "duration": 2.0}, {"nodeid": "t.py::b", "outcome": "passed"}],
            [{"nodeid": "t.py::a", "outcome": "passed", "duration": 4.0}, {"nodeid": "t.py::b", "outcome": "error"}],
        ]
        for index, tests in enumerate(runs):
            job = client.submit([report(f"r{index}", tests)])
            client.wait(job, timeout=30)
        flaky = client.submit([report("again", [{"nodeid": "t.py::c", "outcome": "passed"}], rerun=True)])
        client.wait(flaky, timeout=30)

        wait_for(lambda: client.test_history(rootdir)["last_failed"] == ["t.py::b"], 10, "the history to be stored")
        found = client.test_history(rootdir)
        assert found["durations"]["t.py::a"] == pytest.approx(3.0)
        assert client.test_history(str(tmp_path / "other")) == {"last_failed": [], "durations": {}}
    cluster.stop()  # the broker owns the file while it runs
    with duckdb.connect(str(cluster.db), read_only=True) as con:
        rows = con.execute("SELECT nodeid, outcome, rootdir FROM test_results WHERE nodeid = 't.py::c'").fetchall()
    assert rows == [("t.py::c", "flaky", rootdir)]  # passed when run again: flaky


def test_a_dependency_listed_after_its_dependent(make_cluster):
    """c depends on b, b listed later: used to fail with 'internal error handling submit'."""
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([sim("c", depends_on=["b"]), sim("a"), sim("b", depends_on=["a"])])
        assert client.wait(job, timeout=30)["succeeded"] == 3
        order = sorted(client.results(job), key=lambda t: t["ended_at"])
        assert [t["name"] for t in order] == ["a", "b", "c"]


def test_a_released_job_is_read_back_off_the_loop(make_cluster):
    """A job that left memory is read from DuckDB on the archive thread: a ping sent right after
    a results request about it is answered first, and the results and follow still come. Its
    status stays in memory as a summary: answered in turn, with no DuckDB read."""
    cluster = make_cluster(start=False)
    cluster.start_broker(extra_args=["--finished-job-ttl", "0"])
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    with cluster.client(timeout=30) as client:
        job = client.submit([sim("a"), sim("b", depends_on=["a"])])
        client.wait(job, timeout=30)
        big = client.submit([sim("x", requires={"hardware": "nowhere"}, repeat=20_000)])
        client.cancel(big)
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(cluster.endpoint)
        try:

            def answer_order(kind: str) -> list[int]:
                sock.send(protocol.encode(kind, {"req": 1, "job_id": big}))
                sock.send(protocol.encode(protocol.PING, {"req": 2}))
                order = []
                while len(order) < 2:
                    assert sock.poll(30_000), "no answer"
                    order.append(protocol.decode(sock.recv())[1]["req"])
                return order

            # The TTL is 0: released at the broker's next tick. Then the results wait for DuckDB;
            # the ping does not.
            wait_for(lambda: answer_order(protocol.RESULTS) == [2, 1], 10, "results read off the loop", interval=0.2)
            assert answer_order(protocol.STATUS) == [1, 2]
        finally:
            sock.close()
        assert client.status(big)["counts"] == {"cancelled": 20_000}
        assert [t["name"] for t in client.follow(job, since=0, wait=0)["tasks"]] == ["a", "b"]
        with pytest.raises(ClientError, match="unknown job 'nope'"):
            client.status("nope")
