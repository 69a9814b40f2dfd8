"""The dashboard's history pages in headless Chromium: Jobs, Job, Flaky & slow, Benchmarks, read
from the broker's HTTP API after two real pytest runs on two commits of a tiny repository, and a
benchmark that regressed. Screenshots of each page are saved in the test's tmp dir; how long a
job's events take to show on the Jobs page is printed (speed claims belong in bench/)."""

from __future__ import annotations

import statistics
import sys
import textwrap
import time

import pytest
import zmq

from dtf_bus import events
from dtf_bus.testing.cluster import wait_for
from tests.integration.test_history import BENCH, V1, V2, commit, git, run

pytestmark = pytest.mark.monitoring


def history(cluster, repo) -> dict[str, object]:
    """Two pytest runs (v1, v2: a test broken, one healed, one slower, one flaky), three benchmark
    runs (the last 2x slower) and a job that cannot be placed."""
    ep = f"--dtf={cluster.endpoint}"
    jobs: dict[str, object] = {}
    commit(repo, V1, "v1")
    first = run(sys.executable, "-m", "pytest", ep, "--dtf-label=suite=tiny", cwd=repo)
    commit(repo, V2, "v2")
    second = run(sys.executable, "-m", "pytest", ep, "--dtf-label=suite=tiny", "--dtf-reruns=1", cwd=repo)
    for done in (first, second):
        assert done.returncode == 1, done.stdout + done.stderr
    jobs["v1"], jobs["v2"] = (next(w.split()[2].rstrip(":") for w in d.stdout.splitlines() if w.startswith("dtf: job "))
                              for d in (first, second))  # fmt: skip
    bench = []
    with cluster.client() as client:
        for ms in (10.0, 10.2, 20.0):
            params = {"target": "bench_mod:measure", "cwd": str(repo), "params": {"ms": ms}}
            job = client.submit([{"name": "matmul", "plugin": "python", "params": params}], name="bench")
            assert client.wait(job, timeout=30)["succeeded"] == 1
            bench.append(job)
        jobs["bench"] = bench
        jobs["stuck"] = client.submit([{"name": "typo", "plugin": "shel", "params": {"cmd": "true"}}], name="stuck")
    return jobs


def next_event(sub) -> str | None:
    return events.decode(sub.recv_multipart())[1].get("event") if sub.poll(50) else None


def test_history_pages_in_a_browser(monitored, browser, tmp_path):
    cluster = monitored(workers={"w1": {"slots": 2}, "g1": {"capabilities": ["hardware=cuda"]}})
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / ".gitignore").write_text("flaky.count\n__pycache__/\n")
    (repo / "bench_mod.py").write_text(textwrap.dedent(BENCH))
    jobs = history(cluster, repo)
    url = cluster.start_dashboard()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    # Jobs: every run with its progress, test failures and commit; newest first.
    page.goto(url + "&tab=jobs")
    shown = page.locator('[data-metric="jobs_shown"]')
    wait_for(lambda: shown.count() and shown.inner_text() == "6", 30, "six jobs on the Jobs page")
    assert page.locator(f'[data-job="{jobs["v2"]}"][data-done="true"]').count() == 1
    assert "1 failed" in page.locator(f'[data-tests="{jobs["v2"]}"]').inner_text()
    assert page.locator(f'[data-job="{jobs["stuck"]}"][data-done="false"]').count() == 1
    cells = page.locator(".dtf-jobs .slick-cell").all_inner_texts()
    assert any(c.startswith("main@") for c in cells) and "suite=tiny" in cells
    page.screenshot(path=str(tmp_path / "dashboard-jobs.png"), full_page=True)

    # A job's events reach the Jobs page (reported, not asserted).
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, events.TASK)
    sub.setsockopt(zmq.SUBSCRIBE, events.SYSTEM_METRICS)
    sub.connect(cluster.metrics_endpoint)
    appear, finish = [], []
    try:
        wait_for(lambda: sub.poll(100) and sub.recv_multipart(), 5, "the subscription to join (a metrics tick)")
        with cluster.client() as client:
            for i in range(3):
                job = client.submit([{"name": f"probe{i}", "plugin": "sim", "params": {"seconds": 0.3}}])
                wait_for(lambda: next_event(sub) == "job_submitted", 5, "the job_submitted event")
                seen = time.monotonic()
                wait_for(lambda j=job: page.locator(f'[data-job="{j}"]').count(), 5, "the job on the page", 0.005)
                appear.append(time.monotonic() - seen)
                wait_for(lambda: next_event(sub) == "succeeded", 10, "the probe's final event")
                seen = time.monotonic()
                done = f'[data-job="{job}"][data-done="true"]'
                wait_for(lambda d=done: page.locator(d).count(), 5, "the job done on the page", 0.005)
                finish.append(time.monotonic() - seen)
    finally:
        sub.close()
    print(
        f"\nevent-to-Jobs-page latency over {len(appear)} jobs: submitted -> row median "
        f"{statistics.median(appear) * 1000:.0f} ms (max {max(appear) * 1000:.0f}); finished -> done median "
        f"{statistics.median(finish) * 1000:.0f} ms (max {max(finish) * 1000:.0f})"
    )

    # Selecting a run opens it on the Job page: failing tests with tracebacks, slowest, outcome per hardware.
    page.locator(".dtf-jobs .slick-cell", has_text=str(jobs["v2"])).first.click()
    job_id = page.locator('[data-metric="job_id"]')
    wait_for(lambda: job_id.count() and job_id.inner_text() == jobs["v2"], 10, "the Job page of the v2 run")
    failing = page.locator('[data-failing-test="test_suite.py::test_breaks"]')
    wait_for(lambda: failing.count() == 1, 10, "the failing test")
    assert page.locator('[data-metric="job_failing"]').inner_text() == "1"
    traceback = page.locator('[data-traceback="test_suite.py::test_breaks"]')
    assert not traceback.is_visible()
    failing.locator("summary").click()
    wait_for(traceback.is_visible, 5, "the traceback to open")
    assert "assert 1 + 1 == 3" in traceback.inner_text() and "broken in v2" in traceback.inner_text()
    assert page.locator("[data-slowest]").first.get_attribute("data-slowest") == "test_suite.py::test_slow"
    assert "test_suite.py::test_added" in page.locator("[data-matrix]").inner_text()
    assert f"main@{git(repo, 'rev-parse', 'HEAD')[:10]}" in page.locator('[data-metric="job_commit"]').inner_text()
    page.screenshot(path=str(tmp_path / "dashboard-job.png"), full_page=True)

    # A job that cannot run shows the broker's reason.
    page.goto(url + f"&job={jobs['stuck']}")
    blocked = page.locator('[data-metric="job_blocked"]')
    wait_for(lambda: blocked.count() and blocked.inner_text() == "1", 30, "the blocked task on the Job page")
    assert "plugin=shel: no live worker has it" in page.locator("[data-blocked-task]").inner_text()
    page.screenshot(path=str(tmp_path / "dashboard-job-blocked.png"), full_page=True)

    # Flaky & slow: the test that passed on rerun; the test slower than its history allows.
    page.locator(".bk-tab", has_text="Flaky & slow").click()
    flaky = page.locator('[data-flaky="test_suite.py::test_flaky"]')
    wait_for(lambda: flaky.count() == 1, 10, "the flaky test")
    wait_for(lambda: page.locator('[data-slower="test_suite.py::test_slow"]').count() == 1, 10, "the slower test")
    page.screenshot(path=str(tmp_path / "dashboard-flaky.png"), full_page=True)

    # Benchmarks: the metric over the runs, the regression marked.
    page.locator(".bk-tab", has_text="Benchmarks").click()
    regressions = page.locator('[data-metric="bench_regressions"]')
    wait_for(lambda: regressions.count() and regressions.inner_text() == "1", 10, "the benchmark regression")
    assert page.locator(f'[data-regression="{jobs["bench"][2]}"]').count() == 1
    wait_for(lambda: any(c.is_visible() for c in page.locator("canvas").all()), 10, "the benchmark plot")
    page.screenshot(path=str(tmp_path / "dashboard-benchmarks.png"), full_page=True)
    assert not problems, "\n".join(problems)
