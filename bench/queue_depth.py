"""Queue depth: 100,000 queued tasks with mixed requirements; does placement stay flat as it grows?

A real broker process with no workers takes jobs of mixed requirements (hardware any-of,
minimum memory, exact capabilities, priorities) until 100,000 tasks wait. At each checkpoint
of queue depth it records:

- submit rate: tasks/s through ``Client.submit`` (client and broker validation, queueing and
  the store rows included);
- end-to-end placement: a few simulated workers (:mod:`simfleet`) that can run everything
  register and answer ``--sample`` tasks; time per placed task = (last result - first assign)
  / sample. Afterwards they unregister (the few tasks they held go back to the queue);
- in-process placement: ``dtf_bus.broker.scheduler.Scheduler.place`` on a queue of the same depth
  and mix, microseconds per placed task, without the network;
- the broker's resident memory.

Flat means the last checkpoint's time per task is close to the first's; ``growth`` is that
ratio (1.0 = perfectly flat; a linear scan would grow with the depth, here up to 100x).

    python bench/queue_depth.py [--tasks 100000] [--job-size 10000] [--sample 2000] [--json]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import benchlib
import simfleet

from dtf_bus.balancer import load as load_strategy
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.task import Task
from dtf_bus.testing.cluster import wait_for

# The mix: what a mixed fleet's suites ask for. Every simulated worker can run all of them.
REQUIREMENTS: list[dict[str, Any]] = [
    {},
    {"hardware": "cpu"},
    {"hardware": ["cuda", "rocm"], "min_memory_gb": 16},
    {"hardware": "cuda", "gpu_model": "A100"},
    {"browser": "chromium"},
    {"min_memory_gb": 64},
    {"hardware": ["cpu"], "min_memory_gb": 8, "os": "linux"},
]
CAPABLE = {
    "hardware": ["cpu", "cuda", "browser"],
    "memory_gb": 256,
    "gpu_model": "A100",
    "browser": "chromium",
    "os": "linux",
}


def mixed_tasks(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"t{i}",
            "plugin": "sim",
            "params": {"seconds": 0},
            "requires": REQUIREMENTS[i % len(REQUIREMENTS)],
            "priority": i % 4,
        }
        for i in range(start, start + n)
    ]


def checkpoints(total: int) -> list[int]:
    marks = [m for m in (1_000, 10_000, 25_000, 50_000, 100_000) if m < total]
    return [*marks, total]


def place_in_process(depth: int, placements: int, workers: int = 8) -> float:
    """Microseconds per task placed by the scheduler itself on a queue of ``depth`` tasks."""
    registry = Registry()
    strategy = load_strategy("least_loaded")
    scheduler = Scheduler(registry, strategy)
    for i in range(workers):
        w = WorkerInfo(f"w{i}", f"peer{i}".encode(), dict(CAPABLE), 1, frozenset({"sim"}))
        registry.add(w)
        strategy.add_worker(w)
    for i, spec in enumerate(mixed_tasks(0, depth + placements)):
        task = Task(f"j.{i}", "j", spec["name"], "sim", spec["params"], spec["requires"], spec["priority"], None, 0, i)
        scheduler.enqueue(task)
    placed = 0
    elapsed = 0.0
    while placed < placements:
        start = time.perf_counter()
        batch = scheduler.place()
        elapsed += time.perf_counter() - start
        for task, worker in batch:
            task.state = task.state.ASSIGNED  # what the broker's _move does; the heap drops it
            worker.inflight.clear()
        placed += len(batch)
        if not batch:
            break
    return 1e6 * elapsed / max(placed, 1)


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000, help="tasks queued in all (default 100000)")
    p.add_argument("--job-size", type=int, default=10_000, help="tasks per submitted job (default 10000)")
    p.add_argument("--sample", type=int, default=2000, help="tasks placed at each checkpoint (default 2000)")
    p.add_argument("--workers", type=int, default=8, help="simulated workers placing the sample (default 8)")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if min(args.tasks, args.job_size, args.sample, args.workers) < 1:
        p.error("--tasks, --job-size, --sample and --workers must be positive")

    points: list[dict[str, Any]] = []
    with benchlib.cluster() as c:
        c.start_broker()
        meter = benchlib.CpuMeter(c.broker.pid)
        rss_empty = meter.rss_mb()
        with (
            c.client(timeout=args.timeout) as client,
            simfleet.Fleet(c.endpoint, args.workers, processes=1, capabilities=CAPABLE) as fleet,
        ):
            submitted = submit_s = 0.0
            for depth in checkpoints(args.tasks):
                while submitted < depth:
                    n = int(min(args.job_size, depth - submitted))
                    batch = mixed_tasks(int(submitted), n)
                    start = time.perf_counter()
                    client.submit(batch, name=f"queue-{int(submitted)}")
                    submit_s += time.perf_counter() - start
                    submitted += n
                rss = meter.rss_mb()
                sample = min(args.sample, depth)
                goal = fleet.stats()["results"] + sample
                fleet.quota(sample)
                fleet.register()
                wait_for(lambda g=goal: fleet.stats()["results"] >= g, args.timeout, "the sample to be placed")
                s = fleet.stats()
                e2e_us = 1e6 * (s["last_result"] - s["first_assign"]) / sample
                fleet.unregister()
                wait_for(lambda: client.ping()["workers"] == 0, args.timeout, "the sample workers to leave", 0.05)
                points.append(
                    {
                        "depth": depth,
                        "submit_tasks_per_s": round(submitted / submit_s, 1),
                        "place_e2e_us": round(e2e_us, 1),
                        "place_scheduler_us": round(place_in_process(depth, sample), 2),
                        "broker_rss_mb": round(rss, 1),
                    }
                )

    first, last = points[0], points[-1]
    summary = {
        "bench": "queue_depth",
        "tasks": args.tasks,
        "requirement_kinds": len(REQUIREMENTS),
        "submit_tasks_per_s": last["submit_tasks_per_s"],
        "place_e2e_us_first": first["place_e2e_us"],
        "place_e2e_us_last": last["place_e2e_us"],
        "place_e2e_growth": round(last["place_e2e_us"] / first["place_e2e_us"], 2),
        "place_scheduler_us_first": first["place_scheduler_us"],
        "place_scheduler_us_last": last["place_scheduler_us"],
        "place_scheduler_growth": round(last["place_scheduler_us"] / first["place_scheduler_us"], 2),
        "broker_rss_empty_mb": round(rss_empty, 1),
        "broker_rss_mb": last["broker_rss_mb"],
        "broker_kb_per_task": round(1024 * (last["broker_rss_mb"] - rss_empty) / args.tasks, 2),
        "checkpoints": points,
        "machine": benchlib.machine(),
    }
    if not args.json:
        print(f"{'queue depth':>12} {'submit/s':>10} {'place e2e us':>13} {'scheduler us':>13} {'broker MB':>10}")
        for pt in points:
            print(
                f"{pt['depth']:>12,} {pt['submit_tasks_per_s']:>10,.0f} {pt['place_e2e_us']:>13,.1f}"
                f" {pt['place_scheduler_us']:>13,.2f} {pt['broker_rss_mb']:>10,.1f}"
            )
    rows = [
        ("tasks queued (requirement kinds)", f"{args.tasks:,} ({len(REQUIREMENTS)})"),
        ("submit rate (tasks/s)", summary["submit_tasks_per_s"]),
        ("placement e2e growth (last/first)", f"{summary['place_e2e_growth']:.2f}x"),
        ("scheduler growth (last/first)", f"{summary['place_scheduler_growth']:.2f}x"),
        ("broker RSS empty -> full (MB)", f"{rss_empty:,.1f} -> {last['broker_rss_mb']:,.1f}"),
        ("broker memory per task (KB)", summary["broker_kb_per_task"]),
    ]
    benchlib.emit("queue_depth: placement as the queue grows", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
