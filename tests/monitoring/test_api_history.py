"""The API's history endpoints on a real broker: /api/jobs (GET), /api/jobs/{id} with its report,
/api/compare, /api/flaky, /api/tests/history, /api/benchmarks; behind the token, with one-line
400s and 404s. Two runs of a one-file suite through the `pytest` plugin, a test fixed between them."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.monitoring.conftest import call, data, eventually

pytestmark = pytest.mark.api

SUITE = """
def test_ok():
    pass

def test_math():
    assert 2 * 2 == {result}, "arithmetic"
"""
ENDPOINTS = ("/api/jobs", "/api/jobs/x", "/api/compare", "/api/flaky", "/api/tests/history", "/api/benchmarks")


def run_suite(cluster, suite_dir, result: int, labels: dict[str, str]) -> str:
    (suite_dir / "test_it.py").write_text(SUITE.format(result=result))
    task = {"name": "suite", "plugin": "pytest", "params": {"targets": ["test_it.py"], "cwd": str(suite_dir)}}
    job = call(cluster, "/api/jobs", method="POST", body={"name": "api", "labels": labels, "tasks": [task]}, status=201)
    job_id = job["data"]["job_id"]
    eventually(lambda: data(cluster, f"/api/jobs/{job_id}")["done"], 30, "the suite to run")
    return job_id


def test_history_endpoints(monitored, tmp_path):
    cluster = monitored(workers={"w1": {}})
    for path in ENDPOINTS:  # the API's authentication covers them all
        request = urllib.request.Request(cluster.http_url + path)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401, path

    first = run_suite(cluster, tmp_path, 5, {"suite": "api"})
    second = run_suite(cluster, tmp_path, 4, {"suite": "api"})
    stuck = call(cluster, "/api/jobs", method="POST", body={"tasks": [{"name": "t", "plugin": "shel"}]}, status=201)
    stuck_id = stuck["data"]["job_id"]

    listed = eventually(lambda: (d := data(cluster, "/api/jobs", label="suite=api")) and len(d) == 2 and d)
    assert [j["job_id"] for j in listed] == [second, first] and listed[1]["labels"] == {"suite": "api"}
    assert eventually(lambda: data(cluster, "/api/jobs", label="suite=api")[1]["tests"]) == {"passed": 1, "failed": 1}
    assert len(data(cluster, "/api/jobs", limit=1)) == 1

    report = data(cluster, f"/api/jobs/{first}")
    assert report["meta"] == {"labels": {"suite": "api"}} and report["done"] and report["failing_total"] == 1
    (failing,) = report["failing"]
    assert failing["nodeid"] == "test_it.py::test_math" and "arithmetic" in failing["details"]
    assert {t["nodeid"] for t in report["slowest"]} == {"test_it.py::test_ok", "test_it.py::test_math"}
    assert report["matrix"]["total"] == 2 and report["run"]["labels"] == {"suite": "api"}
    blocked = eventually(lambda: data(cluster, f"/api/jobs/{stuck_id}")["blocked"])
    assert "plugin=shel: no live worker has it" in blocked[0]["reasons"][0]

    compared = data(cluster, "/api/compare", label="suite=api")
    assert (compared["a"]["job_id"], compared["b"]["job_id"]) == (first, second)
    assert [t["nodeid"] for t in compared["fixed"]] == ["test_it.py::test_math"] and not compared["regressed"]
    back = data(cluster, "/api/compare", a=second, b=first)
    assert [t["nodeid"] for t in back["new_failures"]] == ["test_it.py::test_math"] and back["regressed"]
    assert data(cluster, "/api/flaky", since="1d") == []
    runs = data(cluster, "/api/tests/history", nodeid="test_math")
    assert [r["outcome"] for r in runs["runs"]] == ["passed", "failed"] and runs["nodeid"] == "test_it.py::test_math"
    assert data(cluster, "/api/benchmarks") == {"benchmarks": [], "series": []}

    def refused(path: str, status: int, **params) -> str:
        return call(cluster, path, status=status, **params)["error"]["message"]

    assert refused("/api/jobs", 400, label="nolabel") == "label: expected KEY=VALUE, got 'nolabel'"
    assert refused("/api/jobs/nope", 404) == "unknown job 'nope'"
    assert refused("/api/compare", 400, a=first) == "a: give b too (or only b, or neither)"
    assert refused("/api/compare", 404, a="nope", b=first) == "unknown job 'nope'"
    assert "slower_relative" in refused("/api/compare", 400, slower_relative="x")
    assert refused("/api/tests/history", 400) == "nodeid: required"
    assert refused("/api/tests/history", 404, nodeid="no_such") == "no recorded runs of test 'no_such'"
    assert "since" in refused("/api/flaky", 400, since="yesterday")
    body = {"labels": {"a b": "1"}, "tasks": [{"name": "t", "plugin": "sim"}]}
    bad = call(cluster, "/api/jobs", method="POST", body=body, status=400)["error"]["message"]
    assert bad.startswith("invalid metadata: meta.labels: label key 'a b'")
