"""Dashboard: how soon a finished task shows in a real browser, with a big fleet beside a small one.

A broker with its HTTP API, a simulated fleet (bench/simfleet.py: DEALER sockets the broker
cannot tell from workers, each publishing its per-worker metrics every second), the Bokeh
dashboard, and Debian's headless Chromium. Each probe submits one task and times the gap from
its ``succeeded`` event on the PUB socket to the succeeded count changing on the page. The same
run first measures a small fleet as the baseline, then the big one.

    python bench/dashboard.py [--workers 250] [--baseline-workers 4] [--probes 20] [--json]
"""

from __future__ import annotations

import time
from typing import Any

import benchlib
import zmq
from simfleet import Fleet

from dtf_bus import events
from dtf_bus.testing.cluster import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _next_event(sub: zmq.Socket) -> str | None:
    return sub.poll(50) and events.decode(sub.recv_multipart())[1].get("event")


def jobs_page(page: Any, client: Any, sub: zmq.Socket, probes: int) -> tuple[list[float], list[float]]:
    """The Jobs tab: from a job's job_submitted event to its row, and from its last task's
    succeeded event to the row showing it done."""
    appear, done = [], []
    for i in range(probes):
        job = client.submit([{"name": f"jobprobe{i}", "plugin": "sim", "params": {"seconds": 0.3}}])
        wait_for(lambda: _next_event(sub) == "job_submitted", 10, "the job_submitted event")
        seen = time.monotonic()
        wait_for(lambda j=job: page.locator(f'[data-job="{j}"]').count(), 10, "the job's row", 0.005)
        appear.append(time.monotonic() - seen)
        wait_for(lambda: _next_event(sub) == "succeeded", 10, "the job's task to succeed")
        seen = time.monotonic()
        wait_for(lambda j=job: page.locator(f'[data-job="{j}"][data-done="true"]').count(), 10, "done", 0.005)
        done.append(time.monotonic() - seen)
    return appear, done


def measure(workers: int, probes: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with benchlib.cluster(http="127.0.0.1:0", heartbeat_interval=1.0) as cluster:
        cluster.start_broker()
        fleet = Fleet(cluster.endpoint, workers, processes=2)
        try:
            fleet.register()
            cluster.wait_for_workers(workers, timeout=60)
            url = cluster.start_dashboard()
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, events.TASK)
            sub.connect(cluster.metrics_endpoint)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1200})
                    started = time.monotonic()
                    page.goto(url)
                    succeeded = page.locator('[data-metric="succeeded"]')
                    succeeded.wait_for(timeout=60_000)
                    shown_workers = page.locator('[data-metric="workers_total"]')
                    wait_for(lambda: shown_workers.inner_text() == str(workers), 30, "the page to count the fleet")
                    load = time.monotonic() - started
                    latencies = []
                    with cluster.client() as client:
                        for i in range(probes):
                            before = succeeded.inner_text()
                            client.submit([{"name": f"probe{i}", "plugin": "sim"}])
                            wait_for(
                                lambda: (
                                    sub.poll(50) and events.decode(sub.recv_multipart())[1].get("event") == "succeeded"
                                ),
                                10,
                                "the probe's final event",
                            )
                            seen = time.monotonic()
                            wait_for(lambda b=before: succeeded.inner_text() != b, 10, "the page to change", 0.005)
                            latencies.append(time.monotonic() - seen)
                        jobs = browser.new_page(viewport={"width": 1400, "height": 1200})
                        jobs.goto(url + "&tab=jobs")
                        jobs.locator("[data-job]").first.wait_for(timeout=30_000)
                        appear, done = jobs_page(jobs, client, sub, probes)
                finally:
                    browser.close()
            sub.close()
        finally:
            fleet.stop()
    latencies.sort()
    appear.sort()
    done.sort()
    return {
        "jobs_page_row_median_ms": round(benchlib.median(appear) * 1000, 1),
        "jobs_page_row_max_ms": round(appear[-1] * 1000, 1),
        "jobs_page_done_median_ms": round(benchlib.median(done) * 1000, 1),
        "jobs_page_done_max_ms": round(done[-1] * 1000, 1),
        "workers": workers,
        "page_ready_s": round(load, 3),
        "latency_median_ms": round(benchlib.median(latencies) * 1000, 1),
        "latency_p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))] * 1000, 1),
        "latency_max_ms": round(latencies[-1] * 1000, 1),
    }


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=250)
    p.add_argument("--baseline-workers", type=int, default=4)
    p.add_argument("--probes", type=int, default=20)
    args = p.parse_args()
    base = measure(args.baseline_workers, args.probes)
    big = measure(args.workers, args.probes)
    rows = []
    for run in (base, big):
        n = run["workers"]
        rows += [
            (f"{n} workers: page ready (s)", run["page_ready_s"]),
            (f"{n} workers: event to page, median (ms)", run["latency_median_ms"]),
            (f"{n} workers: event to page, p90 (ms)", run["latency_p90_ms"]),
            (f"{n} workers: event to page, max (ms)", run["latency_max_ms"]),
            (f"{n} workers: Jobs tab, submitted to row, median (ms)", run["jobs_page_row_median_ms"]),
            (f"{n} workers: Jobs tab, finished to done, median (ms)", run["jobs_page_done_median_ms"]),
            (f"{n} workers: Jobs tab, worst (ms)", max(run["jobs_page_row_max_ms"], run["jobs_page_done_max_ms"])),
        ]
    benchlib.emit(
        "Dashboard latency (PUB event -> browser DOM)",
        rows,
        {"baseline": base, "fleet": big, "machine": benchlib.machine()},
        args.json,
    )


if __name__ == "__main__":
    main()
