"""A real broker and real workers in subprocesses: suites run, route and land in DuckDB."""

from __future__ import annotations

import duckdb
import pytest

from dtf_bus.testing.cluster import wait_for
from tests.conftest import task_where

pytestmark = pytest.mark.integration


def test_suite_completes_with_every_result_in_duckdb(make_cluster):
    cluster = make_cluster(workers={"w1": {"slots": 2}, "w2": {}})
    tasks = [
        {"name": "sim", "plugin": "sim", "params": {"seconds": 0.05}, "repeat": 6},
        {"name": "echo", "plugin": "shell", "params": {"cmd": "echo out-$DTF_TASK_ID-$DTF_ATTEMPT-$DTF_WORKER_ID"}},
        {
            "name": "argv",
            "plugin": "shell",
            "params": {"cmd": ["sh", "-c", "echo $GREETING >&2; exit 3"], "env": {"GREETING": "hi"}},
        },
    ]
    with cluster.client() as client:
        job = client.submit(tasks, name="suite")
        status = client.wait(job, timeout=30)
        results = {r["name"]: r for r in client.results(job)}
    assert status["total"] == 8 and status["succeeded"] == 7 and status["failed"] == 1
    echo = results["echo"]
    assert echo["result"]["stdout"].strip() == f"out-{echo['task_id']}-1-{echo['worker_id']}"
    assert results["argv"]["state"] == "failed"
    assert results["argv"]["result"]["exit_code"] == 3
    assert results["argv"]["result"]["stderr"].strip() == "hi"
    assert results["argv"]["error"] == "exit code 3"
    assert {r["worker_id"] for r in results.values()} == {"w1", "w2"}

    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    rows = con.execute("select name, state, attempts, worker_id from tasks where job_id = ?", [job]).fetchall()
    assert len(rows) == 8
    assert sorted(r[1] for r in rows) == ["failed"] + ["succeeded"] * 7
    assert con.execute("select count(*) from attempts where task_id like ?", [f"{job}.%"]).fetchone()[0] == 8
    assert (
        con.execute("select json_extract(result, '$.exit_code')::INT from tasks where name='argv'").fetchone()[0] == 3
    )
    assert con.execute("select total from jobs where job_id = ?", [job]).fetchone()[0] == 8
    workers = dict(con.execute("select worker_id, slots from workers").fetchall())
    assert workers == {"w1": 2, "w2": 1}


def test_cuda_tasks_reach_only_the_cuda_worker(make_cluster):
    cluster = make_cluster(workers={"cpu1": {"slots": 2}, "gpu1": {"capabilities": ["hardware=cuda"]}})
    tasks = [
        {"name": "gpu", "plugin": "sim", "params": {"seconds": 0.02}, "requires": {"hardware": "cuda"}, "repeat": 4},
        {"name": "any", "plugin": "sim", "params": {"seconds": 0.02}, "repeat": 4},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        assert client.wait(job, timeout=30)["succeeded"] == 8
        results = client.results(job)
        workers = {w["worker_id"]: w for w in client.workers()}
    assert {r["worker_id"] for r in results if r["name"].startswith("gpu")} == {"gpu1"}
    assert workers["gpu1"]["hardware"] == ["cpu", "cuda"]
    assert workers["cpu1"]["hardware"] == ["cpu"]


def test_priority_order(make_cluster):
    cluster = make_cluster()
    tasks = [
        {"name": "low", "plugin": "sim", "priority": 0},
        {"name": "high", "plugin": "sim", "priority": 10},
        {"name": "mid", "plugin": "sim", "priority": 5},
        {"name": "high-later", "plugin": "sim", "priority": 10},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)  # queued before any worker exists
        cluster.start_worker("solo", slots=1)
        client.wait(job, timeout=30)
        results = client.results(job)
    order = [r["name"] for r in sorted(results, key=lambda r: r["started_at"])]
    assert order == ["high", "high-later", "mid", "low"]


def test_unplaceable_task_stays_queued_and_status_says_why(make_cluster):
    cluster = make_cluster(workers={"w1": {"capabilities": ["memory_gb=8"]}})
    tasks = [
        {"name": "tpu", "plugin": "sim", "requires": {"hardware": "tpu", "min_memory_gb": 64}},
        {"name": "ok", "plugin": "sim"},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        task_where(client, job, lambda t: t["name"] == "ok" and t["state"] == "succeeded")
        status = client.status(job)
        assert status["counts"] == {"queued": 1, "succeeded": 1}
        assert status["blocked"] == [
            {
                "tasks": ["tpu"],
                "reasons": [
                    "requires.hardware=tpu: no live worker has it (fleet has: cpu)",
                    "requires.min_memory_gb=64: largest live worker has 8 GB",
                ],
            }
        ]
        # A worker that can run it arrives: the task runs.
        cluster.start_worker("big", capabilities=["hardware=tpu", "memory_gb=128"])
        assert client.wait(job, timeout=30)["succeeded"] == 2


def test_cancel_job_stops_running_and_queued_tasks(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    marker = cluster.workdir / "still-running"
    tasks = [
        {"name": "long", "plugin": "shell", "params": {"cmd": f"sleep 30; touch {marker}"}},
        {"name": "queued", "plugin": "sim"},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        task_where(client, job, lambda t: t["name"] == "long" and t["state"] == "running")
        assert client.cancel(job)["cancelled"] == 2
        status = client.wait(job, timeout=10)
        assert status["counts"] == {"cancelled": 2}
        # The worker killed the command's process group and is free for new work.
        job2 = client.submit([{"name": "after", "plugin": "sim"}])
        assert client.wait(job2, timeout=10)["succeeded"] == 1
    assert not marker.exists()


def test_failed_task_is_retried_up_to_its_retries(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    tasks = [
        {"name": "flaky", "plugin": "sim", "params": {"outcome": "fail"}, "retries": 2},
        {"name": "crash", "plugin": "sim", "params": {"outcome": "crash"}},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        client.wait(job, timeout=30)
        results = {r["name"]: r for r in client.results(job)}
    assert results["flaky"]["state"] == "failed" and results["flaky"]["attempts"] == 3
    assert [h["outcome"] for h in results["flaky"]["history"]] == ["failed"] * 3
    assert results["crash"]["history"][0]["outcome"] == "crashed"
    assert "SimulatedCrash: simulated executor crash" in results["crash"]["error"]


def test_task_timeout_kills_the_process_group(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    pidfile = cluster.workdir / "child.pid"
    tasks = [
        {"name": "slow", "plugin": "shell", "timeout": 0.5, "params": {"cmd": f"sleep 60 & echo $! > {pidfile}; wait"}}
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        status = client.wait(job, timeout=20)
        result = client.results(job)[0]
    assert status["counts"] == {"timed_out": 1}
    assert result["error"] == "timed out after 0.5s"
    child = int(pidfile.read_text())
    import psutil

    wait_for(
        lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
        5,
        "the timed-out task's child to be gone",
    )


def test_events_are_published(make_cluster):
    import zmq

    from dtf_bus import events

    cluster = make_cluster(workers={"w1": {}})
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"events.task")
    sub.setsockopt(zmq.SUBSCRIBE, b"metrics.system")
    sub.connect(cluster.metrics_endpoint)
    try:
        wait_for(
            lambda: sub.poll(100) and events.decode(sub.recv_multipart())[0] == "metrics.system",
            5,
            "a metrics.system snapshot",
        )
        with cluster.client() as client:
            job = client.submit([{"name": "t", "plugin": "sim"}])
            client.wait(job, timeout=10)

        seen = []

        def job_done():
            while sub.poll(100):
                topic, payload = events.decode(sub.recv_multipart())
                seen.append((topic, payload.get("event")))
                if payload.get("event") == "job_done" and payload["job_id"] == job:
                    return True
            return False

        wait_for(job_done, 10, "the job_done event")
        assert ("events.task", "succeeded") in seen
    finally:
        sub.close()


def test_long_task_never_delays_heartbeats(make_cluster):
    """A 2 s task on a worker whose liveness window is 1 s: it must not be declared missing."""
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit(
            [
                {"name": "busy", "plugin": "sim", "params": {"seconds": 2.0}},
                {"name": "cmd", "plugin": "shell", "params": {"cmd": "sleep 1"}},
            ]
        )
        client.wait(job, timeout=30)
        results = client.results(job)
    assert [(r["state"], r["attempts"]) for r in results] == [("succeeded", 1), ("succeeded", 1)]
    assert "lost" not in cluster.broker.log_path.read_text()


def test_dag_runs_in_order_and_cancels_dependents_of_a_failure(make_cluster):
    cluster = make_cluster(workers={"w1": {"slots": 4}})
    tasks = [
        {"name": "build", "plugin": "sim", "params": {"seconds": 0.2}, "repeat": 2},
        {"name": "test", "plugin": "sim", "params": {"seconds": 0.1}, "depends_on": ["build"]},
        {"name": "broken", "plugin": "sim", "params": {"outcome": "fail"}, "depends_on": ["build[0]"]},
        {"name": "deploy", "plugin": "sim", "depends_on": ["test", "broken"]},
        {"name": "report", "plugin": "sim", "depends_on": ["deploy"]},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        status = client.status(job)
        waiting = [b["reasons"][0] for b in status["blocked"]]
        assert "waiting for dependencies: build[0], build[1]" in waiting
        client.wait(job, timeout=30)
        r = {t["name"]: t for t in client.results(job)}
    assert r["test"]["started_at"] >= max(r["build[0]"]["ended_at"], r["build[1]"]["ended_at"])
    assert r["test"]["state"] == "succeeded" and r["broken"]["state"] == "failed"
    assert r["deploy"]["state"] == "cancelled" and r["deploy"]["error"] == "dependency 'broken' failed"
    assert r["report"]["state"] == "cancelled" and r["report"]["error"] == "dependency 'deploy' cancelled"
    assert r["deploy"]["history"] == [] and r["report"]["history"] == []  # never ran


def test_dependency_cycle_rejected_at_submit(make_cluster, tmp_path):
    from tests.integration.test_cli import dtf

    cluster = make_cluster()
    spec = tmp_path / "cycle.toml"
    spec.write_text(
        '[[tasks]]\nname = "a"\nplugin = "sim"\ndepends_on = ["b"]\n'
        '[[tasks]]\nname = "b"\nplugin = "sim"\ndepends_on = ["a"]\n'
    )
    run = dtf("submit", str(spec), broker=cluster.endpoint)
    assert run.returncode == 2
    assert run.stderr.strip() == "dtf submit: invalid spec: dependency cycle among tasks: a, b"
