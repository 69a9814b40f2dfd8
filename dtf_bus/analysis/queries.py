"""DuckDB reads behind ``dtf jobs|compare|flaky|history`` and the API's history endpoints.

Each function takes a cursor of its own (the broker's archive thread or the API's reader pool
opens it; neither ever reads on a loop) and returns plain JSON-able values. The judging is done
by the pure functions of :mod:`~dtf_bus.analysis.compare` and :mod:`~dtf_bus.analysis.flaky`.
Timestamps are epoch seconds.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from dtf_bus import defaults
from dtf_bus.analysis import flaky as flakiness
from dtf_bus.analysis.outcomes import FAILING
from dtf_bus.store import rows as store_rows
from dtf_bus.store import schema

Cursor = Any  # a duckdb.DuckDBPyConnection

# The jobs table as the readers show it: the git_ columns under their Job.meta names.
JOB_FIELDS = tuple(store_rows.JOB_META.get(c, c) for c in schema.JOBS.names)
_JOB_SELECT = f"SELECT {schema.JOBS.select()} FROM jobs"
STATES = ("queued", "assigned", "running", "succeeded", "failed", "timed_out", "cancelled")
_UNFINISHED = ("queued", "assigned", "running")
# A job's test rows as `dtf jobs ID` and /api/jobs/ID list them; details are read apart, per failure.
_TEST_FIELDS = tuple(c for c in schema.TEST_RESULTS.names if c not in ("details", "phase", "rootdir"))
_TEST_SELECT = f"SELECT {schema.TEST_RESULTS.select(_TEST_FIELDS)} FROM test_results"
_BENCH_SELECT = (
    "SELECT b.job_id, b.benchmark, b.params, b.hardware, b.device, b.p50_ms, b.mean_ms, b.throughput, b.unit, "
    "b.p90_ms, epoch(j.submitted_at), j.git_commit, j.git_branch FROM benchmark_results b JOIN jobs j USING (job_id)"
)
_BENCH_FIELDS = (
    "job_id",
    "benchmark",
    "params",
    "hardware",
    "device",
    "p50_ms",
    "mean_ms",
    "throughput",
    "unit",
    "p90_ms",
    "submitted_at",
    "commit",
    "branch",
)


class NotFound(LookupError):
    """A job, selector or test the store does not know; the message says which."""


def _job(row: tuple) -> dict[str, Any]:
    job = dict(zip(JOB_FIELDS, row, strict=True))
    job["labels"] = json.loads(job["labels"]) if job["labels"] else {}
    return job


def _filters(labels: dict[str, str] | None, branch: str | None, commit: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for key, value in (labels or {}).items():
        where.append("json_extract_string(labels, ?) = ?")
        params += [f'$."{key}"', value]
    if branch:
        where.append("git_branch = ?")
        params.append(branch)
    if commit:
        where.append("starts_with(git_commit, ?)")
        params.append(commit.lower())
    return where, params


def jobs(
    cursor: Cursor,
    labels: dict[str, str] | None = None,
    branch: str | None = None,
    commit: str | None = None,
    limit: int = defaults.JOBS_LIMIT,
    offset: int = 0,
    counts: bool = True,
) -> list[dict[str, Any]]:
    """The newest jobs first, with their metadata and (``counts``) tasks per state."""
    where, params = _filters(labels, branch, commit)
    sql = _JOB_SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY submitted_at DESC, job_id DESC LIMIT ? OFFSET ?"
    found = [_job(r) for r in cursor.execute(sql, [*params, limit, offset]).fetchall()]
    if counts:
        add_counts(cursor, found)
    return found


def add_counts(cursor: Cursor, found: list[dict[str, Any]]) -> None:
    """Each job's tasks per state (``counts``), ``finished`` (final ones), ``done``, ``ended_at``,
    and its tests per outcome (``tests``)."""
    if found:
        by_id = {j["job_id"]: j for j in found}
        for job in found:
            job["counts"] = {}
            job["ended_at"] = None
        rows = cursor.execute(
            "SELECT job_id, state, count(*), max(epoch(ended_at)) FROM tasks WHERE job_id IN (SELECT unnest($1)) "
            "GROUP BY job_id, state",
            [list(by_id)],
        ).fetchall()
        for job_id, state, n, ended in rows:
            job = by_id[job_id]
            job["counts"][state] = n
            if ended is not None:
                job["ended_at"] = max(job["ended_at"] or 0.0, ended)
        for job in found:
            job["tests"] = {}
        for job_id, outcome, n in cursor.execute(
            # Each test's run outcome, as outcomes.final_outcomes decides it: its last row, flaky if a rerun passed.
            "SELECT job_id, outcome, count(*) FROM (SELECT job_id, nodeid, CASE WHEN bool_or(outcome = 'flaky') "
            "THEN 'flaky' ELSE arg_max(outcome, recorded_at) END AS outcome FROM test_results "
            "WHERE job_id IN (SELECT unnest($1)) GROUP BY job_id, nodeid) GROUP BY job_id, outcome",
            [list(by_id)],
        ).fetchall():
            by_id[job_id]["tests"][outcome] = n
        for job in found:
            c = job["counts"]
            job["done"] = bool(c) and not any(c.get(s) for s in _UNFINISHED)
            job["finished"] = sum(v for s, v in c.items() if s not in _UNFINISHED)
            if not job["done"]:
                job["ended_at"] = None


def job(cursor: Cursor, job_id: str) -> dict[str, Any]:
    rows = cursor.execute(_JOB_SELECT + " WHERE job_id = ?", [job_id]).fetchall()
    if not rows:
        raise NotFound(f"unknown job {job_id!r}")
    return _job(rows[0])


def resolve(cursor: Cursor, selector: str, before: float | None = None, exclude: str | None = None) -> dict[str, Any]:
    """A job by id, or the newest matching ``branch:NAME``, ``commit:PREFIX`` or ``label:K=V``
    (submitted before ``before``, other than ``exclude``, when given)."""
    kind, colon, value = selector.partition(":")
    if not colon or kind not in ("branch", "commit", "label"):
        return job(cursor, selector)
    labels = None
    if kind == "label":
        key, eq, label_value = value.partition("=")
        if not eq:
            raise NotFound(f"selector {selector!r}: expected label:KEY=VALUE")
        labels = {key: label_value}
    found = select(
        cursor, labels, value if kind == "branch" else None, value if kind == "commit" else None, 1, before, exclude
    )
    if not found:
        raise NotFound(f"no job matches {selector!r}")
    return found[0]


def select(
    cursor: Cursor,
    labels: dict[str, str] | None,
    branch: str | None,
    commit: str | None,
    limit: int,
    before: float | None = None,
    exclude: str | None = None,
) -> list[dict[str, Any]]:
    """The newest jobs matching the filters (no task counts)."""
    where, params = _filters(labels, branch, commit)
    if before is not None:
        where.append("epoch(submitted_at) <= ?")
        params.append(before)
    if exclude:
        where.append("job_id <> ?")
        params.append(exclude)
    sql = _JOB_SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY submitted_at DESC, job_id DESC LIMIT ?"
    return [_job(r) for r in cursor.execute(sql, [*params, limit]).fetchall()]


def test_rows(cursor: Cursor, job_id: str) -> list[dict[str, Any]]:
    """Every test_results row of a job (without tracebacks: see :func:`failure_details`)."""
    rows = cursor.execute(_TEST_SELECT + " WHERE job_id = ?", [job_id]).fetchall()
    return [dict(zip(_TEST_FIELDS, r, strict=True)) for r in rows]


def failure_details(cursor: Cursor, job_id: str, nodeids: list[str]) -> dict[str, str]:
    """nodeid -> the traceback of its last failing row in the job."""
    if not nodeids:
        return {}
    rows = cursor.execute(
        "SELECT nodeid, details FROM test_results WHERE job_id = ? AND nodeid IN (SELECT unnest(?)) "
        "AND outcome IN ('failed', 'error') ORDER BY recorded_at",
        [job_id, nodeids],
    ).fetchall()
    return {nodeid: details or "" for nodeid, details in rows}


def duration_history(
    cursor: Cursor, nodeids: list[str], until: float, runs: int = defaults.HISTORY_RUNS
) -> dict[str, list[float]]:
    """nodeid -> durations of its last ``runs`` passing runs in jobs submitted up to ``until``."""
    if not nodeids:
        return {}
    rows = cursor.execute(
        """
        SELECT nodeid, duration_s FROM (
            SELECT r.nodeid, r.duration_s,
                   row_number() OVER (PARTITION BY r.nodeid ORDER BY r.recorded_at DESC) AS recency
            FROM test_results r JOIN jobs j USING (job_id)
            WHERE r.nodeid IN (SELECT unnest($1)) AND epoch(j.submitted_at) <= $2
              AND r.outcome IN ('passed', 'flaky') AND r.duration_s IS NOT NULL)
        WHERE recency <= $3
        """,
        [nodeids, until, runs],
    ).fetchall()
    history: dict[str, list[float]] = {}
    for nodeid, seconds in rows:
        history.setdefault(nodeid, []).append(seconds)
    return history


def bench_rows(cursor: Cursor, where: str, params: list[Any]) -> list[dict[str, Any]]:
    rows = cursor.execute(f"{_BENCH_SELECT} WHERE {where}", params).fetchall()
    found = [dict(zip(_BENCH_FIELDS, r, strict=True)) for r in rows]
    for row in found:
        row["params"] = json.loads(row["params"]) if row["params"] else {}
    return found


def flaky(cursor: Cursor, since: float, limit: int = defaults.HISTORY_MAX_ROWS) -> list[dict[str, Any]]:
    """Flaky tests among the runs recorded since ``since`` (epoch seconds)."""
    rows = cursor.execute(
        "SELECT r.nodeid, r.outcome, r.job_id, j.git_commit, j.git_dirty, epoch(r.recorded_at) "
        "FROM test_results r LEFT JOIN jobs j USING (job_id) WHERE epoch(r.recorded_at) >= ?",
        [since],
    ).fetchall()
    fields = ("nodeid", "outcome", "job_id", "commit", "dirty", "recorded_at")
    return flakiness.find_flaky(dict(zip(fields, r, strict=True)) for r in rows)[:limit]


def history(cursor: Cursor, nodeid: str, limit: int = defaults.TEST_HISTORY_LIMIT) -> dict[str, Any]:
    """A test's runs, newest first, with its job's commit and branch, and per hardware its
    pass/fail counts and median duration. A ``nodeid`` that names no test but is the end (or
    a part) of exactly one stored node id means that one; several: NotFound listing them."""
    exact = cursor.execute("SELECT 1 FROM test_results WHERE nodeid = ? LIMIT 1", [nodeid]).fetchall()
    if not exact:
        like = [
            n
            for (n,) in cursor.execute(
                "SELECT DISTINCT nodeid FROM test_results WHERE contains(nodeid, ?) ORDER BY nodeid LIMIT 11", [nodeid]
            ).fetchall()
        ]
        ends = [n for n in like if n.endswith(nodeid)]
        if len(ends) == 1 or len(like) == 1:
            nodeid = ends[0] if len(ends) == 1 else like[0]
        elif like:
            shown = ", ".join(like[:10]) + (" ..." if len(like) > 10 else "")
            raise NotFound(f"{nodeid!r} matches {len(like)} tests: {shown}")
        else:
            raise NotFound(f"no recorded runs of test {nodeid!r}")
    rows = cursor.execute(
        "SELECT r.job_id, epoch(j.submitted_at), j.git_commit, j.git_branch, j.git_dirty, r.outcome, r.duration_s, "
        "r.worker_id, r.hardware, r.message, epoch(r.recorded_at), r.task_id, r.attempt "
        "FROM test_results r LEFT JOIN jobs j USING (job_id) WHERE r.nodeid = ? "
        "ORDER BY r.recorded_at DESC LIMIT ?",
        [nodeid, limit],
    ).fetchall()
    fields = (
        "job_id",
        "submitted_at",
        "commit",
        "branch",
        "dirty",
        "outcome",
        "duration_s",
        "worker_id",
        "hardware",
        "message",
        "recorded_at",
        "task_id",
        "attempt",
    )
    runs = [dict(zip(fields, r, strict=True)) for r in rows]
    per_hw: dict[str, dict[str, Any]] = {}
    for run in runs:
        hw = ",".join(run["hardware"] or []) or "?"
        entry = per_hw.setdefault(hw, {"runs": 0, "passed": 0, "failed": 0, "durations": []})
        entry["runs"] += 1
        entry["passed"] += run["outcome"] in ("passed", "flaky")
        entry["failed"] += run["outcome"] in FAILING
        if run["duration_s"] is not None:
            entry["durations"].append(run["duration_s"])
    hardware = {
        hw: {
            "runs": e["runs"],
            "passed": e["passed"],
            "failed": e["failed"],
            "median_s": statistics.median(e["durations"]) if e["durations"] else None,
        }
        for hw, e in sorted(per_hw.items())
    }
    return {"nodeid": nodeid, "runs": runs, "hardware": hardware}
