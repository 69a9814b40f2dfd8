"""The Bokeh dashboard in a real headless Chromium (seed scenario 10): served, rendered without
console errors, and updated when tasks run. Saves a screenshot in the test's tmp dir."""

from __future__ import annotations

import statistics
import time
import urllib.request

import pytest
import zmq

from dtf_bus import events
from dtf_bus.testing.cluster import wait_for

pytestmark = pytest.mark.monitoring


def sized_canvases(page) -> list[dict]:
    """The bounding boxes of the plots drawn with a real size (a hidden tab's or plot's have none)."""
    boxes = [page.locator("canvas").nth(i).bounding_box() for i in range(page.locator("canvas").count())]
    return [b for b in boxes if b and b["width"] > 100 and b["height"] > 100]


def test_10_dashboard_is_served_and_renders_live_data(monitored, browser, tmp_path):
    cluster = monitored(workers={"cpu": {"slots": 2}, "gpu": {"capabilities": ["hardware=cuda"]}})
    url = cluster.start_dashboard()
    with urllib.request.urlopen(url, timeout=10) as response:
        page_html = response.read().decode()
    assert response.status == 200 and "<html" in page_html.lower() and "bokeh" in page_html.lower()

    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url)
    succeeded = page.locator('[data-metric="succeeded"]')  # Playwright's CSS pierces Bokeh's shadow DOM
    succeeded.wait_for(timeout=30_000)
    workers = page.locator('[data-metric="workers_total"]')
    wait_for(lambda: workers.inner_text() == "2", 10, "the page to count 2 workers")
    # The plots render: a canvas per plot, laid out with a real size; the task stream, idle, is a placeholder.
    wait_for(lambda: len(sized_canvases(page)) >= 2, 10, "the queue and throughput plots")
    placeholder = page.locator('[data-placeholder="task-stream"]')
    assert placeholder.is_visible() and (placeholder.bounding_box() or {}).get("height", 999) < 80
    assert wait_for(lambda: page.locator(".slick-row").count() >= 2, 10, "worker rows in the table")
    # No blank box under the tables: as tall as their rows, the anomaly list right below.
    tables, below = page.locator(".dtf-workers").bounding_box(), page.locator(".dtf-anomalies").bounding_box()
    assert tables and below and 0 <= below["y"] - (tables["y"] + tables["height"]) < 30, (tables, below)
    assert tables["height"] < 250, tables  # a title, 2 group rows and 2 worker rows, not 300 px of table

    before = int(succeeded.inner_text().replace("-", "0"))
    with cluster.client() as client:
        job = client.submit(
            [
                {"name": "unit", "plugin": "sim", "params": {"seconds": 0.1}, "repeat": 6},
                {"name": "gpu", "plugin": "sim", "params": {"seconds": 0.2}, "requires": {"hardware": "cuda"}},
            ]
        )
        client.wait(job, timeout=30)
    wait_for(lambda: succeeded.inner_text() == str(before + 7), 10, "the succeeded count to change on the page")

    def done_per_worker() -> dict[str, int]:
        rows = [r.split("\n") for r in page.locator(".slick-row").all_inner_texts()]
        return {r[0]: int(r[-2]) for r in rows if len(r) > 2 and r[1] in ("idle", "busy")}

    wait_for(lambda: sum(done_per_worker().values()) == before + 7, 10, "the worker table to count the tasks")
    # Tasks ran: the task stream replaces its placeholder, one row per worker.
    wait_for(lambda: len(sized_canvases(page)) >= 3, 10, "the task stream plot")
    assert not placeholder.is_visible()

    # How long from a task's final event on the PUB socket to the number on the page (reported, not asserted:
    # speed claims belong in bench/).
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, events.TASK)
    sub.setsockopt(zmq.SUBSCRIBE, events.SYSTEM_METRICS)
    sub.connect(cluster.metrics_endpoint)
    latencies = []
    try:
        wait_for(lambda: sub.poll(100) and sub.recv_multipart(), 5, "the subscription to join (a metrics tick)")
        with cluster.client() as client:
            for i in range(5):
                shown = int(succeeded.inner_text())
                client.submit([{"name": f"probe{i}", "plugin": "sim"}])
                wait_for(
                    lambda: sub.poll(50) and events.decode(sub.recv_multipart())[1].get("event") == "succeeded",
                    10,
                    "the probe's final event",
                )
                seen = time.monotonic()
                wait_for(lambda s=shown: succeeded.inner_text() == str(s + 1), 5, "the probe on the page", 0.005)
                latencies.append(time.monotonic() - seen)
    finally:
        sub.close()
    print(
        f"\nevent-to-browser latency over {len(latencies)} probes: median {statistics.median(latencies) * 1000:.0f} ms,"
        f" max {max(latencies) * 1000:.0f} ms"
    )
    throughput = page.locator('[data-metric="throughput"]')  # set by a metrics tick after the tasks
    wait_for(lambda: throughput.inner_text() not in ("-", "0.00/s"), 10, "a metrics tick with the tasks")
    # Work no live worker can run is shown as blocked, with the broker's reason, not as a queue to drain.
    with cluster.client() as client:
        typo = client.submit([{"name": "typo", "plugin": "shel", "params": {"cmd": "true"}}])
        blocked = page.locator('[data-metric="blocked"]')
        wait_for(lambda: blocked.count() and blocked.inner_text() == "1", 10, "the blocked panel")
        assert "plugin=shel: no live worker has it" in page.locator("[data-blocked]").inner_text()
        shot = tmp_path / "dashboard-blocked.png"
        page.screenshot(path=str(shot), full_page=True)
        client.cancel(typo)
    wait_for(lambda: blocked.count() == 0 or not blocked.is_visible(), 10, "the blocked panel to go")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not problems, "\n".join(problems)
