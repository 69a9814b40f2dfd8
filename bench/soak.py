"""Soak: a million no-op tasks through one broker; its memory stays flat and its loop responsive.

A real broker and 2 real workers (loopback, ephemeral ports). N ``sim`` tasks with
``seconds = 0`` go in J jobs, the next submitted while the last runs, so the workers never
idle between jobs. Finished jobs leave memory after ``--finished-job-ttl`` seconds (a summary of
each stays, for status requests).

Memory: the broker's RSS once the first tenth of the tasks is done (the baseline: allocators,
DuckDB's buffer pool and the interpreter are warm by then) against its RSS at the end, once the
last job has been released. The target is end <= 1.2 x baseline.

Loop latency: a second client pings the broker every ``--ping-every`` seconds throughout; a
ping's round trip is a turn of the broker's loop plus two loopback hops. Side by side, the same
pings against the idle broker before the run.

    python bench/soak.py [--tasks 1000000] [--jobs 100] [--workers 2] [--json]
"""

from __future__ import annotations

import statistics
import threading
import time

import benchlib
import psutil

from dtf_bus.client import Client


class Pinger(threading.Thread):
    """Round trips of PING on its own connection until stopped (its own Client: not shared)."""

    def __init__(self, endpoint: str, every: float) -> None:
        super().__init__(name="pinger", daemon=True)
        self.endpoint = endpoint
        self.every = every
        self.rtts: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with Client(self.endpoint, timeout=30) as client:
            while not self.stop.wait(self.every):
                start = time.perf_counter()
                client.ping()
                self.rtts.append(time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else 0.0


def pings(endpoint: str, seconds: float, every: float) -> list[float]:
    pinger = Pinger(endpoint, every)
    pinger.start()
    time.sleep(seconds)  # a measurement window, not a wait for a condition
    pinger.stop.set()
    pinger.join()
    return pinger.rtts


def main() -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--finished-job-ttl", type=float, default=2.0)
    p.add_argument("--ping-every", type=float, default=0.02)
    p.add_argument("--broker-arg", action="append", default=[], help="passed to dtf-broker (repeatable)")
    args = p.parse_args()
    per_job = args.tasks // args.jobs
    spec = [{"name": "noop", "plugin": "sim", "params": {"seconds": 0}, "repeat": per_job}]
    with benchlib.cluster() as c:
        c.start_broker(extra_args=["--finished-job-ttl", str(args.finished_job_ttl), *args.broker_arg])
        for i in range(args.workers):
            c.start_worker(f"soak-{i}")
        c.wait_for_workers(args.workers)
        broker = psutil.Process(c.broker.pid)
        idle = pings(c.endpoint, 2.0, args.ping_every)
        pinger = Pinger(c.endpoint, args.ping_every)
        rss_mb: list[float] = []  # after each tenth of the jobs
        start = time.perf_counter()
        with c.client(timeout=600) as client:
            pinger.start()
            pending = client.submit(spec, name="soak-0")
            for j in range(1, args.jobs + 1):
                following = client.submit(spec, name=f"soak-{j}") if j < args.jobs else None
                status = client.wait(pending, timeout=600)
                if status["succeeded"] != per_job:
                    raise RuntimeError(f"job {j - 1}: {status['succeeded']} of {per_job} succeeded: {status['counts']}")
                if j % max(args.jobs // 10, 1) == 0:
                    rss_mb.append(broker.memory_info().rss / 2**20)
                pending = following
            elapsed = time.perf_counter() - start
            pinger.stop.set()
            pinger.join()
            # Released: the last job's TTL has passed and the broker answers its status from the summary.
            deadline = time.monotonic() + args.finished_job_ttl + 30
            while time.monotonic() < deadline and client.ping()["tasks_in_memory"]:
                time.sleep(0.2)
            held = client.ping()["tasks_in_memory"]
            end_mb = broker.memory_info().rss / 2**20
    busy = pinger.rtts
    summary = {
        "tasks": per_job * args.jobs,
        "jobs": args.jobs,
        "workers": args.workers,
        "tasks_per_s": round(per_job * args.jobs / elapsed, 1),
        "rss_first_tenth_mb": round(rss_mb[0], 1),
        "rss_end_mb": round(end_mb, 1),
        "rss_ratio": round(end_mb / rss_mb[0], 3),
        "rss_per_tenth_mb": [round(x, 1) for x in rss_mb],
        "tasks_in_memory_at_end": held,
        "loop_ping_p50_ms": round(statistics.median(busy) * 1000, 3),
        "loop_ping_p99_ms": round(percentile(busy, 0.99) * 1000, 3),
        "loop_ping_max_ms": round(max(busy) * 1000, 3),
        "idle_ping_p50_ms": round(statistics.median(idle) * 1000, 3),
        "idle_ping_p99_ms": round(percentile(idle, 0.99) * 1000, 3),
        "pings": len(busy),
    }
    rows = [(k, v) for k, v in summary.items() if k != "rss_per_tenth_mb"]
    benchlib.emit("soak: no-op tasks through one broker", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
