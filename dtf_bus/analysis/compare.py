"""Two runs side by side: what broke, what was fixed, what appeared, what got slower.

Pure functions over rows (``outcomes.final_outcomes`` of each run, durations from history), so
every rule is unit-tested without a database; :mod:`dtf_bus.analysis.queries` feeds them.

- ``new_failures``: failing (failed, error) in B and not failing in A, including tests A did
  not have: a test added failing is a regression too.
- ``fixed``: failing in A, passing in B (passed, flaky, xfailed, xpassed). A failure turned skip
  is neither: nothing shows it works.
- ``added`` / ``removed``: in one run only.
- ``slower``: passing in both, and B's duration past :class:`~dtf_bus.analysis.stats.SlowerRule`'s
  threshold over the test's history up to A.
- ``benchmark_regressions``: per (benchmark, parameters, hardware) in both runs, B's median worse
  than A's by more than :class:`~dtf_bus.analysis.stats.BenchRule`'s limit.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dtf_bus import defaults
from dtf_bus.analysis.outcomes import Row, is_failing, is_passing
from dtf_bus.analysis.stats import BenchRule, SlowerRule, relative_spread

KEYS = ("new_failures", "fixed", "added", "removed", "slower", "benchmark_regressions")
# Benchmark metrics in order of preference, and whether more is better.
METRICS = (("p50_ms", False), ("throughput", True), ("mean_ms", False))


def _test(row: Row) -> dict[str, Any]:
    return {
        "nodeid": row["nodeid"],
        "outcome": row.get("outcome"),
        "duration_s": row.get("duration_s"),
        "message": row.get("message") or "",
        "worker_id": row.get("worker_id"),
        "hardware": list(row.get("hardware") or []),
    }


def compare_tests(
    a: Mapping[str, Row],
    b: Mapping[str, Row],
    history: Mapping[str, Sequence[float]],
    rule: SlowerRule | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``a`` and ``b``: nodeid -> final row of each run; ``history``: nodeid -> durations of its
    passing runs up to and including A (A's own duration stands in where it is missing)."""
    rule = rule or SlowerRule()
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KEYS[:5]}
    for nodeid in sorted(b.keys() | a.keys()):
        new, old = b.get(nodeid), a.get(nodeid)
        if new is None:
            out["removed"].append({**_test(old), "was": old.get("outcome")})
            continue
        was = old.get("outcome") if old is not None else None
        if old is None:
            out["added"].append(_test(new))
        if is_failing(new.get("outcome")) and not is_failing(was):
            out["new_failures"].append({**_test(new), "was": was, "details": new.get("details") or ""})
        elif old is not None and is_failing(was) and is_passing(new.get("outcome")):
            out["fixed"].append({**_test(new), "was": was})
        if old is None or not (is_passing(was) and is_passing(new.get("outcome"))):
            continue
        took = new.get("duration_s")
        past = [d for d in history.get(nodeid, ()) if d is not None]
        if not past and old.get("duration_s") is not None:
            past = [old["duration_s"]]
        if took is None or not past:
            continue
        baseline, threshold = rule.threshold(past)
        if took > threshold:
            out["slower"].append(
                {
                    "nodeid": nodeid,
                    "a_s": old.get("duration_s"),
                    "b_s": took,
                    "baseline_s": baseline,
                    "threshold_s": threshold,
                    "ratio": took / baseline if baseline else None,
                    "runs": len(past),
                }
            )
    out["slower"].sort(key=lambda s: -(s["ratio"] or float("inf")))
    return out


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def hardware_of(row: Row) -> str:
    """What a benchmark ran on, for grouping: the device (GPU name, else CPU model), else the hardware list."""
    return str(row.get("device") or ",".join(row.get("hardware") or []) or "?")


def bench_key(row: Row) -> tuple[str, str, str]:
    """(benchmark, parameters as canonical JSON, hardware): what must match for two rows to compare."""
    return str(row.get("benchmark")), json.dumps(_params(row.get("params")), sort_keys=True), hardware_of(row)


def metric_of(rows: Iterable[Row]) -> tuple[str, bool] | None:
    """The first metric of METRICS every row has, with whether more is better."""
    rows = list(rows)
    for name, higher in METRICS:
        if rows and all(isinstance(r.get(name), int | float) for r in rows):
            return name, higher
    return None


def group_bench(rows: Iterable[Row]) -> dict[tuple[str, str, str], list[Row]]:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault(bench_key(row), []).append(row)
    return groups


def judge(
    a_values: Sequence[float], b_values: Sequence[float], medians: Sequence[float], higher: bool, rule: BenchRule
) -> tuple[float, float, float]:
    """``(worse_by, limit, spread)`` of B's values against A's: how much worse B's median is (a
    fraction of A's; negative when better), the limit it must pass to count as a regression, and
    the relative spread behind that limit: of the stored runs' medians, and of A's and B's repeats."""
    a_med, b_med = statistics.median(a_values), statistics.median(b_values)
    worse = ((a_med - b_med) if higher else (b_med - a_med)) / a_med if a_med > 0 else 0.0
    spread = max(relative_spread(medians), relative_spread(a_values), relative_spread(b_values))
    return worse, rule.limit(spread), spread


def compare_benchmarks(
    a_rows: Iterable[Row],
    b_rows: Iterable[Row],
    history: Iterable[Row] = (),
    rule: BenchRule | None = None,
) -> list[dict[str, Any]]:
    """Regressions of B against A per (benchmark, parameters, hardware). ``history``: stored rows
    of earlier runs up to A (A's own rows may be among them), with ``job_id``."""
    rule = rule or BenchRule()
    a, b = group_bench(a_rows), group_bench(b_rows)
    past = group_bench(history)
    found = []
    for key in sorted(a.keys() & b.keys()):
        chosen = metric_of(a[key] + b[key])
        if chosen is None:
            continue
        metric, higher = chosen
        a_values = [float(r[metric]) for r in a[key]]
        b_values = [float(r[metric]) for r in b[key]]
        per_job: dict[str, list[float]] = {}
        for row in past.get(key, []):
            if isinstance(row.get(metric), int | float):
                per_job.setdefault(str(row.get("job_id")), []).append(float(row[metric]))
        medians = [statistics.median(v) for v in per_job.values()]
        worse, limit, spread = judge(a_values, b_values, medians, higher, rule)
        if worse > limit:
            found.append(
                {
                    "benchmark": key[0],
                    "params": json.loads(key[1]),
                    "hardware": key[2],
                    "metric": metric,
                    "unit": "ms" if metric.endswith("_ms") else b[key][0].get("unit"),
                    "higher_is_better": higher,
                    "a": statistics.median(a_values),
                    "b": statistics.median(b_values),
                    "worse_by": worse,
                    "limit": limit,
                    "spread": spread,
                    "runs": len(medians),
                }
            )
    found.sort(key=lambda r: -r["worse_by"])
    return found


def mark_regressions(
    runs: Sequence[Sequence[float]], higher: bool, rule: BenchRule | None = None, window: int = defaults.HISTORY_RUNS
) -> list[tuple[float | None, bool]]:
    """For a series of runs (each run's values, oldest first): ``(worse_by, regressed)`` of each
    run against the one before it, judged as :func:`compare_benchmarks` judges B against A with
    the ``window`` runs before it as history. The first run has nothing to compare with."""
    rule = rule or BenchRule()
    marks: list[tuple[float | None, bool]] = [(None, False)] if runs else []
    medians = [statistics.median(v) for v in runs]
    for i in range(1, len(runs)):
        worse, limit, _ = judge(runs[i - 1], runs[i], medians[max(0, i - window) : i], higher, rule)
        marks.append((worse, worse > limit))
    return marks


def regressed(result: Mapping[str, Any]) -> bool:
    """What fails a CI gate: a new failure, a slower test or a benchmark regression."""
    return bool(result.get("new_failures") or result.get("slower") or result.get("benchmark_regressions"))
