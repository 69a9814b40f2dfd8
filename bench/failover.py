"""Failover time: from killing the worker that runs a task to that task starting elsewhere.

SIGKILL is seen through the broker's socket monitor (the TCP connection closes); SIGSTOP only
through silence (default interval 1 s, liveness 3: missing after 3 s without a message). Each
repetition runs one long task, kills (or stops) its worker, and reads the second attempt's
start time as the new worker stamped it. A real hang comes at any moment, not just after a
message, so the signal is sent after a random (seeded) delay of up to one interval into the
task; the max shows the worst case, a hang right after the worker's last message.

With --dask-python, the peer script ../shared/peers/peer_dask_failover.py runs in that
interpreter's environment beside ours, for the same measure on the same machine.

    python bench/failover.py [--reps 5] [--json] [--dask-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import benchlib

from dtf_bus.testing.cluster import wait_for

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "peer_dask_failover.py"


def running_worker(client, job: str) -> str:
    def find():
        task = client.results(job)[0]
        return task["worker_id"] if task["state"] == "running" else None

    return wait_for(find, 30, "the task to start")


def one_failover(cluster, sig: int, rep: int, delay: float) -> float:
    """Seconds from the signal to the task's second attempt starting on another worker."""
    with cluster.client() as client:
        job = client.submit([{"name": f"long-{rep}", "plugin": "sim", "params": {"seconds": 3.0 + delay}}])
        victim = running_worker(client, job)
        proc = cluster.workers[victim]
        time.sleep(delay)  # the moment of failure within the task (seeded; see the docstring)
        t_signal = time.time()
        proc.signal(sig)

        def restarted():
            task = client.results(job)[0]
            history = task["history"]
            return history[1] if len(history) > 1 and history[1]["started_at"] else None

        second = wait_for(restarted, 30, "the task to restart elsewhere", interval=0.01)
        client.cancel(job)
    if sig == signal.SIGSTOP:
        proc.signal(signal.SIGCONT)
        with cluster.client() as client:
            wait_for(
                lambda: any(w["worker_id"] == victim and w["state"] == "idle" for w in client.workers()),
                30,
                "the stopped worker to be back",
            )
    else:
        proc.popen.wait(10)
        cluster.start_worker(victim)
        cluster.wait_for_workers([victim], timeout=30)
    return second["started_at"] - t_signal


def dask_failover(python: str, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        out = subprocess.run([python, str(PEER)], capture_output=True, text=True, timeout=120).stdout
        match = re.search(r"restarted ([0-9.]+)s after SIGKILL", out)
        if match:
            times.append(float(match.group(1)))
    return times


def main() -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--heartbeat-interval", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dask-python", help="a python with dask[distributed] installed, for the peer baseline")
    args = p.parse_args()

    results: dict[str, list[float]] = {"sigkill": [], "sigstop": []}
    with benchlib.cluster(heartbeat_interval=args.heartbeat_interval) as cluster:
        cluster.start_broker()
        for name in ("w1", "w2", "w3"):
            cluster.start_worker(name)
        cluster.wait_for_workers(["w1", "w2", "w3"])
        rng = random.Random(args.seed)
        for rep in range(args.reps):
            for name, sig in (("sigkill", signal.SIGKILL), ("sigstop", signal.SIGSTOP)):
                results[name].append(one_failover(cluster, sig, rep, rng.uniform(0, args.heartbeat_interval)))

    ms = {k: [v * 1000 for v in vs] for k, vs in results.items()}
    summary = {
        "reps": args.reps,
        "heartbeat_interval_s": args.heartbeat_interval,
        "sigkill_restart_ms_median": round(benchlib.median(ms["sigkill"]), 2),
        "sigkill_restart_ms_max": round(max(ms["sigkill"]), 2),
        "sigstop_restart_ms_median": round(benchlib.median(ms["sigstop"]), 2),
        "sigstop_restart_ms_max": round(max(ms["sigstop"]), 2),
        "sigstop_target_ms": 3 * args.heartbeat_interval * 1000,
    }
    rows = [
        ("SIGKILL -> restarted, median (ms)", summary["sigkill_restart_ms_median"]),
        ("SIGKILL -> restarted, max (ms)", summary["sigkill_restart_ms_max"]),
        ("SIGSTOP -> restarted, median (ms)", summary["sigstop_restart_ms_median"]),
        ("SIGSTOP -> restarted, max (ms)", summary["sigstop_restart_ms_max"]),
        ("SIGSTOP target: 3 intervals (ms)", summary["sigstop_target_ms"]),
    ]
    if args.dask_python:
        dask_ms = [t * 1000 for t in dask_failover(args.dask_python, args.reps)]
        if dask_ms:
            summary["dask_sigkill_restart_ms_median"] = round(benchlib.median(dask_ms), 2)
            summary["dask_sigkill_restart_ms_max"] = round(max(dask_ms), 2)
            rows += [
                ("Dask SIGKILL -> restarted, median (ms)", summary["dask_sigkill_restart_ms_median"]),
                ("Dask SIGKILL -> restarted, max (ms)", summary["dask_sigkill_restart_ms_max"]),
            ]
        else:
            print("failover: the Dask peer printed no measurement", file=sys.stderr)
    benchlib.emit("dtf failover", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
