"""Scale: thousands of simulated workers on one broker, idle and busy.

A real broker process (LocalCluster, default heartbeat settings) and a :class:`simfleet.Fleet`
of lightweight DEALER workers in a few processes, each heartbeating at the interval the broker
tells it, as real workers do. Measured, with the broker's CPU share over each window as
(user + system CPU seconds) / wall seconds of the broker process:

- baseline: the same broker idle with no workers, in the same run;
- registration: time from the fleet's REGISTER storm until the broker counts every worker;
- idle: heartbeat handling only (the target is at most 20 % of one core);
- busy: while N short ``sim`` tasks (seconds = 0) run across the fleet;
- broker resident memory after each phase.

    python bench/scale.py [--workers 2000] [--processes 4] [--tasks 20000] [--idle-seconds 10] [--json]
"""

from __future__ import annotations

import sys
import time

import benchlib
import simfleet

from dtf_bus.testing.cluster import wait_for

TARGET_IDLE_CPU_PCT = 20.0


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2000, help="simulated workers (default 2000)")
    p.add_argument("--processes", type=int, default=4, help="processes holding them (default 4)")
    p.add_argument("--tasks", type=int, default=20_000, help="short tasks in the busy phase (default 20000)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle measuring window (default 10)")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.workers < 1 or args.processes < 1 or args.tasks < 1 or args.idle_seconds <= 0:
        p.error("--workers, --processes, --tasks and --idle-seconds must be positive")
    fds = benchlib.raise_fd_limit()
    if fds < args.workers + 256:
        p.error(f"{args.workers} workers need about {args.workers + 256} file descriptors; the limit is {fds}")

    with benchlib.cluster() as c:
        c.start_broker()
        meter = benchlib.CpuMeter(c.broker.pid)
        fleet = simfleet.Fleet(c.endpoint, args.workers, args.processes)
        with c.client(timeout=args.timeout) as client, fleet:
            window = min(args.idle_seconds, 3.0)
            meter.reset()
            time.sleep(window)  # a measuring window, not a wait for a condition
            cpu_empty = meter.percent()

            start = time.perf_counter()
            fleet.register()
            wait_for(lambda: client.ping()["workers"] >= args.workers, args.timeout, "every worker to register", 0.05)
            registration_s = time.perf_counter() - start
            wait_for(lambda: fleet.stats()["registered"] >= args.workers, args.timeout, "every REGISTERED reply")
            rss_registered = meter.rss_mb()
            interval = client.ping()["heartbeat_interval"]

            # Idle: let a full heartbeat round pass first, so the window sees the steady state.
            time.sleep(min(interval, args.idle_seconds))
            beats = fleet.stats()["heartbeats"]
            meter.reset()
            time.sleep(args.idle_seconds)
            cpu_idle = meter.percent()
            beats_per_s = (fleet.stats()["heartbeats"] - beats) / args.idle_seconds
            alive = client.ping()["workers"]

            meter.reset()
            start = time.perf_counter()
            job = client.submit([{"name": "short", "plugin": "sim", "params": {"seconds": 0}, "repeat": args.tasks}])
            status = client.wait(job, timeout=args.timeout)
            busy_s = time.perf_counter() - start
            cpu_busy = meter.percent()
            rss_busy = meter.rss_mb()
            if status["succeeded"] != args.tasks:
                raise RuntimeError(f"{status['succeeded']} of {args.tasks} tasks succeeded: {status['counts']}")

    summary = {
        "bench": "scale",
        "workers": args.workers,
        "workers_alive_after_idle": alive,
        "processes": args.processes,
        "registration_s": round(registration_s, 3),
        "heartbeat_interval_s": interval,
        "heartbeats_per_s": round(beats_per_s, 1),
        "broker_cpu_no_workers_pct": round(cpu_empty, 2),
        "broker_cpu_idle_pct": round(cpu_idle, 2),
        "broker_cpu_busy_pct": round(cpu_busy, 2),
        "tasks": args.tasks,
        "tasks_per_s": round(args.tasks / busy_s, 1),
        "broker_rss_mb": round(rss_busy, 1),
        "broker_rss_registered_mb": round(rss_registered, 1),
        "target_idle_cpu_pct": TARGET_IDLE_CPU_PCT,
        "machine": benchlib.machine(),
    }
    rows = [
        ("simulated workers (processes)", f"{args.workers:,} ({args.processes})"),
        ("registration (s)", summary["registration_s"]),
        ("heartbeat interval told (s)", interval),
        ("heartbeats received (/s)", summary["heartbeats_per_s"]),
        ("broker CPU, no workers (%)", summary["broker_cpu_no_workers_pct"]),
        ("broker CPU, idle fleet (%)", summary["broker_cpu_idle_pct"]),
        ("target idle CPU (%)", TARGET_IDLE_CPU_PCT),
        (f"broker CPU, {args.tasks:,} tasks (%)", summary["broker_cpu_busy_pct"]),
        ("tasks/s over the fleet", summary["tasks_per_s"]),
        ("broker RSS registered (MB)", summary["broker_rss_registered_mb"]),
        ("broker RSS after tasks (MB)", summary["broker_rss_mb"]),
    ]
    benchlib.emit("scale: simulated workers on one broker", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
