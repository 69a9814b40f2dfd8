"""The dashboard's history pages and layout rules as pure logic: API answers in, table columns and
HTML out; the live page's placeholder, legends and table heights."""

from __future__ import annotations

import pytest

from dtf_dashboard import bench_page, flaky_page, job_page, jobs_page
from dtf_dashboard.queue_depth import QueueThroughput
from dtf_dashboard.tables import fit
from dtf_dashboard.task_stream import TaskStream
from dtf_dashboard.workers import WorkerTable

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"


def api_job(job_id, at, counts, total, done, **extra):
    finished = sum(v for s, v in counts.items() if s not in ("queued", "assigned", "running"))
    return {"job_id": job_id, "name": "n", "submitted_at": at, "total": total, "counts": counts, "done": done,
            "finished": finished, **extra}  # fmt: skip


def test_jobs_page_rows_progress_tests_and_commit():
    jobs = [
        api_job("j2", 2.0, {"succeeded": 3, "failed": 1}, 4, True, tests={"passed": 5, "failed": 1},
                commit=SHA, branch="main", dirty=True, labels={"suite": "tiny", "ci": "1"}),
        api_job("j1", 1.0, {"queued": 2, "running": 1, "cancelled": 1}, 4, False),
    ]  # fmt: skip
    data = jobs_page.rows(jobs)
    assert data["job_id"] == ["j2", "j1"]
    assert (data["pct_ok"][0], data["pct_bad"][0], data["pct_other"][1]) == (75.0, 25.0, 25.0)
    assert data["progress"] == ["4/4 done", "1/4"] and data["done"] == [True, False]
    assert data["tests"][0] == "1 failed, 5 passed" and data["tests_failed"] == [1, 0]
    assert data["commit"] == ["main@0123456789 (dirty)", "no git"] and data["labels"][0] == "ci=1 suite=tiny"
    assert data["running"][1] == 1 and data["queued"][1] == 2


def test_jobs_page_shows_feed_news_before_the_store_has_it():
    listed = [api_job("old", 1.0, {"running": 2}, 2, False)]
    submitted = {"new": {"job_id": "new", "total": 3, "submitted_at": 5.0, "counts": {"queued": 3}}}
    merged = jobs_page.merge(listed, submitted, {"old": {"succeeded": 2}})
    assert [j["job_id"] for j in merged] == ["new", "old"]
    assert merged[1]["done"] and merged[1]["finished"] == 2 and merged[1]["counts"] == {"succeeded": 2}
    assert listed[0]["done"] is False  # the API's answer is not changed in place


def test_job_page_renders_failures_blocked_slowest_and_the_matrix():
    data = {
        "name": "pytest", "submitter": "me", "total": 3, "done": False, "counts": {"queued": 1, "succeeded": 2},
        "meta": {"commit": SHA, "branch": "main", "labels": {"suite": "tiny"}},
        "blocked": [{"tasks": ["typo"], "reasons": ["plugin=shel: no live worker has it"]}],
        "run": {"submitted_at": 1.0}, "failing_total": 1,
        "failing": [{"nodeid": "t.py::test_<b>", "outcome": "failed", "message": "AssertionError: x\nmore",
                     "details": "def test():\n>  assert 1 == 2\nE  AssertionError", "worker_id": "w1",
                     "hardware": ["cpu"], "duration_s": 0.1}],
        "failed_tasks": [{"task_id": "j.2", "name": "typo", "plugin": "shel", "state": "failed", "worker_id": None,
                          "error": "not placed within 1s"}],
        "slowest": [{"nodeid": "t.py::slow", "duration_s": 0.8, "outcome": "passed", "worker_id": "w1"}],
        "matrix": {"hardware": ["cpu", "cpu,cuda"], "rows": [{"nodeid": "t.py::x", "outcomes": ["failed", "passed"]}],
                   "total": 3},
    }  # fmt: skip
    text = job_page.render("j1", data)
    assert 'data-metric="job_id">j1<' in text and "main@0123456789" in text and "suite=tiny" in text
    assert 'data-metric="job_blocked">1<' in text and "plugin=shel: no live worker has it" in text
    assert 'data-metric="job_failing">1<' in text and 'data-failing-test="t.py::test_&lt;b&gt;"' in text
    assert "&gt;  assert 1 == 2" in text and "<b>" not in text.split("data-failing-test")[1].split("</summary>")[0]
    assert "not placed within 1s" in text and 'data-slowest="t.py::slow"' in text and "0.800s" in text
    assert "data-matrix" in text and "2 more tests" in text
    assert 'data-metric="job_failing">0<' in job_page.render("j1", {"run": {}, "counts": {}})


def test_flaky_page_lists_flaky_and_slower_tests():
    flaky = [{"nodeid": "t::f", "runs": 3, "passed": 1, "failed": 1, "passed_on_rerun": 1, "mixed": 1,
              "last_seen": 1.0, "last_outcome": "flaky"}]  # fmt: skip
    latest = {"job_id": "b", "commit": SHA, "branch": "main", "labels": {"suite": "tiny"}}
    compared = {"a": {"job_id": "a"}, "new_failures": [{}], "fixed": [],
                "slower": [{"nodeid": "t::s", "b_s": 0.8, "baseline_s": 0.01, "threshold_s": 0.11, "ratio": 80.0,
                            "runs": 1}]}  # fmt: skip
    text = flaky_page.render(flaky, latest, compared, ["oops"])
    assert 'data-flaky="t::f"' in text and 'data-metric="flaky_tests">1<' in text
    assert 'data-slower="t::s"' in text and "80.0x" in text and "1 new failure(s)" in text
    assert 'data-error="flaky">oops<' in text
    assert "no earlier run" in flaky_page.render([], latest, None, [])


def test_benchmark_series_place_runs_by_time_and_mark_regressions():
    def point(job, at, value, regression=False, commit=SHA):
        return {"job_id": job, "submitted_at": at, "commit": commit, "value": value, "regression": regression,
                "worse_by": 1.0 if regression else None}  # fmt: skip

    series = [
        {"benchmark": "mm", "params": {"n": 8}, "hardware": "cpu-a", "metric": "p50_ms", "unit": "ms",
         "points": [point("j1", 1.0, 10.0), point("j3", 3.0, 20.0, True)]},
        {"benchmark": "mm", "params": {"n": 8}, "hardware": "gpu-b", "metric": "p50_ms", "unit": "ms",
         "points": [point("j2", 2.0, 1.0, commit=None)]},
    ]  # fmt: skip
    lines, points, labels, regressions = bench_page.series_data(series)
    assert lines["xs"] == [[0, 2], [1]] and labels == {0: SHA[:7], 1: "j2", 2: SHA[:7]}
    assert points["colour"][1] == bench_page.REGRESSION and points["size"][1] > points["size"][0]
    assert [r["job_id"] for r in regressions] == ["j3"] and "cpu-a" in lines["label"][0]


def test_live_page_layout_rules():
    stream = TaskStream()
    assert not stream.figure.visible and stream.placeholder.visible  # idle: a line, not an empty box
    ev = [(0, "events.task", {"event": "running", "task_id": "t", "worker_id": "w1", "ts": 1.0}),
          (1, "events.task", {"event": "succeeded", "task_id": "t", "worker_id": "w1", "ts": 2.0})]  # fmt: skip
    stream.update(ev)
    assert stream.figure.visible and not stream.placeholder.visible and stream.figure.height == 150
    queue = QueueThroughput(None)
    for fig in (queue.depth, queue.throughput):  # legends above the plots, none on the lines
        assert [type(r).__name__ for r in fig.above] == ["Legend"]
        assert not [r for r in fig.center if type(r).__name__ == "Legend"]
    assert (fit(0, 300), fit(2, 300), fit(100, 300)) == (55, 80, 300)
    table = WorkerTable()
    two = {f"w{i}": {"worker_id": f"w{i}", "status": "idle"} for i in range(2)}
    table.update(two, force=True)
    assert table.table.height == fit(2, 300) and table.group_table.height == fit(1, 120)
