"""``dtf pytest``: run a pytest suite across the fleet, like pytest-xdist but hardware-aware.

The suite is collected here (``pytest --collect-only`` in a subprocess, with the same paths,
``-k``, ``-m`` and extra arguments), split into one task per file or per test, and submitted
as one job of ``pytest`` tasks (with ``--requires`` as each task's requirements, so a GPU
suite lands on GPU workers). Each worker runs its share with ``--rootdir`` pinned to the
collected rootdir, so node ids match; the workers must see the suite at the same path (one
machine, or a shared checkout).

Output follows pytest: a progress line per finished task (``.`` passed, ``F`` failed, ``s``
skipped, ``E`` error) with its worker, a short summary of failures and errors naming the
worker that ran each, and the closing line (``2 failed, 5 passed, 1 skipped in 3.20s``).

Exit codes are pytest's: 0 all passed, 1 tests failed or errored, 2 interrupted (Ctrl-C
cancels the job; a job cancelled with ``dtf cancel``; collection errors), 4 pytest usage error
(bad path or option), 5 no tests collected; and dtf's 3 when the broker is unreachable
(pytest uses 3 for an internal error, which dtf never reports).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_bus import config, defaults, junit
from dtf_bus.client import Client

EXIT_OK, EXIT_TESTS_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_NO_TESTS = 0, 1, 2, 3, 4, 5
FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
MARKS = {"passed": ".", "failed": "F", "skipped": "s", "error": "E"}
WIDTH = 80

# Runs in a subprocess with the user's interpreter: collect, then report what was found.
COLLECT_SCRIPT = r"""
import json, sys
import pytest

class Collector:
    rootdir = None
    items = ()
    errors = []

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append({"nodeid": report.nodeid, "message": str(report.longrepr)[-2000:]})

    def pytest_collection_finish(self, session):
        self.rootdir = str(session.config.rootpath)
        self.items = [item.nodeid for item in session.items]

collector = Collector()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[2:]], plugins=[collector])
with open(sys.argv[1], "w") as fh:
    json.dump({"exit_code": int(code), "rootdir": collector.rootdir, "items": list(collector.items),
               "errors": collector.errors}, fh)
"""


class UsageError(Exception):
    """Something about the command line; the message is for the user."""


def add_parser(sub: Any, with_broker: Any) -> None:
    """Register ``dtf pytest`` on the ``dtf`` command's subparsers."""
    p = with_broker(sub.add_parser("pytest", help="run a pytest suite across the fleet"))
    p.add_argument("paths", nargs="*", help="test files, directories or node ids (default: pytest's own)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="only tests matching this keyword expression")
    p.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="only tests matching this mark expression")
    p.add_argument(
        "--requires",
        action="append",
        metavar="K=V",
        help="worker requirement for every task, e.g. hardware=cuda (repeatable)",
    )
    p.add_argument("--split", choices=("file", "test"), default="file", help="one task per file (default) or test")
    p.add_argument("--junitxml", metavar="FILE", help="write one JUnit XML report for the whole run")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="more pytest arguments, one quoted string")
    p.add_argument("--timeout", type=float, default=None, help="seconds each task may run on its worker")
    p.add_argument("--retries", type=int, default=0, help="extra attempts for a task that fails")
    p.set_defaults(func=run)


@dataclass
class Collected:
    rootdir: str
    nodeids: list[str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0
    output: str = ""


def collect(pytest_args: list[str], cwd: str | None = None, python: str = sys.executable) -> Collected:
    """Collect locally, exactly as pytest would with these arguments."""
    with tempfile.TemporaryDirectory(prefix="dtf-collect-") as tmp:
        out = os.path.join(tmp, "collected.json")
        try:
            proc = subprocess.run(
                [python, "-c", COLLECT_SCRIPT, out, *pytest_args],
                cwd=cwd,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise UsageError(f"cannot run {python}: {exc}") from None
        if not os.path.exists(out):
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            if "No module named pytest" in proc.stderr:
                raise UsageError(f"pytest is not installed for {python}")
            raise UsageError(f"collecting tests failed: {last}")
        with open(out) as fh:
            doc = json.load(fh)
    return Collected(
        rootdir=doc["rootdir"] or os.getcwd(),
        nodeids=doc["items"],
        errors=doc["errors"],
        exit_code=doc["exit_code"],
        output=proc.stdout + proc.stderr,
    )


def parse_requires(items: list[str] | None) -> dict[str, Any]:
    """``--requires K=V`` flags as a task's ``requires``; ``hardware`` accumulates any-of."""
    try:
        pairs = config.parse_assignments(items, "--requires")
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    requires: dict[str, Any] = {}
    for key, value in pairs:
        if key == "hardware":
            wanted = requires.setdefault("hardware", [])
            wanted.extend(h.strip() for h in str(value).split(",") if h.strip())
        else:
            requires[key] = value
    return requires


def task_key(nodeid: str, split: str) -> str:
    """The task a node id belongs to: its file, or itself."""
    return nodeid.split("::", 1)[0] if split == "file" else nodeid


def expected_counts(collected: Collected, split: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for nodeid in collected.nodeids:
        key = task_key(nodeid, split)
        counts[key] = counts.get(key, 0) + 1
    return counts


def build_tasks(
    collected: Collected,
    split: str,
    keyword: str | None = None,
    markexpr: str | None = None,
    extra: list[str] | None = None,
    requires: dict[str, Any] | None = None,
    timeout: float | None = None,
    retries: int = 0,
) -> list[dict[str, Any]]:
    """One ``pytest`` task per file (selection re-applied there with -k/-m) or per node id."""
    tasks = []
    for target in expected_counts(collected, split):
        params: dict[str, Any] = {"targets": [target], "cwd": collected.rootdir, "rootdir": collected.rootdir}
        if split == "file":
            if keyword is not None:
                params["k"] = keyword
            if markexpr is not None:
                params["m"] = markexpr
        if extra:
            params["args"] = list(extra)
        task: dict[str, Any] = {"name": target, "plugin": "pytest", "params": params, "retries": retries}
        if requires:
            task["requires"] = requires
        if timeout is not None:
            task["timeout"] = timeout
        tasks.append(task)
    return tasks


def _rule(text: str, char: str = "=") -> str:
    return f" {text} ".center(WIDTH, char)


class Progress:
    """Prints each task once it is final, with a running percentage of tests."""

    def __init__(self, expected: dict[str, int], out: Any = sys.stdout) -> None:
        self.expected = expected  # task name -> tests it was given
        self.total = max(sum(expected.values()), 1)
        self.done = 0
        self.seen: set[str] = set()
        self.out = out
        self.width = 0

    def update(self, results: list[dict[str, Any]]) -> None:
        for task in results:
            if task["state"] not in FINAL or task["task_id"] in self.seen:
                continue
            self.seen.add(task["task_id"])
            records = junit.task_records(task)
            self.done += self.expected.get(task["name"], len(records))
            marks = "".join(MARKS.get(r["outcome"], "?") for r in records) or "(no tests)"
            pct = min(100, round(100 * self.done / self.total))
            where = f"[{task.get('worker_id') or '-'}]"
            line = f"{task['name']} {marks}"
            print(f"{line:<{WIDTH - 18}} {where:<10} [{pct:3d}%]", file=self.out, flush=True)


def run(client: Client, args: argparse.Namespace) -> int:
    """The ``dtf pytest`` command; returns pytest's exit code."""
    try:
        return _run(client, args)
    except UsageError as exc:
        print(f"dtf pytest: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.retries < 0:
        raise UsageError("--retries must be >= 0")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    requires = parse_requires(args.requires)
    try:
        extra = shlex.split(args.pytest_args)
    except ValueError as exc:
        raise UsageError(f"--pytest-args: {exc}") from None
    selection = []
    if args.keyword is not None:
        selection += ["-k", args.keyword]
    if args.markexpr is not None:
        selection += ["-m", args.markexpr]
    collected = collect([*args.paths, *selection, *extra])
    if collected.errors or collected.exit_code not in (0, 5):
        sys.stdout.write(collected.output)
        for error in collected.errors:
            print(f"ERROR collecting {error['nodeid']}", file=sys.stderr)
        print(_rule(f"{len(collected.errors)} error(s) during collection; nothing was run", "!"))
        return EXIT_USAGE if collected.exit_code == EXIT_USAGE else EXIT_INTERRUPTED
    if not collected.nodeids:
        print(_rule("no tests collected"))
        return EXIT_NO_TESTS

    tasks = build_tasks(collected, args.split, args.keyword, args.markexpr, extra, requires, args.timeout, args.retries)
    name = "pytest " + " ".join(args.paths or ["."])
    started = time.monotonic()
    job_id = client.submit(tasks, name=name[:200])
    print(
        f"dtf pytest: job {job_id}: {len(collected.nodeids)} test(s) in {len(tasks)} task(s)"
        f" (split by {args.split}), rootdir {collected.rootdir}",
        flush=True,
    )
    try:
        results = _follow(client, job_id, Progress(expected_counts(collected, args.split)))
    except KeyboardInterrupt:
        client.cancel(job_id)
        print(_rule(f"interrupted: job {job_id} cancelled", "!"))
        return EXIT_INTERRUPTED
    elapsed = time.monotonic() - started
    records = [r for task in results for r in junit.task_records(task)]
    tally = junit.counts(records)
    bad = [r for r in records if r["outcome"] in ("failed", "error")]
    if bad:
        print(_rule("short test summary info"))
        for r in bad:
            message = (r.get("message") or "").strip().splitlines()
            tail = f" - {message[0]}" if message else ""
            word = "FAILED" if r["outcome"] == "failed" else "ERROR"
            print(f"{word} {r['nodeid']} [{r.get('worker_id') or 'no worker'}]{tail}")
    if args.junitxml:
        path = Path(args.junitxml)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit.to_xml(name, results), encoding="utf-8")
        print(f"- generated xml file: {path.resolve()} -")
    print(_rule(junit.summary_line(tally, elapsed)), flush=True)
    if bad:
        return EXIT_TESTS_FAILED
    return EXIT_INTERRUPTED if any(t["state"] == "cancelled" for t in results) else EXIT_OK


def _follow(client: Client, job_id: str, progress: Progress) -> list[dict[str, Any]]:
    """Poll until every task is final, printing tasks as they finish; the final results."""
    final_seen = 0
    blocked_said = None
    while True:
        status = client.status(job_id)
        final = sum(n for state, n in status["counts"].items() if state in FINAL)
        if final > final_seen or status["done"]:
            final_seen = final
            results = client.results(job_id)
            progress.update(results)
            if status["done"]:
                return results
        blocked = json.dumps(status["blocked"], sort_keys=True)
        if status["blocked"] and blocked != blocked_said and not status["counts"].get("running"):
            for block in status["blocked"]:
                print(f"waiting: {len(block['tasks'])} task(s) cannot be placed yet:", file=sys.stderr)
                for reason in block["reasons"]:
                    print(f"  - {reason}", file=sys.stderr)
            blocked_said = blocked
        time.sleep(defaults.PYTEST_PROGRESS_INTERVAL)
