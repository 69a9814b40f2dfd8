"""Throughput: no-op tasks end to end through dtf, beside a raw pyzmq LRU broker in the same run.

dtf: a real broker process and 2 real worker processes (LocalCluster, loopback, ephemeral
ports); one job of N ``sim`` tasks with ``seconds = 0`` is submitted and waited for. The clock
stops only when every result is durable: the broker is then stopped with SIGTERM, which makes
the store write its last batch and close the DuckDB file, and the file is checked to hold N
succeeded tasks. So ``dtf_tasks_per_s`` includes validation, placement, the worker's executor
thread, results, events and the DuckDB writes.

Baseline: :mod:`lru_broker` (the zguide load-balancing broker, msgpack payloads) doing the same
client -> broker -> worker -> broker -> client round trips with the same number of workers.
Rounds alternate between the two so machine noise hits both; medians are reported.

    python bench/throughput.py [--tasks 20000] [--workers 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import benchlib
import duckdb
import lru_broker


def noop_tasks(n: int) -> list[dict[str, Any]]:
    return [{"name": "noop", "plugin": "sim", "params": {"seconds": 0}, "repeat": n}]


def run_dtf(tasks: int, workers: int, timeout: float, prefetch: int = 0) -> dict[str, float]:
    """One dtf round; returns tasks/s to all-done and to all-durable."""
    with benchlib.cluster() as c:
        c.start_broker(extra_args=["--prefetch", str(prefetch)] if prefetch else None)
        for i in range(workers):
            c.start_worker(f"bench-{i}")
        c.wait_for_workers(workers)
        with c.client(timeout=timeout) as client:
            warm = client.submit(noop_tasks(min(tasks, 100)), name="warmup")
            client.wait(warm, timeout=timeout)
            start = time.perf_counter()
            job = client.submit(noop_tasks(tasks), name="throughput")
            status = client.wait(job, timeout=timeout)
            done = time.perf_counter()
        c.stop_broker()  # SIGTERM: the store flushes its last batch and closes the file
        durable = time.perf_counter()
        if status["succeeded"] != tasks:
            raise RuntimeError(f"dtf: {status['succeeded']} of {tasks} tasks succeeded: {status['counts']}")
        con = duckdb.connect(str(c.db), read_only=True)
        try:
            (stored,) = con.execute(
                "SELECT count(*) FROM tasks WHERE job_id = ? AND state = 'succeeded' AND result IS NOT NULL", [job]
            ).fetchone()
        finally:
            con.close()
        if stored != tasks:
            raise RuntimeError(f"dtf: only {stored} of {tasks} results are in DuckDB after shutdown")
    return {"done": tasks / (done - start), "durable": tasks / (durable - start)}


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20_000, help="tasks per round (default 20000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--rounds", type=int, default=benchlib.DEFAULT_ROUNDS, help="alternating rounds (default 3)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a round after this many seconds")
    p.add_argument(
        "--prefetch", type=int, default=0, help="also run dtf with the broker's --prefetch N (tasks queued on workers)"
    )
    args = p.parse_args(argv)
    if args.tasks < 1 or args.workers < 1 or args.rounds < 1:
        p.error("--tasks, --workers and --rounds must be positive")

    dtf_done: list[float] = []
    dtf_durable: list[float] = []
    raw: list[float] = []
    prefetched: list[float] = []
    for _ in range(args.rounds):
        raw.append(lru_broker.run(args.tasks, args.workers, args.timeout))
        r = run_dtf(args.tasks, args.workers, args.timeout)
        dtf_done.append(r["done"])
        dtf_durable.append(r["durable"])
        if args.prefetch:
            prefetched.append(run_dtf(args.tasks, args.workers, args.timeout, args.prefetch)["durable"])
    dtf, baseline = benchlib.median(dtf_durable), benchlib.median(raw)
    summary = {
        "bench": "throughput",
        "tasks": args.tasks,
        "workers": args.workers,
        "rounds": args.rounds,
        "dtf_tasks_per_s": round(dtf, 1),
        "dtf_done_tasks_per_s": round(benchlib.median(dtf_done), 1),
        "raw_zmq_tasks_per_s": round(baseline, 1),
        "ratio": round(dtf / baseline, 3),
        "machine": benchlib.machine(),
    }
    if args.prefetch:
        summary["prefetch"] = args.prefetch
        summary["dtf_prefetch_tasks_per_s"] = round(benchlib.median(prefetched), 1)
        summary["prefetch_ratio"] = round(summary["dtf_prefetch_tasks_per_s"] / baseline, 3)
    rows = [
        ("tasks x rounds", f"{args.tasks:,} x {args.rounds}"),
        ("workers", args.workers),
        ("raw pyzmq LRU (tasks/s)", baseline),
        ("dtf, all done (tasks/s)", summary["dtf_done_tasks_per_s"]),
        ("dtf, all durable (tasks/s)", dtf),
        ("ratio dtf / raw", f"{summary['ratio']:.3f}"),
    ]
    if args.prefetch:
        rows += [
            (f"dtf --prefetch {args.prefetch}, durable (tasks/s)", summary["dtf_prefetch_tasks_per_s"]),
            ("ratio with prefetch / raw", f"{summary['prefetch_ratio']:.3f}"),
        ]
    benchlib.emit("throughput: no-op tasks end to end, median of rounds", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
