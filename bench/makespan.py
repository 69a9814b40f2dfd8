"""Makespan of a heterogeneous fleet under each placement strategy, against a lower bound.

One machine plays a mixed fleet: real worker processes whose `sim` speed factors differ
(1x to 4x), two of them declaring cuda and two a large memory. The workload (fixed seed) has
heavy-tailed (lognormal) durations; a fifth of the tasks need cuda, a tenth a minimum memory.
Every strategy runs with prefetch and work stealing; round_robin also runs without stealing
as the baseline a naive dispatcher gives.

Lower bound: the largest of total work / fleet capacity, each requirement class's work /
the capacity of the workers that can run it, and the longest task on the fastest worker that
can run it (the longest chain: the workload has no dependencies).

Each configuration runs ``--rounds`` times (interleaved) and the median makespan is reported,
since one run on a small shared machine is noisy. One seed is one workload, and its makespan
depends on where its few longest tasks happen to land: runs of a seed fall into a handful of
outcomes, chosen by sub-millisecond timing. ``--seeds 1-10`` runs ten workloads instead and
reports each configuration's median and worst ratio to the lower bound over all of them,
which is the figure to compare two versions of the code by.

    python bench/makespan.py [--tasks 240] [--seeds 11] [--rounds 3] [--json]
"""

from __future__ import annotations

import random
import sys
import time

import benchlib

# worker id -> (speed, declared capabilities)
FLEET = {
    "cpu-1x-a": (1.0, []),
    "cpu-1x-b": (1.0, []),
    "cpu-2x-mem": (2.0, ["memory_gb=128"]),
    "cpu-2x": (2.0, []),
    "gpu-4x": (4.0, ["hardware=cuda"]),
    "gpu-3x-mem": (3.0, ["hardware=cuda", "memory_gb=128"]),
}
RUNS = [
    ("round_robin", False),  # the baseline: dealt in turn, nothing corrects it
    ("round_robin", True),
    ("least_loaded", True),
    ("affinity", True),
    ("performance_based", True),
]


def workload(n: int, seed: int, mean: float) -> list[dict]:
    rng = random.Random(seed)
    sigma = 1.0
    mu = -(sigma**2) / 2  # lognormal with mean 1
    tasks = []
    for i in range(n):
        seconds = round(min(rng.lognormvariate(mu, sigma), 8.0) * mean, 4)
        roll = rng.random()
        requires = {"hardware": "cuda"} if roll < 0.2 else {"min_memory_gb": 64} if roll < 0.3 else {}
        tasks.append({"name": f"t{i}", "plugin": "sim", "params": {"seconds": seconds}, "requires": requires})
    return tasks


def eligible(requires: dict) -> list[str]:
    out = []
    for worker_id, (_, caps) in FLEET.items():
        if requires.get("hardware") == "cuda" and "hardware=cuda" not in caps:
            continue
        if "min_memory_gb" in requires and "memory_gb=128" not in caps:
            continue
        out.append(worker_id)
    return out


def lower_bound(tasks: list[dict]) -> float:
    speed = {w: s for w, (s, _) in FLEET.items()}
    bound = sum(t["params"]["seconds"] for t in tasks) / sum(speed.values())
    classes: dict[str, list[dict]] = {}
    for t in tasks:
        classes.setdefault(str(sorted(t["requires"].items())), []).append(t)
    for members in classes.values():
        workers = eligible(members[0]["requires"])
        bound = max(bound, sum(t["params"]["seconds"] for t in members) / sum(speed[w] for w in workers))
    for t in tasks:
        bound = max(bound, t["params"]["seconds"] / max(speed[w] for w in eligible(t["requires"])))
    return bound


def seeds(text: str) -> list[int]:
    """``11``, ``1-10`` or ``1,5,9``."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def run_once(strategy: str, steal: bool, tasks: list[dict], prefetch: int) -> float:
    extra = ["--prefetch", str(prefetch)] + ([] if steal else ["--no-steal"])
    with benchlib.cluster(strategy=strategy) as cluster:
        cluster.start_broker(extra_args=extra)
        for worker_id, (speed, caps) in FLEET.items():
            cluster.start_worker(worker_id, capabilities=[f"speed={speed}", *caps], extra_args=["--plugin", "sim"])
        cluster.wait_for_workers(list(FLEET), timeout=60)
        with cluster.client(timeout=30) as client:
            started = time.monotonic()
            job = client.submit(tasks, name=f"makespan-{strategy}")
            status = client.wait(job, timeout=600)
            makespan = time.monotonic() - started
        if status["succeeded"] != len(tasks):
            raise RuntimeError(f"{strategy}: only {status['succeeded']} of {len(tasks)} tasks succeeded")
    return makespan


def main() -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=240)
    p.add_argument("--mean", type=float, default=0.5, help="mean task duration at speed 1 (seconds)")
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--seeds", type=seeds, default=[11], help="workload seeds: 11, 1-10 or 1,5,9 (default 11)")
    p.add_argument("--only", help="comma-separated strategies to run (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="runs per configuration; the median is reported")
    args = p.parse_args()
    workloads = {seed: workload(args.tasks, seed, args.mean) for seed in args.seeds}
    bounds = {seed: lower_bound(tasks) for seed, tasks in workloads.items()}
    runs = [(s, steal) for s, steal in RUNS if not args.only or s in args.only.split(",")]
    times: dict[tuple[str, bool], list[float]] = {run: [] for run in runs}
    ratios: dict[tuple[str, bool], list[float]] = {run: [] for run in runs}
    for _ in range(args.rounds):  # interleaved, so a slow moment of the machine hits every config
        for seed, tasks in workloads.items():
            for strategy, steal in runs:
                makespan = run_once(strategy, steal, tasks, args.prefetch)
                times[(strategy, steal)].append(makespan)
                ratios[(strategy, steal)].append(makespan / bounds[seed])
    bound = benchlib.median(list(bounds.values()))
    results = []
    for strategy, steal in runs:
        label = strategy if steal else f"{strategy} (no stealing, baseline)"
        results.append({"strategy": label, "makespan_s": round(benchlib.median(times[(strategy, steal)]), 3),
                        "lower_bound_s": round(bound, 3), "ratio": round(benchlib.median(ratios[(strategy, steal)]), 3),
                        "worst_ratio": round(max(ratios[(strategy, steal)]), 3), "stealing": steal})  # fmt: skip
    baseline = next((r for r in results if not r["stealing"]), None)
    if args.json:
        for r in results:
            if baseline:
                r["vs_round_robin"] = round(1 - r["ratio"] / baseline["ratio"], 3)
            benchlib.emit("", [], r, True)
        return 0
    m = benchlib.machine()
    n = len(workloads[args.seeds[0]])
    print(f"makespan, {n} tasks, {len(FLEET)} workers, seeds {args.seeds}  ({m['cores']} cores, {m['cpu']})")
    print(f"  lower bound {bound:.2f} s" + (" (median over seeds)" if len(args.seeds) > 1 else ""))
    print(f"  {'strategy':<40} {'makespan s':>10} {'/ bound':>8} {'worst':>7} {'vs baseline':>12}")
    for r in results:
        gain = f"{1 - r['ratio'] / baseline['ratio']:+.0%}" if baseline else ""
        print(f"  {r['strategy']:<40} {r['makespan_s']:>10.2f} {r['ratio']:>8.2f} {r['worst_ratio']:>7.2f} {gain:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
