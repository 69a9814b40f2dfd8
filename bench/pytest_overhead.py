"""dtf's own cost per test: 2,000 trivial tests in 20 files, pytest-xdist beside pytest --dtf.

A generated suite of ``--files`` files of ``--tests`` trivial tests each runs, interleaved round
by round, as plain pytest, ``pytest -n N`` (pytest-xdist) and ``pytest --dtf=EP`` over a local
broker with N one-slot workers already up. Trivial tests make every contender's cost its own
overhead. Reported: median wall times, dtf's wall over xdist's (target at most 1.3), and the CPU
dtf's own processes spent per test: the broker and the worker processes (not the pytest sessions
they drive, which do what xdist's workers do; target at most 1 ms per test), and the controller
process beside plain pytest's whole process for scale.

    python bench/pytest_overhead.py [--files 20] [--tests 100] [--rounds 3] [--workers 2] [--json]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib


def write_suite(root: Path, files: int, tests: int) -> None:
    (root / "pytest.ini").write_text("[pytest]\n")
    for f in range(files):
        body = "".join(f"def test_{t}():\n    assert {t} >= 0\n\n\n" for t in range(tests))
        (root / f"test_mod{f:02d}.py").write_text(body)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the CPU seconds of the process (its own children included)."""
    env = {k: v for k, v in os.environ.items() if k != "DTF_BROKER"}
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(f"pytest_overhead: {argv[3:]} exited {proc.returncode}:\n{output}")
    return wall, children_cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--tests", type=int, default=100, help="tests per file")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if min(args.files, args.tests, args.rounds, args.workers) < 1:
        p.error("--files, --tests, --rounds and --workers must be positive")
    total = args.files * args.tests
    with tempfile.TemporaryDirectory(prefix="dtf-overhead-") as tmp, benchlib.cluster() as cluster:
        suite = Path(tmp) / "suite"
        suite.mkdir()
        write_suite(suite, args.files, args.tests)
        cluster.start_broker()
        ids = [f"w{i + 1}" for i in range(args.workers)]
        for worker_id in ids:
            cluster.start_worker(worker_id, slots=1)
        cluster.wait_for_workers(ids, timeout=60)
        meters = [benchlib.CpuMeter(cluster.broker.pid)] + [benchlib.CpuMeter(cluster.workers[w].pid) for w in ids]
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        xdist = f"xdist -n {args.workers}"
        contenders = {
            "pytest": base,
            xdist: [*base, "-n", str(args.workers)],
            "dtf": [*base, "-p", "no:xdist", f"--dtf={cluster.endpoint}"],
        }
        walls: dict[str, list[float]] = {label: [] for label in contenders}
        cpus: dict[str, list[float]] = {label: [] for label in contenders}
        broker_cpu: list[float] = []
        workers_cpu: list[float] = []
        for _ in range(args.rounds):
            for label, command in contenders.items():
                for meter in meters:
                    meter.reset()
                wall, cpu = timed(command, suite)
                walls[label].append(wall)
                cpus[label].append(cpu)
                if label == "dtf":
                    broker_cpu.append(meters[0].used())
                    workers_cpu.append(sum(meter.used() for meter in meters[1:]))
    median = {label: benchlib.median(values) for label, values in walls.items()}
    per_test_ms = {
        "broker": benchlib.median(broker_cpu) / total * 1e3,
        "workers": benchlib.median(workers_cpu) / total * 1e3,
        "controller": benchlib.median(cpus["dtf"]) / total * 1e3,
        "plain_pytest_process": benchlib.median(cpus["pytest"]) / total * 1e3,  # for scale: it runs the tests too
    }
    summary = {
        "machine": benchlib.machine(),
        "tests": total,
        "median_s": median,
        "dtf_over_xdist": median["dtf"] / median[xdist],
        "dtf_cpu_ms_per_test": per_test_ms,
    }
    rows: list[tuple[str, Any]] = [(f"{label} wall s (median)", round(s, 2)) for label, s in median.items()]
    rows.append(("dtf / xdist", round(summary["dtf_over_xdist"], 3)))
    rows += [(f"dtf CPU ms per test: {k}", round(v, 3)) for k, v in per_test_ms.items()]
    benchlib.emit(f"Distributed pytest overhead ({total} trivial tests)", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
