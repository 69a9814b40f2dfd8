"""Distributed pytest on real third-party suites: plain pytest, pytest-xdist and pytest --dtf.

Each suite is taken from its sdist on PyPI (pinned), unpacked into a cache directory, and given a
virtual environment of its own (its test dependencies, pytest-xdist, and dtf for the controller;
never the project's). The same tests then run, interleaved round by round so that machine noise
falls on every contender alike:

- ``pytest``            plain, one process;
- ``pytest -n N``       pytest-xdist with N worker processes (started per run, as xdist does);
- ``pytest --dtf=EP``   dtf's plugin over a local broker and N one-slot workers, already up
                        (as a fleet is), the tests run by the suite's interpreter on the
                        workers (``--dtf-python``).

Reported per suite: the median wall time of each over ``--rounds`` runs, dtf's wall divided by
xdist's (the target is at most 1.15), and the outcome counts of pytest's summary line for each
(they must be identical, xfailed included).

    python bench/pytest_suites.py [--suite boltons --suite attrs] [--rounds 3] [--workers 2] [--json]
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DTF_BENCH_CACHE") or Path.home() / ".cache" / "dtf-bench")
SUMMARY = re.compile(r"^=*\s*(?P<body>[0-9].*?) in [0-9.]+s(?: \([0-9:]+\))?\s*=*$", re.MULTILINE)  # -q: no rules
COUNT = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|warnings?|deselected|rerun)")


@dataclass(frozen=True)
class Suite:
    requirement: str  # the sdist, pinned
    deps: tuple[str, ...]  # what its tests import, beside pytest and pytest-xdist
    args: tuple[str, ...] = ()  # pytest arguments, run from the unpacked sdist
    install_self: bool = True
    env: dict[str, str] = field(default_factory=dict)


SUITES: dict[str, Suite] = {
    "boltons": Suite("boltons==26.2.0", (), ("tests",)),
    "attrs": Suite("attrs==26.1.0", ("hypothesis", "pympler", "cloudpickle"), ("tests",)),
    "toolz": Suite("toolz==1.2.0", (), ("toolz",)),
}


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def prepare(name: str, suite: Suite) -> tuple[Path, Path]:
    """The unpacked sdist and its venv's python, made once and cached."""
    home = CACHE / name
    home.mkdir(parents=True, exist_ok=True)
    venv_python = home / "venv" / "bin" / "python"
    stamp = home / "ready"
    source = home / "src"
    # The editable dtf in a cached venv is this checkout's as of its pyproject.toml: another
    # checkout, or changed entry points (the pytest11 plugin's module path), installs it again.
    dtf_id = f"{ROOT}\n{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()}"
    if stamp.exists():
        if stamp.read_text() != dtf_id:
            again = run([str(venv_python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)])
            if again.returncode:
                raise SystemExit(f"pytest_suites: reinstalling dtf into {name}'s venv failed: {again.stderr[-500:]}")
            stamp.write_text(dtf_id)
        return source, venv_python
    downloads = home / "sdist"
    got = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(downloads),
               suite.requirement])  # fmt: skip
    archives = sorted(downloads.glob("*.tar.gz"))
    if got.returncode or not archives:
        raise SystemExit(f"pytest_suites: cannot download {suite.requirement}: {got.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(home / "unpacked", filter="data")
    unpacked = next((home / "unpacked").iterdir())
    if source.exists() or source.is_symlink():
        source.unlink()
    source.symlink_to(unpacked)
    if not venv_python.exists():
        made = run([sys.executable, "-m", "venv", str(home / "venv")])
        if made.returncode:
            raise SystemExit(f"pytest_suites: cannot make a venv: {made.stderr.strip()}")
    packages = ["pytest", "pytest-xdist", *suite.deps, "-e", str(ROOT)]  # dtf for the controller
    if suite.install_self:
        packages.append(str(unpacked))
    installed = run([str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages])
    if installed.returncode:
        raise SystemExit(f"pytest_suites: installing {name}'s test environment failed: {installed.stderr[-500:]}")
    stamp.write_text(dtf_id)
    return source, venv_python


def counts(output: str) -> dict[str, int]:
    """Outcome counts from pytest's closing summary line (what a user reads)."""
    found = SUMMARY.findall(output)
    if not found:
        return {}
    tally: dict[str, int] = {}
    for number, word in COUNT.findall(found[-1]):
        if word.startswith("warning"):
            continue
        word = "errors" if word.startswith("error") else word
        tally[word] = tally.get(word, 0) + int(number)
    return tally


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, dict[str, int], str]:
    start = time.perf_counter()
    proc = run(argv, cwd=cwd, env=env, timeout=1800)
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pytest_suites: {' '.join(argv[2:6])}... exited {proc.returncode}:\n{output[-2000:]}")
    return wall, counts(output), output


def bench_suite(name: str, suite: Suite, rounds: int, workers: int) -> dict[str, Any]:
    source, python = prepare(name, suite)
    env = {**os.environ, **suite.env, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DTF_BROKER", None)
    base = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite.args]
    with benchlib.cluster() as cluster:
        cluster.start_broker()
        ids = [f"w{i + 1}" for i in range(workers)]
        for worker_id in ids:
            cluster.start_worker(worker_id, slots=1)
        cluster.wait_for_workers(ids, timeout=60)
        contenders = {
            "pytest": base,
            f"xdist -n {workers}": [*base, "-n", str(workers)],
            "dtf": [*base, "-p", "no:xdist", f"--dtf={cluster.endpoint}", f"--dtf-python={python}"],
        }
        walls: dict[str, list[float]] = {label: [] for label in contenders}
        tallies: dict[str, dict[str, int]] = {}
        for _ in range(rounds):
            for label, argv in contenders.items():
                wall, tally, _ = timed(argv, source, env)
                walls[label].append(wall)
                tallies[label] = tally
    medians = {label: benchlib.median(values) for label, values in walls.items()}
    xdist = medians[f"xdist -n {workers}"]
    return {
        "walls": walls,
        "median_s": medians,
        "dtf_over_xdist": medians["dtf"] / xdist,
        "counts": tallies,
        "counts_identical": len({tuple(sorted(t.items())) for t in tallies.values()}) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--suite", action="append", choices=sorted(SUITES), help="suites to run (default boltons, attrs)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.workers < 1:
        p.error("--rounds and --workers must be positive")
    rows: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {"machine": benchlib.machine(), "rounds": args.rounds, "workers": args.workers}
    for name in args.suite or ["boltons", "attrs"]:
        figures = bench_suite(name, SUITES[name], args.rounds, args.workers)
        summary[name] = figures
        for label, seconds in figures["median_s"].items():
            rows.append((f"{name}: {label} wall s (median)", round(seconds, 2)))
        rows.append((f"{name}: dtf / xdist", f"{figures['dtf_over_xdist']:.3f}"))
        for label, tally in figures["counts"].items():
            rows.append((f"{name}: {label} outcomes", ", ".join(f"{n} {w}" for w, n in sorted(tally.items()))))
        rows.append((f"{name}: identical outcome counts", figures["counts_identical"]))
    benchlib.emit("Distributed pytest on real suites", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
