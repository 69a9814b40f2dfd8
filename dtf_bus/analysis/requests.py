"""History questions as the bus asks them: a QUERY message's ``what`` and ``args``, checked.

:func:`reader` runs on the broker's loop, so it only checks the arguments (cheap, and a bad one
is answered at once with a one-line reason) and returns the read to run on the archive thread,
off the loop. The HTTP API checks its query strings into the same arguments and calls the same
functions on its reader pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dtf_bus import defaults, runmeta
from dtf_bus.analysis import queries, views
from dtf_bus.analysis.stats import BenchRule, SlowerRule
from dtf_bus.store.archive import Refused

Read = Callable[[Any], Any]


class QueryError(ValueError):
    """Arguments a query cannot take; the message names the argument."""


def _text(args: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = args.get(name)
    if value is None or value == "":
        if required:
            raise QueryError(f"{name}: required")
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise QueryError(f"{name}: expected a string of at most 4096 characters")
    return value


def _number(args: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise QueryError(f"{name}: expected a number")
    if not low <= value <= high:
        raise QueryError(f"{name}: must be within {low:g}..{high:g}, got {value:g}")
    return float(value)


def _count(args: dict[str, Any], name: str, default: int, high: int = defaults.HISTORY_MAX_ROWS) -> int:
    value = _number(args, name, default, 0 if name == "offset" else 1, high)
    if value != int(value):
        raise QueryError(f"{name}: expected a whole number")
    return int(value)


def _labels(args: dict[str, Any]) -> dict[str, str]:
    try:
        return runmeta.check_labels(args.get("labels") or {}, "labels")
    except runmeta.MetaError as exc:
        raise QueryError(str(exc)) from None


def _refusing(read: Read) -> Read:
    def run(cursor: Any) -> Any:
        try:
            return read(cursor)
        except queries.NotFound as exc:
            raise Refused(str(exc)) from None

    return run


def _jobs(args: dict[str, Any]) -> Read:
    labels, branch, commit = _labels(args), _text(args, "branch"), _text(args, "commit")
    limit, offset = _count(args, "limit", defaults.JOBS_LIMIT), _count(args, "offset", 0, 1_000_000_000)
    return lambda cursor: queries.jobs(cursor, labels, branch, commit, limit, offset)


def _job(args: dict[str, Any]) -> Read:
    job_id = _text(args, "job_id", required=True)
    return lambda cursor: views.job_report(cursor, job_id)


def rules(args: dict[str, Any]) -> tuple[SlowerRule, BenchRule, int]:
    """The thresholds a compare may override (``slower_spreads``, ``slower_relative``,
    ``slower_absolute``, ``bench_spreads``, ``bench_relative``, ``runs``)."""
    slower = SlowerRule(
        _number(args, "slower_spreads", defaults.SLOWER_SPREADS, 0, 1000),
        _number(args, "slower_relative", defaults.SLOWER_RELATIVE, 0, 1000),
        _number(args, "slower_absolute", defaults.SLOWER_ABSOLUTE_S, 0, 1e6),
    )
    bench = BenchRule(
        _number(args, "bench_spreads", defaults.BENCH_REGRESSION_SPREADS, 0, 1000),
        _number(args, "bench_relative", defaults.BENCH_REGRESSION_RELATIVE, 0, 1000),
    )
    return slower, bench, _count(args, "runs", defaults.HISTORY_RUNS, 1000)


def compare_pair(cursor: Any, args: dict[str, Any], a: str | None, b: str | None, **kw: Any) -> dict[str, Any]:
    """Both given: those two. One (B): the newest job before it that matches the filters (``labels``,
    ``branch``). None: the newest two that match."""
    if a and b:
        return views.compare_runs(cursor, a, b, **kw)
    labels, branch = _labels(args), _text(args, "branch")
    if b:
        newer = queries.resolve(cursor, b)
        older = queries.select(cursor, labels, branch, None, 1, before=newer["submitted_at"], exclude=newer["job_id"])
        if not older:
            raise queries.NotFound(f"no earlier job than {newer['job_id']} matches the filters to compare with")
        return views.compare_runs(cursor, older[0]["job_id"], newer["job_id"], **kw)
    last = queries.select(cursor, labels, branch, None, 2)
    if len(last) < 2:
        raise queries.NotFound(f"{len(last)} job(s) match the filters; compare needs two")
    return views.compare_runs(cursor, last[1]["job_id"], last[0]["job_id"], **kw)


def _compare(args: dict[str, Any]) -> Read:
    a, b = _text(args, "a"), _text(args, "b")
    if a and not b:
        raise QueryError("a: give b too (or only b, or neither)")
    _labels(args)
    _text(args, "branch")
    slower, bench, runs = rules(args)
    return lambda cursor: compare_pair(cursor, args, a, b, slower=slower, bench=bench, runs=runs)


def _flaky(args: dict[str, Any]) -> Read:
    since = _number(args, "since", 0.0, 0, 1e11)
    limit = _count(args, "limit", defaults.HISTORY_MAX_ROWS)
    return lambda cursor: queries.flaky(cursor, since, limit)


def _history(args: dict[str, Any]) -> Read:
    nodeid = _text(args, "nodeid", required=True)
    limit = _count(args, "limit", defaults.TEST_HISTORY_LIMIT)
    return lambda cursor: queries.history(cursor, nodeid, limit)


def _benchmarks(args: dict[str, Any]) -> Read:
    name = _text(args, "benchmark")
    jobs = _count(args, "jobs", 50, 1000)
    return lambda cursor: views.benchmark_series(cursor, name, jobs)


QUERIES: dict[str, Callable[[dict[str, Any]], Read]] = {
    "jobs": _jobs,
    "job": _job,
    "compare": _compare,
    "flaky": _flaky,
    "history": _history,
    "benchmarks": _benchmarks,
}


def reader(what: str, args: dict[str, Any]) -> Read:
    """The read answering ``what`` with ``args``; QueryError for an unknown query or a bad argument.
    The read raises :class:`Refused` for what the store does not hold."""
    make = QUERIES.get(what)
    if make is None:
        raise QueryError(f"unknown query {what!r} (one of {', '.join(QUERIES)})")
    if not isinstance(args, dict):
        raise QueryError("args: expected a table")
    return _refusing(make(args))
