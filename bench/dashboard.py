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
from dtf_bus.cluster import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


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
                finally:
                    browser.close()
            sub.close()
        finally:
            fleet.stop()
    latencies.sort()
    return {
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
        ]
    benchlib.emit(
        "Dashboard latency (PUB event -> browser DOM)",
        rows,
        {"baseline": base, "fleet": big, "machine": benchlib.machine()},
        args.json,
    )


if __name__ == "__main__":
    main()
