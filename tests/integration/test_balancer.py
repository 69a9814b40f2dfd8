"""Placement strategies on a real cluster: stealing, capability routing, history that survives."""

from __future__ import annotations

import duckdb
import pytest

from dtf_bus.testing.cluster import wait_for
from tests.conftest import task_where

pytestmark = pytest.mark.integration


def test_high_capacity_worker_steals_prefetched_work(make_cluster):
    cluster = make_cluster(start=False, strategy="performance_based")
    cluster.start_broker(extra_args=["--prefetch", "6"])
    cluster.start_worker("small", slots=1)
    cluster.wait_for_workers(["small"])
    tasks = [{"name": "t", "plugin": "sim", "params": {"seconds": 1.0}, "repeat": 6}]
    with cluster.client() as client:
        job = client.submit(tasks)
        # All six sit on the small worker: one running, five prefetched there.
        wait_for(lambda: all(t["worker_id"] == "small" for t in client.results(job)), 10, "all on small")
        cluster.start_worker("big", slots=4, capabilities=["speed=4"])
        task_where(client, job, lambda t: t["worker_id"] == "big", what="the new worker to take work")
        assert client.wait(job, timeout=30)["succeeded"] == 6
        stats = client.balancer_stats()
        results = client.results(job)
    by_big = sum(r["worker_id"] == "big" for r in results)
    assert stats["steals"] >= 1 and by_big >= 3
    assert stats["strategy"] == "performance_based" and stats["assignments"]["big"] >= by_big
    assert all(r["attempts"] == 1 for r in results)  # moved before they started: not retries


def test_auto_prefetch_deepens_for_short_tasks_only(make_cluster):
    """By default a worker's queue follows its task durations: no-op tasks stream with several
    queued on the worker, tasks of 50 ms get one at a time (more would be hoarding)."""
    cluster = make_cluster(workers={"quick": {}})
    with cluster.client() as client:
        short = client.submit([{"name": "noop", "plugin": "sim", "params": {"seconds": 0}, "repeat": 200}])
        assert client.wait(short, timeout=30)["succeeded"] == 200
        deep = client.workers()[0]["prefetch"]
        slow = client.submit([{"name": "slow", "plugin": "sim", "params": {"seconds": 0.05}, "repeat": 20}])
        assert client.wait(slow, timeout=30)["succeeded"] == 20
        shallow = client.workers()[0]["prefetch"]
    assert deep > 1 and shallow == 1


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded", "performance_based", "affinity"])
def test_every_strategy_routes_by_capability(make_cluster, strategy):
    workers = {
        "cpu": {"slots": 2},
        "gpu": {"capabilities": ["hardware=cuda"]},
        "browser": {"capabilities": ["hardware=webgpu", "browser=chromium"]},
        "big": {"capabilities": ["memory_gb=256"]},
    }
    cluster = make_cluster(workers=workers, strategy=strategy)
    tasks = [
        {"name": "gpu", "plugin": "sim", "requires": {"hardware": "cuda"}, "repeat": 3},
        {"name": "web", "plugin": "sim", "requires": {"hardware": ["webgpu"], "browser": "chromium"}, "repeat": 2},
        {"name": "mem", "plugin": "sim", "requires": {"min_memory_gb": 128}, "repeat": 2},
        {"name": "any", "plugin": "sim", "repeat": 4},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        assert client.wait(job, timeout=30)["succeeded"] == 11
        placed = {(r["name"].split("[")[0], r["worker_id"]) for r in client.results(job)}
    assert {w for n, w in placed if n == "gpu"} == {"gpu"}
    assert {w for n, w in placed if n == "web"} == {"browser"}
    assert {w for n, w in placed if n == "mem"} == {"big"}


def test_task_history_is_persisted_and_reloaded(make_cluster):
    cluster = make_cluster(workers={"w1": {}}, strategy="performance_based")
    with cluster.client() as client:
        job = client.submit([{"name": "bench", "plugin": "sim", "params": {"seconds": 0.1}, "repeat": 3}])
        client.wait(job, timeout=30)
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    [(worker_id, key, ewma, samples)] = con.execute(
        "select worker_id, task_key, ewma_s, samples from task_durations"
    ).fetchall()
    con.close()
    assert (worker_id, key, samples) == ("w1", "bench", 3) and 0.09 < ewma < 1.0
