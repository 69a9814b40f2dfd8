"""The Bokeh dashboard in a real headless Chromium (seed scenario 10): served, rendered without
console errors, and updated when tasks run. Saves a screenshot in the test's tmp dir."""

from __future__ import annotations

import os
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from dtf_bus import events
from dtf_bus.cluster import wait_for

pytestmark = pytest.mark.monitoring

CHROMIUM = "/usr/bin/chromium"  # Debian's; bin/_bootstrap.sh installs it. Never `playwright install`.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("DTF_SKIP_BROWSER_TESTS"):
            pytest.skip("DTF_SKIP_BROWSER_TESTS is set and /usr/bin/chromium is missing")
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install chromium (bin/_bootstrap.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


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
    # The plots render: a canvas per plot, laid out with a real size.
    wait_for(lambda: page.locator("canvas").count() >= 3, 10, "three plot canvases")
    sizes = [page.locator("canvas").nth(i).bounding_box() for i in range(page.locator("canvas").count())]
    assert sum(1 for s in sizes if s and s["width"] > 100 and s["height"] > 100) >= 3
    assert wait_for(lambda: page.locator(".slick-row").count() >= 2, 10, "worker rows in the table")

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
