"""Dashboard: how soon an event shows in a real browser, with a big fleet beside a small one.

A broker with its HTTP API, a simulated fleet (bench/simfleet.py: DEALER sockets the broker
cannot tell from workers, each publishing its per-worker metrics every second), the Bokeh
dashboard, and Debian's headless Chromium with two pages open: the live page and the Jobs tab.

The clock starts at the event's own ``ts`` (the broker's wall clock when it published it) and
stops when the page paints the change, as the page itself saw it: a MutationObserver on every
shadow root (Bokeh draws in shadow DOM) notes the mutation that made it visible, and the time is
taken in the next animation frame (the one that paints it), so Playwright's round trips and
polling add nothing. Probes are spread over a quarter of a second by a pause between them.

The live page: a task's ``succeeded`` to the succeeded count changing, after a warm-up of three
tasks (a fresh page's first tasks bring up its task stream, one-time layout work in the browser).
The Jobs tab: a job's ``job_submitted`` to its row, and its last task's ``succeeded`` to the row
showing it done. Each figure also has its browser share: from the last WebSocket frame before the
change to the change (the rest is the dashboard server's).

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
VIEWPORT = {"width": 1400, "height": 1200}
# In each page, before Bokeh loads: when each job row first shows (and shows done), every change
# of the succeeded count, and when each WebSocket frame arrived (all Date.now(), milliseconds).
WATCH = """
(() => {
  const w = (window.__dtf = { rows: {}, done: {}, succeeded: [], ws: [], text: null });
  const Orig = window.WebSocket;
  window.WebSocket = class extends Orig {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => w.ws.push(Date.now()));
    }
  };
  // A change is stamped in the first animation frame after the mutation: the frame that paints it.
  let marks = [];
  const stamp = () => {
    const now = Date.now();
    for (const mark of marks) mark(now);
    marks = [];
  };
  const mark = (fn) => {
    if (!marks.length) requestAnimationFrame(stamp);
    marks.push(fn);
  };
  const SEL = "[data-job],[data-metric=succeeded]";
  const look = (el, deep) => {
    if (!el || el.nodeType !== 1) return;
    const found = el.matches(SEL) ? [el] : [];
    if (deep) found.push(...el.querySelectorAll(SEL));
    for (const x of found) {
      const job = x.getAttribute("data-job");
      if (job) {
        if (!(job in w.rows)) mark((now) => job in w.rows || (w.rows[job] = now));
        if (x.getAttribute("data-done") === "true" && !(job in w.done)) {
          mark((now) => job in w.done || (w.done[job] = now));
        }
      } else {
        const text = x.textContent;
        if (text !== w.text) {
          w.text = text;
          mark((now) => w.succeeded.push([now, text]));
        }
      }
    }
  };
  const seen = (records) => {
    for (const r of records) {
      look(r.target.nodeType === 1 ? r.target : r.target.parentElement, false);
      for (const n of r.addedNodes) look(n, true);
    }
  };
  const watch = (root) =>
    new MutationObserver(seen).observe(root, { subtree: true, childList: true, attributes: true, characterData: true });
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    const root = attach.call(this, init);
    watch(root);
    return root;
  };
  document.addEventListener("DOMContentLoaded", () => watch(document.documentElement));
})();
"""
WARMUP = 3  # tasks run before the probes
GAP_S = 0.25  # probes start spread over this much (more than one refresh period) after the last one


def _event(sub: zmq.Socket, wanted: str, job: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The next ``wanted`` task event (of ``job`` when given) on ``sub``, with its ``ts``."""
    found: dict[str, Any] = {}

    def arrived() -> bool:
        while sub.poll(20):
            payload = events.decode(sub.recv_multipart())[1]
            if payload.get("event") == wanted and (job is None or payload.get("job_id") == job):
                found.update(payload)
                return True
        return False

    wait_for(arrived, timeout, f"the {wanted} event")
    return found


def _browser_share(page: Any, shown_ms: float) -> float:
    """Seconds from the last WebSocket frame that arrived before ``shown_ms`` to ``shown_ms``."""
    frames = page.evaluate("(t) => window.__dtf.ws.filter((f) => f <= t)", shown_ms)
    return (shown_ms - frames[-1]) / 1000 if frames else 0.0


def _pause(i: int) -> None:
    time.sleep(GAP_S * ((i * 7) % 10) / 10)  # spreads probes over the refresh cycle, not a wait for a condition


def warm_up(page: Any, client: Any) -> None:
    """A few tasks before the probes: a fresh page's first tasks show its task stream (one-time
    layout work in the browser), which is not what the probes time."""
    client.submit([{"name": "warmup", "plugin": "sim", "repeat": WARMUP}])
    count = page.locator('[data-metric="succeeded"]')
    wait_for(lambda: count.inner_text() == str(WARMUP), 30, "the warm-up tasks on the page")
    placeholder = page.locator('[data-placeholder="task-stream"]')
    wait_for(lambda: not placeholder.is_visible(), 30, "the task stream to show")


def live_page(page: Any, client: Any, sub: zmq.Socket, probes: int) -> tuple[list[float], list[float]]:
    """A task's succeeded event to the succeeded count changing; and the browser's share of it."""
    latency, browser = [], []
    for i in range(probes):
        _pause(i)
        known = page.evaluate("window.__dtf.succeeded.length")
        job = client.submit([{"name": f"probe{i}", "plugin": "sim"}])
        ts = _event(sub, "succeeded", job)["ts"]
        wait_for(lambda k=known: page.evaluate("window.__dtf.succeeded.length") > k, 10, "the page to change", 0.02)
        shown = page.evaluate("(k) => window.__dtf.succeeded[k][0]", known)
        latency.append(shown / 1000 - ts)
        browser.append(_browser_share(page, shown))
    return latency, browser


def jobs_page(page: Any, client: Any, sub: zmq.Socket, probes: int) -> dict[str, list[float]]:
    """The Jobs tab: a job's job_submitted event to its row; its last task's succeeded event to
    the row showing it done; and the browser's share of the first."""
    found: dict[str, list[float]] = {"row": [], "done": [], "browser": []}
    for i in range(probes):
        _pause(i)
        job = client.submit([{"name": f"jobprobe{i}", "plugin": "sim", "params": {"seconds": 0.3}}])
        submitted = _event(sub, "job_submitted", job)["ts"]
        finished = _event(sub, "succeeded", job)["ts"]
        wait_for(lambda j=job: page.evaluate("(j) => j in window.__dtf.done", j), 10, "the job done", 0.02)
        row, done = page.evaluate("(j) => [window.__dtf.rows[j], window.__dtf.done[j]]", job)
        found["row"].append(row / 1000 - submitted)
        found["done"].append(done / 1000 - finished)
        found["browser"].append(_browser_share(page, row))
    return found


def _ms(values: list[float]) -> dict[str, float]:
    ranked = sorted(values)
    return {
        "median": round(benchlib.median(ranked) * 1000, 1),
        "p90": round(ranked[int(0.9 * (len(ranked) - 1))] * 1000, 1),
        "max": round(ranked[-1] * 1000, 1),
    }


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
                    context = browser.new_context(viewport=VIEWPORT)
                    context.add_init_script(WATCH)
                    page = context.new_page()
                    started = time.monotonic()
                    page.goto(url)
                    page.locator('[data-metric="succeeded"]').wait_for(timeout=60_000)
                    shown_workers = page.locator('[data-metric="workers_total"]')
                    wait_for(lambda: shown_workers.inner_text() == str(workers), 30, "the page to count the fleet")
                    load = time.monotonic() - started
                    with cluster.client() as client:
                        warm_up(page, client)
                        live, live_browser = live_page(page, client, sub, probes)
                        jobs = context.new_page()  # the live page stays open beside it, as on a desk
                        jobs.goto(url + "&tab=jobs")
                        jobs.locator("[data-job]").first.wait_for(timeout=30_000)
                        found = jobs_page(jobs, client, sub, probes)
                finally:
                    browser.close()
            sub.close()
        finally:
            fleet.stop()
    live_ms, row_ms, done_ms = _ms(live), _ms(found["row"]), _ms(found["done"])
    return {
        "workers": workers,
        "page_ready_s": round(load, 3),
        "latency_median_ms": live_ms["median"],
        "latency_p90_ms": live_ms["p90"],
        "latency_max_ms": live_ms["max"],
        "latency_browser_median_ms": _ms(live_browser)["median"],
        "jobs_page_row_median_ms": row_ms["median"],
        "jobs_page_row_p90_ms": row_ms["p90"],
        "jobs_page_row_max_ms": row_ms["max"],
        "jobs_page_row_browser_median_ms": _ms(found["browser"])["median"],
        "jobs_page_done_median_ms": done_ms["median"],
        "jobs_page_done_p90_ms": done_ms["p90"],
        "jobs_page_done_max_ms": done_ms["max"],
        "load_average": round(__import__("os").getloadavg()[0], 2),
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
            (f"{n} workers: live page, event to page, median / p90 / max (ms)",
             f"{run['latency_median_ms']:.0f} / {run['latency_p90_ms']:.0f} / {run['latency_max_ms']:.0f}"),
            (f"{n} workers: Jobs tab, submitted to row, median / p90 / max (ms)",
             f"{run['jobs_page_row_median_ms']:.0f} / {run['jobs_page_row_p90_ms']:.0f} / "
             f"{run['jobs_page_row_max_ms']:.0f}"),
            (f"{n} workers: Jobs tab, finished to done, median / p90 / max (ms)",
             f"{run['jobs_page_done_median_ms']:.0f} / {run['jobs_page_done_p90_ms']:.0f} / "
             f"{run['jobs_page_done_max_ms']:.0f}"),
            (f"{n} workers: browser's share (last frame to DOM), live / Jobs row median (ms)",
             f"{run['latency_browser_median_ms']:.0f} / {run['jobs_page_row_browser_median_ms']:.0f}"),
            (f"{n} workers: load average (1 min) at the end", run["load_average"]),
        ]  # fmt: skip
    benchlib.emit(
        "Dashboard latency (PUB event -> browser DOM)",
        rows,
        {"baseline": base, "fleet": big, "machine": benchlib.machine()},
        args.json,
    )


if __name__ == "__main__":
    main()
