"""``dtf jobs``, ``dtf compare``, ``dtf flaky``, ``dtf history``: what a test lead asks every morning.

The answers come from the broker (a QUERY message, read on its archive thread from DuckDB, see
:mod:`dtf_bus.analysis.requests`), so they work while the broker runs and holds the file.
Exit codes follow ``dtf``'s: 0 answered, 2 a usage error or what the store does not hold (an
unknown job or test), 3 no broker; ``dtf compare`` exits 1 when B regressed against A (a new
failure, a slower test, a benchmark regression): a CI gate.

Also here: ``--label K=V`` and the run metadata that ``dtf submit`` and ``dtf up`` send.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dtf_bus import config, defaults, runmeta
from dtf_bus.client import Client

EXIT_OK, EXIT_REGRESSED = 0, 1
_SINCE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def label_option(parser: argparse.ArgumentParser, help: str = "") -> None:
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="K=V",
        help=help or "a label stored on the job, for dtf jobs/compare --label (repeatable)",
    )


def labels_of(items: list[str]) -> dict[str, str]:
    """``--label K=V`` values as a dict; a malformed one is a ConfigError (a usage error, exit 2)."""
    try:
        return runmeta.parse_labels(items)
    except runmeta.MetaError as exc:
        raise config.ConfigError(str(exc)) from None


def run_meta(labels: list[str], directory: str | Path = ".") -> dict[str, Any]:
    """What a submit sends as ``meta``: the git facts of ``directory`` and the labels."""
    return runmeta.collect(directory, labels_of(labels))


def parse_since(text: str, now: float | None = None) -> float:
    """``7d``, ``12h``, ``30m``, ``2w`` ago, or an ISO date or time (UTC unless it says), as epoch seconds."""
    now = time.time() if now is None else now
    match = _SINCE.fullmatch(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise config.ConfigError(
            f"--since: expected a duration like 7d, 12h, 30m or an ISO date, got {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def describe_run(job: dict[str, Any]) -> str:
    """``main@1a2b3c4d (dirty)`` or ``no git``, then the labels."""
    text = "no git"
    if job.get("commit"):
        text = f"{job.get('branch') or 'detached'}@{job['commit'][:10]}" + (" (dirty)" if job.get("dirty") else "")
    labels = " ".join(f"{k}={v}" for k, v in sorted((job.get("labels") or {}).items()))
    return f"{text} {labels}".strip()


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    labels = labels_of(args.label)
    found = client.query("jobs", labels=labels, branch=args.branch, commit=args.commit, limit=args.limit)
    if args.json:
        _json(found)
        return EXIT_OK
    if not found:
        print("no jobs recorded" + (" matching the filters" if labels or args.branch or args.commit else ""))
        return EXIT_OK
    rows = [("JOB", "SUBMITTED", "NAME", "PROGRESS", "TASKS", "TESTS", "COMMIT")]
    for job in found:
        states = ", ".join(f"{n} {s}" for s, n in sorted((job.get("counts") or {}).items()))
        tests = ", ".join(f"{n} {s}" for s, n in sorted((job.get("tests") or {}).items()))
        rows.append(
            (
                job["job_id"],
                _when(job["submitted_at"]),
                (job["name"] or "")[:40],
                f"{job.get('finished', 0)}/{job['total']}" + (" done" if job.get("done") else ""),
                states,
                tests,
                describe_run(job),
            )
        )
    _table(rows)
    return EXIT_OK


def cmd_compare(client: Client, args: argparse.Namespace) -> int:
    if len(args.jobs) > 2:
        raise config.ConfigError("compare takes at most two jobs: A B (or B alone, or none with --label/--branch)")
    a, b = (args.jobs[0], args.jobs[1]) if len(args.jobs) == 2 else (None, args.jobs[0] if args.jobs else None)
    result = client.query(
        "compare",
        a=a,
        b=b,
        labels=labels_of(args.label),
        branch=args.branch,
        slower_spreads=args.slower_spreads,
        slower_relative=args.slower_relative,
        slower_absolute=args.slower_absolute,
        bench_spreads=args.bench_spreads,
        bench_relative=args.bench_relative,
        runs=args.runs,
    )
    if args.json:
        _json(result)
    else:
        print_compare(result)
    return EXIT_REGRESSED if result["regressed"] else EXIT_OK


def print_compare(result: dict[str, Any]) -> None:
    a, b = result["a"], result["b"]
    print(f"A {a['job_id']}  {_when(a['submitted_at'])}  {describe_run(a)}")
    print(f"B {b['job_id']}  {_when(b['submitted_at'])}  {describe_run(b)}")
    sections: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("new_failures", "new failures", lambda t: f"{t['outcome'].upper()} {t['nodeid']} (was {t['was'] or 'absent'})"
         + (f": {t['message'].splitlines()[0][:160]}" if t.get("message") else "")),
        ("fixed", "fixed", lambda t: f"{t['nodeid']} (was {t['was']}, now {t['outcome']})"),
        ("added", "added", lambda t: f"{t['nodeid']} ({t['outcome']})"),
        ("removed", "removed", lambda t: f"{t['nodeid']} (was {t['was']})"),
        ("slower", "slower", lambda t: f"{t['nodeid']}: {t['a_s']:.3f}s -> {t['b_s']:.3f}s (median "
         f"{t['baseline_s']:.3f}s over {t['runs']} run(s), threshold {t['threshold_s']:.3f}s)"),
        ("benchmark_regressions", "benchmark regressions", lambda r: f"{r['benchmark']} {json.dumps(r['params'])} on "
         f"{r['hardware']}: {r['metric']} {r['a']:.4g} -> {r['b']:.4g} {r['unit'] or ''} ({r['worse_by']:+.1%} worse; "
         f"limit {r['limit']:.1%})"),
    ]  # fmt: skip
    for key, title, line in sections:
        items = result[key]
        print(f"{title}: {len(items)}")
        for item in items[:50]:
            print(f"  {line(item)}")
        if len(items) > 50:
            print(f"  ... and {len(items) - 50} more (--json lists all)")
    print("REGRESSED" if result["regressed"] else "no regressions")


def cmd_flaky(client: Client, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else time.time() - defaults.FLAKY_SINCE
    found = client.query("flaky", since=since, limit=args.limit)
    if args.json:
        _json(found)
        return EXIT_OK
    if not found:
        print(f"no flaky tests since {_when(since)}")
        return EXIT_OK
    rows = [("TEST", "RUNS", "PASSED", "FAILED", "RERUN-PASSED", "MIXED", "LAST SEEN", "LAST")]
    for t in found:
        rows.append(
            (
                t["nodeid"],
                str(t["runs"]),
                str(t["passed"]),
                str(t["failed"]),
                str(t["passed_on_rerun"]),
                str(t["mixed"]),
                _when(t["last_seen"]),
                t["last_outcome"] or "",
            )
        )
    _table(rows)
    print("MIXED: commits (or dirty/unversioned runs) on which the test both passed and failed")
    return EXIT_OK


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    found = client.query("history", nodeid=args.nodeid, limit=args.limit)
    if args.json:
        _json(found)
        return EXIT_OK
    print(f"{found['nodeid']}: last {len(found['runs'])} run(s)")
    rows = [("WHEN", "JOB", "COMMIT", "OUTCOME", "SECONDS", "WORKER", "HARDWARE")]
    for r in found["runs"]:
        commit = describe_run(r) if r.get("commit") else ""
        seconds = "" if r["duration_s"] is None else f"{r['duration_s']:.3f}"
        rows.append(
            (
                _when(r["recorded_at"]),
                r["job_id"],
                commit,
                r["outcome"] or "",
                seconds,
                r["worker_id"] or "",
                ",".join(r["hardware"] or []),
            )
        )
    _table(rows)
    for hw, s in found["hardware"].items():
        median = "-" if s["median_s"] is None else f"{s['median_s']:.3f}s"
        print(f"on {hw}: {s['runs']} run(s), {s['passed']} passed, {s['failed']} failed, median {median}")
    return EXIT_OK


def add_parsers(sub: Any, with_broker: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register the history commands on ``dtf``'s subparsers."""
    p = with_broker(sub.add_parser("jobs", help="recent jobs with their commit, labels and progress"))
    p.add_argument("--json", action="store_true")
    label_option(p, "only jobs with this label (repeatable: all must match)")
    p.add_argument("--branch", help="only jobs submitted from this git branch")
    p.add_argument("--commit", help="only jobs of this commit (a prefix will do)")
    p.add_argument("--limit", type=int, default=defaults.JOBS_LIMIT, help="at most N jobs (default %(default)s)")
    p.set_defaults(func=cmd_jobs)

    p = with_broker(sub.add_parser("compare", help="what regressed from run A to run B (exit 1 if anything did)"))
    p.add_argument(
        "jobs",
        nargs="*",
        metavar="JOB",
        help="A B: job ids or branch:NAME, commit:SHA, label:K=V (the newest match); B alone: against the "
        "newest matching run before it; none: the newest two matching runs",
    )
    p.add_argument("--json", action="store_true")
    label_option(p, "pick runs with this label (repeatable: all must match)")
    p.add_argument("--branch", help="pick runs of this git branch")
    p.add_argument("--slower-spreads", type=float, metavar="K", help=f"default {defaults.SLOWER_SPREADS:g}")
    p.add_argument("--slower-relative", type=float, metavar="R", help=f"default {defaults.SLOWER_RELATIVE:g}")
    p.add_argument("--slower-absolute", type=float, metavar="S", help=f"default {defaults.SLOWER_ABSOLUTE_S:g}")
    p.add_argument("--bench-spreads", type=float, metavar="K", help=f"default {defaults.BENCH_REGRESSION_SPREADS:g}")
    p.add_argument("--bench-relative", type=float, metavar="R", help=f"default {defaults.BENCH_REGRESSION_RELATIVE:g}")
    p.add_argument("--runs", type=int, metavar="N", help=f"history runs per test (default {defaults.HISTORY_RUNS})")
    p.set_defaults(func=cmd_compare)

    p = with_broker(sub.add_parser("flaky", help="tests that both passed and failed on the same code"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--since", help="7d, 12h, 30m or an ISO date (default: 30 days)")
    p.add_argument("--limit", type=int, default=100, help="at most N tests (default %(default)s)")
    p.set_defaults(func=cmd_flaky)

    p = with_broker(sub.add_parser("history", help="a test's outcome and duration across runs and hardware"))
    p.add_argument("nodeid", help="pytest node id (the end of one is enough when it names one test)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--limit", type=int, default=defaults.TEST_HISTORY_LIMIT, help="at most N runs (default %(default)s)"
    )
    p.set_defaults(func=cmd_history)
