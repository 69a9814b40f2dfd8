"""Metrics, anomalies, scores and load-balancer figures from a real cluster (seed scenarios 3, 5, 7, 9)."""

from __future__ import annotations

import duckdb
import pytest
import zmq

from dtf_bus import events
from dtf_bus.testing.cluster import wait_for
from tests.monitoring.conftest import call, data, eventually

pytestmark = pytest.mark.monitoring


def test_3_metrics_are_collected_and_stored_with_the_right_worker_count(monitored):
    cluster = monitored(workers={"w1": {"slots": 2}, "w2": {}, "w3": {}})
    system = eventually(
        lambda: (s := data(cluster, "/api/metrics/system"))["workers_total"] == 3 and s, what="3 workers counted"
    )
    assert system["workers_active"] == 3 and system["slots_total"] == 4
    workers = eventually(
        lambda: (
            (w := data(cluster, "/api/metrics/workers")) and all(r["cpu_percent"] is not None for r in w.values()) and w
        ),
        what="utilisation reported by every worker",
    )
    assert set(workers) == {"w1", "w2", "w3"}
    for row in workers.values():
        assert 0 <= row["cpu_percent"] <= 100 and 0 <= row["memory_percent"] <= 100
        assert row["status"] == "idle" and row["hardware"]
    with cluster.client() as client:
        job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 0.05}, "repeat": 8}])
        client.wait(job, timeout=20)
    done = eventually(lambda: (s := data(cluster, "/api/metrics/system"))["succeeded"] == 8 and s, what="8 succeeded")
    assert done["throughput"] > 0 and done["success_rate"] == 1.0 and done["queue_wait_mean"] is not None
    cluster.kill_worker("w3")
    eventually(lambda: data(cluster, "/api/metrics/system")["workers_active"] == 2, what="the killed worker to go")
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    counts = {r[0] for r in con.execute("select workers_total from metrics_system").fetchall()}
    assert 3.0 in counts
    assert con.execute("select max(succeeded) from metrics_system").fetchone()[0] == 8
    per_worker = {r[0] for r in con.execute("select distinct worker_id from metrics_worker").fetchall()}
    assert per_worker == {"w1", "w2", "w3"}


def test_5_a_burst_of_long_tasks_raises_a_queue_anomaly(monitored):
    cluster = monitored(workers={"w1": {}})
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, events.ANOMALY)
    sub.connect(cluster.metrics_endpoint)
    try:
        with cluster.client() as client:
            job = client.submit([{"name": "long", "plugin": "sim", "params": {"seconds": 1.0}, "repeat": 10}])
            found = eventually(
                lambda: data(cluster, "/api/anomalies", type="queue_wait"), timeout=15, what="a queue_wait anomaly"
            )[0]
            assert found["subject"] == "queue" and found["severity"] in ("warning", "critical")
            assert found["value"] >= found["threshold"] >= 2.0
            assert "queued" in found["explanation"] and "oldest" in found["explanation"]
            published = wait_for(
                lambda: sub.poll(100) and events.decode(sub.recv_multipart()), 5, "the anomaly on the PUB socket"
            )
            assert published[0] == "anomaly" and published[1]["type"] == "queue_wait"
            client.cancel(job)
    finally:
        sub.close()
    assert data(cluster, "/api/status")["anomalies"] >= 1
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    row = con.execute("select type, severity, subject, explanation from anomalies where type = 'queue_wait'").fetchone()
    assert row[2] == "queue" and "queued" in row[3]


def test_7_every_worker_gets_a_performance_score_between_0_and_100(monitored):
    cluster = monitored(
        workers={
            "fast": {"capabilities": ["speed=4"]},
            "plain": {},
            "flaky": {"capabilities": ["flaky=yes"]},
        }
    )
    with cluster.client() as client:
        job = client.submit(
            [
                {"name": "work", "plugin": "sim", "params": {"seconds": 0.2}, "repeat": 12},
                {
                    "name": "bad",
                    "plugin": "sim",
                    "params": {"outcome": "fail"},
                    "requires": {"flaky": "yes"},
                    "repeat": 4,
                },
            ]
        )
        client.wait(job, timeout=30)

    def scored():
        perf = data(cluster, "/api/workers/performance")
        by_id = {w["worker_id"]: w for w in perf["workers"]}
        assert set(by_id) == {"fast", "plain", "flaky"}
        assert by_id["flaky"]["failed"] == 4 and by_id["fast"]["completed"] > 0
        return perf, by_id

    perf, by_id = eventually(scored, what="scores after the job")
    assert "reliability" in perf["formula"] and perf["weights"] == {
        "reliability": 0.5,
        "speed": 0.3,
        "availability": 0.2,
    }
    for w in by_id.values():
        assert 0 <= w["score"] <= 100
        assert all(0 <= w[part] <= 1 for part in ("reliability", "speed", "availability"))
    assert by_id["flaky"]["reliability"] < by_id["plain"]["reliability"]
    assert by_id["flaky"]["score"] < by_id["fast"]["score"]
    assert by_id["fast"]["speed"] > 0.5 > by_id["plain"]["speed"]  # speed=4 runs sim tasks 4x faster


def test_9_load_balancer_metrics_and_placement_by_hardware(monitored):
    cluster = monitored(
        workers={
            "cpu": {"slots": 2},
            "gpu": {"capabilities": ["hardware=cuda"]},
            "web": {"capabilities": ["hardware=webgpu"]},
        }
    )
    with cluster.client() as client:
        job = client.submit(
            [
                {
                    "name": "gpu",
                    "plugin": "sim",
                    "params": {"seconds": 0.05},
                    "requires": {"hardware": "cuda"},
                    "repeat": 4,
                },
                {
                    "name": "web",
                    "plugin": "sim",
                    "params": {"seconds": 0.05},
                    "requires": {"hardware": "webgpu"},
                    "repeat": 3,
                },
                {"name": "any", "plugin": "sim", "params": {"seconds": 0.05}, "repeat": 6},
            ]
        )
        client.wait(job, timeout=30)
    lb = eventually(
        lambda: (b := data(cluster, "/api/metrics/load_balancer"))["results"] == 13 and b, what="13 results"
    )
    assert lb["strategy"] == "least_loaded" and lb["assignments"] == 13
    assert lb["placement_success"] == 1.0  # nothing lost
    assert 0 < lb["assignment_efficiency"] <= 1 and isinstance(lb["steals"], int) and lb["avg_queue_wait_s"] >= 0
    assert 0 < lb["fairness"] <= 1 and 0 <= lb["utilisation"] <= 1
    placed = {w: info["by_kind"] for w, info in lb["workers"].items()}
    assert placed["gpu"].get("sim:gpu") == 4 and all("sim:gpu" not in k for w, k in placed.items() if w != "gpu")
    assert placed["web"].get("sim:web") == 3 and all("sim:web" not in k for w, k in placed.items() if w != "web")
    assert sum(k.get("sim:any", 0) for k in placed.values()) == 6
    assert "cuda" in lb["workers"]["gpu"]["hardware"] and "webgpu" in lb["workers"]["web"]["hardware"]
    call(cluster, "/api/metrics/load_balancer")
