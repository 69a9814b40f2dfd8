"""Chaos: thousands of tasks through a fleet under a random fault every second, plus one broker
SIGKILL and restart; then count what was lost and what was counted twice.

Faults (seeded): SIGKILL a worker (restarted a second later), SIGSTOP one (SIGCONT a second or
two later), or close its socket (reopened a second or two later). Midway the broker itself is
SIGKILLed and restarted on the same database. At the end the database must hold every task
exactly once, succeeded, with no stale attempt counted.

    python bench/chaos.py [--tasks 2000] [--workers 8] [--seconds 20] [--seed 7] [--json]
"""

from __future__ import annotations

import random
import signal
import sys
import time

import benchlib
import duckdb

FAULTS = ("sigkill", "sigstop", "socket")


class Chaos:
    """Applies one fault per tick and heals earlier ones when their time comes."""

    def __init__(self, cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.healing: list[tuple[float, str, str]] = []  # (when, worker id, how)
        self.counts = dict.fromkeys(FAULTS, 0)

    def healthy(self) -> list[str]:
        sick = {w for _, w, _ in self.healing}
        return [w for w, p in self.cluster.workers.items() if w not in sick and p.alive()]

    def strike(self) -> None:
        candidates = self.healthy()
        if len(candidates) < 2:  # always leave someone to do the work
            return
        victim = self.rng.choice(candidates)
        fault = self.rng.choice(FAULTS)
        self.counts[fault] += 1
        heal_at = time.monotonic() + self.rng.uniform(1.0, 2.0)
        if fault == "sigkill":
            self.cluster.kill_worker(victim, signal.SIGKILL)
            self.healing.append((time.monotonic() + 1.0, victim, "restart"))
        elif fault == "sigstop":
            self.cluster.pause_worker(victim)
            self.healing.append((heal_at, victim, "resume"))
        else:
            self.cluster.close_worker_socket(victim)
            self.healing.append((heal_at, victim, "reopen"))

    def heal(self, everything: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for when, worker_id, how in self.healing:
            if not everything and when > now:
                keep.append((when, worker_id, how))
            elif how == "restart":
                self.cluster.start_worker(worker_id, slots=2)
            elif how == "resume":
                self.cluster.resume_worker(worker_id)
            else:
                self.cluster.reopen_worker_socket(worker_id)
        self.healing = keep


def run(tasks: int, workers: int, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    with benchlib.cluster(heartbeat_interval=0.5, faults=True) as cluster:
        cluster.start_broker()
        ids = [f"w{i}" for i in range(workers)]
        for worker_id in ids:
            cluster.start_worker(worker_id, slots=2)
        cluster.wait_for_workers(ids, timeout=60)
        # Size the work so the fleet stays busy through the whole fault window.
        mean = seconds * workers * 2 / tasks * 0.8
        spec = [
            {"name": f"t{i}", "plugin": "sim", "params": {"seconds": round(rng.uniform(0.5, 1.5) * mean, 4)}}
            for i in range(tasks)
        ]
        started = time.monotonic()
        with cluster.client(timeout=10) as client:
            job = client.submit(spec, name="chaos")
        chaos = Chaos(cluster, rng)
        broker_kill_at = started + seconds / 2
        broker_restarts = 0
        deadline = started + seconds
        while time.monotonic() < deadline:  # bounded: one fault per second for `seconds`
            tick = time.monotonic()
            chaos.heal()
            if broker_restarts == 0 and tick >= broker_kill_at:
                cluster.kill_broker(signal.SIGKILL)
                cluster.start_broker()
                broker_restarts += 1
            else:
                chaos.strike()
            time.sleep(max(0.0, tick + 1.0 - time.monotonic()))
        chaos.heal(everything=True)
        with cluster.client(timeout=10) as client:
            status = client.wait(job, timeout=300)
        wall = time.monotonic() - started
        cluster.stop()
        con = duckdb.connect(str(cluster.db), read_only=True)
        rows, succeeded = con.execute(
            "select count(*), count(*) filter (where state = 'succeeded') from tasks where job_id = ?", [job]
        ).fetchone()
        # A duplicate is a task with more than one counted success: two non-stale succeeded attempts.
        duplicates = con.execute(
            "select count(*) from (select task_id from attempts where task_id like ? and outcome = 'succeeded' "
            "and not stale group by task_id having count(*) > 1)",
            [f"{job}.%"],
        ).fetchone()[0]
        reruns = con.execute("select count(*) from tasks where job_id = ? and attempts > 1", [job]).fetchone()[0]
        stale = con.execute("select count(*) from attempts where task_id like ? and stale", [f"{job}.%"]).fetchone()[0]
        con.close()
    return {
        "tasks": tasks,
        "workers": workers,
        "lost": tasks - succeeded,
        "duplicates": duplicates,
        "rows": rows,
        "client_succeeded": status["succeeded"],
        "rerun_tasks": reruns,
        "stale_results_fenced": stale,
        "faults": chaos.counts,
        "broker_restarts": broker_restarts,
        "wall_s": round(wall, 2),
    }


def main() -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="how long faults are injected")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    summary = run(args.tasks, args.workers, args.seconds, args.seed)
    rows = [
        ("tasks", summary["tasks"]),
        ("lost", summary["lost"]),
        ("duplicate final results", summary["duplicates"]),
        ("tasks rerun after a fault", summary["rerun_tasks"]),
        ("stale results fenced out", summary["stale_results_fenced"]),
        ("faults (kill/stop/socket)", "/".join(str(summary["faults"][f]) for f in FAULTS)),
        ("broker SIGKILL + restart", summary["broker_restarts"]),
        ("wall time (s)", summary["wall_s"]),
    ]
    benchlib.emit("dtf chaos", rows, summary, args.json)
    return 0 if summary["lost"] == 0 and summary["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
