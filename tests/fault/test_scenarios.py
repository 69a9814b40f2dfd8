"""The seed's ten fault-tolerance scenarios, each on its own real cluster.

Kills are deterministic (a seeded RNG picks victims), every wait is a poll with a deadline,
and every scenario ends by checking exactly-once: one final result per task, none lost.
"""

from __future__ import annotations

import random
import signal

import duckdb
import pytest

from dtf_bus.testing.cluster import wait_for
from tests.conftest import task_where

pytestmark = pytest.mark.fault

FLEET = {
    "cpu-1": {"slots": 2},
    "cpu-2": {"slots": 2},
    "gpu-1": {"capabilities": ["hardware=cuda", "memory_gb=80"]},
}


def sims(n: int, seconds: float = 0.3, **extra) -> list[dict]:
    return [{"name": f"t{i}", "plugin": "sim", "params": {"seconds": seconds}, **extra} for i in range(n)]


def assert_exactly_once(cluster, job: str, total: int) -> None:
    """After the broker stops: one row per task, all succeeded, no counted stale attempt."""
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    assert con.execute("select count(*), count(distinct task_id) from tasks where job_id = ?", [job]).fetchone() == (
        total,
        total,
    )
    assert con.execute("select state, count(*) from tasks where job_id = ? group by state", [job]).fetchall() == [
        ("succeeded", total)
    ]
    # The attempt each task counts is the last one, never a stale one.
    assert (
        con.execute(
            "select count(*) from tasks t join attempts a on a.task_id = t.task_id and a.attempt = t.attempts "
            "where t.job_id = ? and (a.stale or a.outcome <> 'succeeded')",
            [job],
        ).fetchone()[0]
        == 0
    )


def test_01_fault_tolerance_configured_at_startup(make_cluster):
    cluster = make_cluster(heartbeat_interval=0.25, heartbeat_liveness=4, dead_liveness=12)
    with cluster.client() as client:
        info = client.ping()
    assert info["heartbeat_interval"] == 0.25 and info["heartbeat_liveness"] == 4
    assert info["dead_liveness"] == 12 and info["max_lost_workers"] == 3 and info["strategy"] == "least_loaded"


def test_02_workers_register_with_capabilities(make_cluster):
    cluster = make_cluster(workers=FLEET)
    with cluster.client() as client:
        workers = {w["worker_id"]: w for w in client.workers()}
    assert set(workers) == set(FLEET)
    assert workers["gpu-1"]["hardware"] == ["cpu", "cuda"] and workers["gpu-1"]["capabilities"]["memory_gb"] == 80
    assert workers["cpu-1"]["slots"] == 2 and workers["cpu-1"]["capabilities"]["cpu_cores"] >= 1


def test_03_tasks_assigned_by_capability(make_cluster):
    cluster = make_cluster(workers=FLEET)
    tasks = [
        *sims(4, 0.05, requires={"hardware": "cuda"}),
        {"name": "big", "plugin": "sim", "requires": {"min_memory_gb": 64}},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        client.wait(job, timeout=30)
        assert {r["worker_id"] for r in client.results(job)} == {"gpu-1"}


def test_04_and_05_terminated_worker_detected_and_its_tasks_reassigned(make_cluster):
    cluster = make_cluster(workers=FLEET)
    with cluster.client() as client:
        job = client.submit(sims(4, 1.0))
        running = task_where(client, job, lambda t: t["state"] == "running" and t["worker_id"].startswith("cpu"))
        victim = running["worker_id"]
        cluster.kill_worker(victim, signal.SIGKILL)
        # 4: detected (the socket monitor sees the closed connection) and removed.
        wait_for(lambda: victim not in {w["worker_id"] for w in client.workers()}, 10, "the killed worker to go")
        # 5: its tasks run elsewhere.
        assert client.wait(job, timeout=30)["succeeded"] == 4
        moved = [r for r in client.results(job) if r["attempts"] == 2]
        assert moved and all(r["worker_id"] != victim for r in moved)
        assert all("connection closed" in r["history"][0]["error"] for r in moved)
    assert_exactly_once(cluster, job, 4)


def test_06_worker_restarted_with_same_id_recovers_and_work_continues(make_cluster):
    cluster = make_cluster(workers={"w1": {"slots": 2}, "w2": {}})
    with cluster.client() as client:
        job = client.submit(sims(8, 0.3))
        task_where(client, job, lambda t: t["state"] == "running" and t["worker_id"] == "w1")
        cluster.kill_worker("w1", signal.SIGKILL)
        cluster.start_worker("w1", slots=2)
        cluster.wait_for_workers(["w1"])
        assert client.wait(job, timeout=30)["succeeded"] == 8
        job2 = client.submit(sims(4, 0.1))
        client.wait(job2, timeout=30)
        assert "w1" in {r["worker_id"] for r in client.results(job2)}
    assert_exactly_once(cluster, job, 8)


def test_07_two_simultaneous_failures(make_cluster):
    cluster = make_cluster(workers={f"w{i}": {} for i in range(4)})
    with cluster.client() as client:
        job = client.submit(sims(8, 0.5))
        wait_for(lambda: sum(t["state"] == "running" for t in client.results(job)) == 4, 10, "4 running tasks")
        for victim in random.Random(7).sample(sorted(cluster.workers), 2):
            cluster.workers[victim].signal(signal.SIGKILL)
        assert client.wait(job, timeout=30)["succeeded"] == 8
        assert len(client.workers()) == 2
    assert_exactly_once(cluster, job, 8)


def test_08_high_capacity_worker_added_after_recovery_takes_work(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    with cluster.client() as client:
        job = client.submit(sims(24, 0.3))
        task_where(client, job, lambda t: t["state"] == "running")
        cluster.kill_worker("w1", signal.SIGKILL)
        cluster.start_worker("big", slots=8)
        assert client.wait(job, timeout=60)["succeeded"] == 24
        per_worker = [r["worker_id"] for r in client.results(job)]
    assert per_worker.count("big") > per_worker.count("w2")
    assert_exactly_once(cluster, job, 24)


def test_09_every_task_completes_despite_a_failure(make_cluster):
    cluster = make_cluster(workers={"w1": {"slots": 2}, "w2": {"slots": 2}, "w3": {"slots": 2}})
    with cluster.client() as client:
        job = client.submit(sims(10, 0.4))
        task_where(client, job, lambda t: t["state"] == "running" and t["worker_id"] == "w2")
        cluster.kill_worker("w2", signal.SIGKILL)
        status = client.wait(job, timeout=30)
    assert status["total"] == 10 and status["succeeded"] == 10
    assert_exactly_once(cluster, job, 10)


def test_10_repeated_kill_restart_cycles(make_cluster):
    ids = ["w1", "w2", "w3"]
    cluster = make_cluster(workers={i: {} for i in ids})
    rng = random.Random(1234)
    with cluster.client() as client:
        job = client.submit(sims(30, 0.15))
        for cycle in range(5):
            victim = rng.choice(ids)
            task_where(client, job, lambda t: t["state"] in ("running", "succeeded"), what=f"progress (cycle {cycle})")
            cluster.kill_worker(victim, signal.SIGKILL)
            cluster.start_worker(victim)
            cluster.wait_for_workers([victim])
        assert client.wait(job, timeout=60)["succeeded"] == 30
    assert_exactly_once(cluster, job, 30)
