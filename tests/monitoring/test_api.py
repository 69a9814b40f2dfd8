"""The HTTP API against a real broker: components start, endpoints answer, tasks are tracked,
history comes back as series (seed scenarios 1, 2, 6 and 8)."""

from __future__ import annotations

import time
import urllib.request

import duckdb
import pytest
import zmq

from dtf_bus import events
from dtf_bus.testing.cluster import wait_for
from tests.monitoring.conftest import call, data, eventually

pytestmark = [pytest.mark.monitoring, pytest.mark.api]

GET_ENDPOINTS = (
    "/api/status",
    "/api/workers",
    "/api/workers/performance",
    "/api/tasks",
    "/api/metrics/system",
    "/api/metrics/workers",
    "/api/metrics/load_balancer",
    "/api/metrics/history/system",
    "/api/metrics/history/workers/w1",
    "/api/anomalies",
    "/",
)


def test_1_components_initialise(monitored):
    cluster = monitored(workers={"w1": {}})
    status = data(cluster, "/api/status")
    assert status["endpoint"] == cluster.endpoint and status["metrics_endpoint"] == cluster.metrics_endpoint
    assert status["http"] == cluster.http_url and status["strategy"] == "least_loaded"
    eventually(lambda: data(cluster, "/api/status")["workers"] == 1, what="the worker in the status")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    for topic in (events.SYSTEM_METRICS, events.WORKER_METRICS):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(cluster.metrics_endpoint)
    seen: set[str] = set()
    try:

        def both_topics() -> bool:
            if sub.poll(100):
                seen.add(events.decode(sub.recv_multipart())[0])
            return {"metrics.system", "metrics.worker.w1"} <= seen

        wait_for(both_topics, 10, "metrics.system and metrics.worker.w1 on the PUB socket")
    finally:
        sub.close()
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    assert {"metrics_system", "metrics_worker", "anomalies"} <= tables


def test_2_every_endpoint_answers_with_the_envelope(monitored):
    cluster = monitored(workers={"w1": {}})
    for path in GET_ENDPOINTS:
        call(cluster, path)
    # Errors keep the envelope and say what is wrong.
    assert "no such endpoint" in call(cluster, "/api/nope", status=404)["error"]["message"]
    assert "unknown task" in call(cluster, "/api/tasks/nope.0", status=404)["error"]["message"]
    assert "unknown job" in call(cluster, "/api/jobs/nope", status=404)["error"]["message"]
    assert "limit" in call(cluster, "/api/tasks", status=400, limit="x")["error"]["message"]
    bad = call(
        cluster, "/api/jobs", method="POST", body={"tasks": [{"name": "a", "plugin": "sim", "retries": -1}]}, status=400
    )
    assert "invalid spec" in bad["error"]["message"] and "retries" in bad["error"]["message"]
    assert "not valid JSON" in call(cluster, "/api/jobs", method="POST", body=b"{", status=400)["error"]["message"]
    # A good submission, then Prometheus sees it.
    job = call(
        cluster, "/api/jobs", method="POST", body={"name": "j", "tasks": [{"name": "a", "plugin": "sim"}]}, status=201
    )["data"]
    assert job["total"] == 1
    eventually(lambda: data(cluster, f"/api/jobs/{job['job_id']}")["done"], what="the job to finish")

    def prometheus() -> str:
        request = urllib.request.Request(cluster.http_url + "/metrics", headers=cluster.api_headers())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return response.read().decode()

    text = eventually(
        lambda: (t := prometheus()) and 'dtf_tasks_finished_total{state="succeeded"} 1.0' in t and t,
        what="the finished task in /metrics",
    )
    assert "dtf_workers_total 1.0" in text and 'dtf_worker_score{worker_id="w1"}' in text


def test_6_a_task_is_tracked_by_id_through_its_attempts(monitored):
    cluster = monitored(workers={"w1": {}})
    body = {
        "name": "tracked",
        "tasks": [
            {"name": "slow", "plugin": "sim", "params": {"seconds": 1.0}},
            {"name": "flaky", "plugin": "sim", "params": {"outcome": "fail"}, "retries": 1},
        ],
    }
    job_id = call(cluster, "/api/jobs", method="POST", body=body, status=201)["data"]["job_id"]
    slow, flaky = f"{job_id}.0", f"{job_id}.1"
    first = data(cluster, f"/api/tasks/{slow}")  # known at once, before the store has flushed
    assert first["task_id"] == slow and first["job_id"] == job_id and first["name"] == "slow"
    assert first["state"] in ("queued", "assigned", "running")
    running = eventually(
        lambda: (t := data(cluster, f"/api/tasks/{slow}"))["state"] == "running" and t, what="the slow task to run"
    )
    assert running["worker_id"] == "w1" and running["started_at"]
    done = eventually(
        lambda: (t := data(cluster, f"/api/tasks/{flaky}"))["state"] == "failed" and len(t["history"]) == 2 and t,
        timeout=20,
        what="the flaky task to fail twice (attempts come from the store, up to one flush behind)",
    )
    assert done["attempts"] == 2
    assert [a["outcome"] for a in done["history"]] == ["failed", "failed"]
    assert all(a["worker_id"] == "w1" for a in done["history"])
    finished = eventually(
        lambda: (t := data(cluster, f"/api/tasks/{slow}"))["state"] == "succeeded" and t["history"] and t,
        what="the slow task's result",
    )
    assert finished["result"] is not None and finished["history"][0]["outcome"] == "succeeded"
    listed = data(cluster, "/api/tasks", job=job_id)
    assert {t["task_id"] for t in listed} == {slow, flaky}
    assert [t["task_id"] for t in data(cluster, "/api/tasks", job=job_id, state="failed")] == [flaky]


def test_status_shows_blocked_work_with_the_brokers_reason(monitored):
    cluster = monitored(workers={"w1": {}})
    body = [
        {"name": "typo", "plugin": "shel", "params": {"cmd": "true"}},
        {"name": "gpu", "plugin": "sim", "requires": {"hardware": "cuda"}, "repeat": 2},
    ]
    job_id = call(cluster, "/api/jobs", method="POST", body=body, status=201)["data"]["job_id"]
    status = eventually(lambda: (s := data(cluster, "/api/status"))["blocked"] and len(s["blocked"]) == 2 and s)
    by_requirement = {b["requirement"]: b for b in status["blocked"]}
    assert by_requirement["plugin=shel"]["tasks"] == 1
    assert by_requirement["plugin=shel"]["reasons"][0].startswith("plugin=shel: no live worker has it")
    assert by_requirement["plugin=sim, hardware=cuda"]["reasons"] == [
        "requires.hardware=cuda: no live worker has it (fleet has: cpu)"
    ]
    assert status["system"]["blocked"] == 3 and status["queued"] == 3
    with cluster.client() as client:
        client.cancel(job_id)
    eventually(lambda: data(cluster, "/api/status")["blocked"] == [], what="the blocked list to clear")


def test_8_history_comes_back_as_series_over_the_interval(monitored):
    cluster = monitored(workers={"w1": {}, "w2": {}})
    eventually(
        lambda: (
            len(
                data(cluster, "/api/metrics/history/system", metrics="workers_total", interval="1s", duration="30s")[
                    "series"
                ]["workers_total"]
            )
            >= 3
        ),
        timeout=15,
        what="three seconds of history",
    )
    now = time.time()
    got = data(cluster, "/api/metrics/history/system", metrics="workers_total,queued", interval="1s", duration="10s")
    assert got["interval"] == 1.0 and got["duration"] == 10.0
    series = got["series"]
    assert set(series) == {"workers_total", "queued"}
    for points in series.values():
        stamps = [ts for ts, _ in points]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert all(now - 12 <= ts <= now + 1 for ts in stamps)
        assert all(ts == int(ts) for ts in stamps)  # 1 s buckets
    assert series["workers_total"][-1][1] == 2.0
    wide = data(cluster, "/api/metrics/history/system", metrics="workers_total", interval="5s", duration="30s")
    assert len(wide["series"]["workers_total"]) <= 7
    per_worker = data(cluster, "/api/metrics/history/workers/w1", metrics="score,slots", interval="1s", duration="1m")
    assert per_worker["series"]["slots"] and per_worker["series"]["slots"][-1][1] == 1.0
    bad = call(cluster, "/api/metrics/history/system", status=400, metrics="nope")
    assert "unknown metric 'nope'" in bad["error"]["message"] and "workers_total" in bad["error"]["message"]
    assert "interval" in call(cluster, "/api/metrics/history/system", status=400, interval="fast")["error"]["message"]
    too_many = call(cluster, "/api/metrics/history/system", status=400, interval="1ms", duration="1d")
    assert "points" in too_many["error"]["message"]
