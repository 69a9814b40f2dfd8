"""Composite answers: two runs compared, one run's report, benchmarks over commits.

Each reads what it needs through :mod:`~dtf_bus.analysis.queries` and lets the pure functions
of :mod:`~dtf_bus.analysis.compare` judge it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from dtf_bus import defaults
from dtf_bus.analysis import compare as comparing
from dtf_bus.analysis import queries
from dtf_bus.analysis.outcomes import final_outcomes, is_failing
from dtf_bus.analysis.stats import BenchRule, SlowerRule

Cursor = Any


def compare_runs(
    cursor: Cursor,
    a_sel: str,
    b_sel: str,
    slower: SlowerRule | None = None,
    bench: BenchRule | None = None,
    runs: int = defaults.HISTORY_RUNS,
) -> dict[str, Any]:
    """Run B against run A (job ids, or selectors as :func:`queries.resolve` takes them; a
    selector for A never picks B itself): the six lists of :mod:`~dtf_bus.analysis.compare`,
    both jobs (``a``, ``b``), ``regressed`` and the ``rules`` used."""
    slower, bench = slower or SlowerRule(), bench or BenchRule()
    b = queries.resolve(cursor, b_sel)
    a = queries.resolve(cursor, a_sel, exclude=b["job_id"])
    a_tests = final_outcomes(queries.test_rows(cursor, a["job_id"]))
    b_tests = final_outcomes(queries.test_rows(cursor, b["job_id"]))
    failing = [n for n, r in b_tests.items() if is_failing(r.get("outcome"))]
    for nodeid, details in queries.failure_details(cursor, b["job_id"], failing).items():
        b_tests[nodeid] = {**b_tests[nodeid], "details": details}
    history = queries.duration_history(cursor, sorted(a_tests.keys() & b_tests.keys()), a["submitted_at"], runs)
    result: dict[str, Any] = {"a": a, "b": b, **comparing.compare_tests(a_tests, b_tests, history, slower)}
    b_bench = queries.bench_rows(cursor, "b.job_id = ?", [b["job_id"]])
    a_bench = queries.bench_rows(cursor, "b.job_id = ?", [a["job_id"]])
    names = sorted({r["benchmark"] for r in b_bench})
    past = []
    if names:
        past = queries.bench_rows(
            cursor,
            "b.benchmark IN (SELECT unnest(?)) AND j.submitted_at <= (SELECT submitted_at FROM jobs WHERE job_id = ?) "
            "AND b.job_id <> ? ORDER BY j.submitted_at DESC LIMIT ?",
            [names, a["job_id"], b["job_id"], defaults.HISTORY_MAX_ROWS],
        )
    result["benchmark_regressions"] = comparing.compare_benchmarks(a_bench, b_bench, _newest_jobs(past, runs), bench)
    result["regressed"] = comparing.regressed(result)
    result["rules"] = {"slower": slower.as_dict(), "benchmarks": bench.as_dict(), "history_runs": runs}
    return result


def _newest_jobs(rows: list[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Rows of the newest ``runs`` jobs per benchmark key (``rows`` come newest first)."""
    kept: dict[tuple[str, str, str], list[str]] = {}
    out = []
    for row in rows:
        seen = kept.setdefault(comparing.bench_key(row), [])
        if row["job_id"] not in seen:
            if len(seen) >= runs:
                continue
            seen.append(row["job_id"])
        out.append(row)
    return out


def job_report(
    cursor: Cursor,
    job_id: str,
    slowest: int = 10,
    failures: int = 100,
    matrix_rows: int = 200,
) -> dict[str, Any]:
    """One run as a test lead reads it: the job with its metadata and task counts; its tests per
    outcome; the failing ones with their tracebacks; tasks that failed on their own (crashes,
    placement timeouts, plugin errors) with the broker's error; the slowest tests; and an
    outcome matrix, test by hardware, failures and tests whose outcome differs by hardware first."""
    job = queries.job(cursor, job_id)
    queries.add_counts(cursor, [job])
    rows = queries.test_rows(cursor, job_id)
    final = final_outcomes(rows)
    failing = sorted(n for n, r in final.items() if is_failing(r.get("outcome")))
    details = queries.failure_details(cursor, job_id, failing[:failures])
    tasks = cursor.execute(
        "SELECT task_id, name, plugin, state, worker_id, error FROM tasks WHERE job_id = ? "
        "AND state IN ('failed', 'timed_out', 'cancelled') ORDER BY seq LIMIT ?",
        [job_id, failures],
    ).fetchall()
    ranked = sorted((r for r in final.values() if r.get("duration_s") is not None), key=lambda r: -r["duration_s"])
    return {
        "job": job,
        "tests": dict(Counter(r.get("outcome") for r in final.values())),
        "failing": [
            {
                "nodeid": n,
                "outcome": final[n].get("outcome"),
                "message": final[n].get("message") or "",
                "details": details.get(n, ""),
                "worker_id": final[n].get("worker_id"),
                "hardware": list(final[n].get("hardware") or []),
                "duration_s": final[n].get("duration_s"),
            }
            for n in failing[:failures]
        ],
        "failing_total": len(failing),
        "failed_tasks": [
            dict(zip(("task_id", "name", "plugin", "state", "worker_id", "error"), t, strict=True)) for t in tasks
        ],
        "slowest": [
            {
                "nodeid": r["nodeid"],
                "duration_s": r["duration_s"],
                "outcome": r.get("outcome"),
                "worker_id": r.get("worker_id"),
            }
            for r in ranked[:slowest]
        ],
        "matrix": outcome_matrix(rows, matrix_rows),
    }


def outcome_matrix(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Test x hardware (the worker's hardware list) -> the last outcome there. Rows with a failure,
    or with outcomes that differ between hardware, come first; at most ``limit`` rows."""
    cells: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda r: (r.get("recorded_at") or 0.0, r.get("attempt") or 0)):
        hw = ",".join(row.get("hardware") or []) or "?"
        cells.setdefault(row["nodeid"], {})[hw] = row.get("outcome") or ""
    hardware = sorted({hw for per in cells.values() for hw in per})

    def rank(nodeid: str) -> tuple[int, str]:
        outcomes = set(cells[nodeid].values())
        return (0 if any(is_failing(o) for o in outcomes) else 1 if len(outcomes) > 1 else 2), nodeid

    ordered = sorted(cells, key=rank)
    return {
        "hardware": hardware,
        "rows": [{"nodeid": n, "outcomes": [cells[n].get(hw) for hw in hardware]} for n in ordered[:limit]],
        "total": len(cells),
    }


def benchmark_series(
    cursor: Cursor, benchmark: str | None = None, jobs: int = 50, rule: BenchRule | None = None
) -> dict[str, Any]:
    """Each (benchmark, parameters, hardware) over the last ``jobs`` runs that measured it, oldest
    first: per run its commit and the median of its metric, and whether it regressed against the
    run before (:func:`~dtf_bus.analysis.compare.mark_regressions`)."""
    where, params = "TRUE", []
    if benchmark:
        where, params = "b.benchmark = ?", [benchmark]
    names = [n for (n,) in cursor.execute("SELECT DISTINCT benchmark FROM benchmark_results ORDER BY 1").fetchall()]
    rows = queries.bench_rows(
        cursor,
        f"{where} AND b.job_id IN (SELECT job_id FROM benchmark_results JOIN jobs USING (job_id) "
        "GROUP BY job_id ORDER BY max(jobs.submitted_at) DESC LIMIT ?) ORDER BY j.submitted_at",
        [*params, jobs],
    )
    series = []
    for key, members in sorted(comparing.group_bench(rows).items()):
        chosen = comparing.metric_of(members)
        if chosen is None:
            continue
        metric, higher = chosen
        per_job: dict[str, list[dict[str, Any]]] = {}
        for row in members:
            per_job.setdefault(row["job_id"], []).append(row)
        runs = list(per_job.values())
        marks = comparing.mark_regressions([[float(r[metric]) for r in run] for run in runs], higher, rule)
        series.append(
            {
                "benchmark": key[0],
                "params": members[0]["params"],
                "hardware": key[2],
                "metric": metric,
                "unit": "ms" if metric.endswith("_ms") else members[0].get("unit"),
                "higher_is_better": higher,
                "points": [
                    {
                        "job_id": run[0]["job_id"],
                        "commit": run[0]["commit"],
                        "branch": run[0]["branch"],
                        "submitted_at": run[0]["submitted_at"],
                        "value": statistics.median(float(r[metric]) for r in run),
                        "worse_by": worse,
                        "regression": flagged,
                    }
                    for run, (worse, flagged) in zip(runs, marks, strict=True)
                ],
            }
        )
    return {"benchmarks": names, "series": series}
