"""The rules of dtf compare and dtf flaky, on plain rows: what counts as a new failure, a fix, a
slower test, a benchmark regression, a flaky test."""

from __future__ import annotations

import pytest

from dtf_bus.analysis import compare, flaky, outcomes, stats

pytestmark = pytest.mark.unit


def row(nodeid, outcome, duration=0.01, at=1.0, **extra):
    return {"nodeid": nodeid, "outcome": outcome, "duration_s": duration, "recorded_at": at, **extra}


def test_a_run_keeps_the_last_row_of_a_test_but_a_pass_on_rerun_makes_it_flaky():
    final = outcomes.final_outcomes(
        [
            row("t::a", "failed", at=1.0),
            row("t::a", "flaky", at=2.0),
            row("t::b", "failed", at=1.0, attempt=1),
            row("t::b", "passed", at=1.0, attempt=2),  # a retried task: the later attempt decides
            row("t::c", "passed", at=3.0),
            row("t::c", "failed", at=4.0),
        ]
    )
    assert {n: r["outcome"] for n, r in final.items()} == {"t::a": "flaky", "t::b": "passed", "t::c": "failed"}


def test_compare_sorts_tests_into_new_failures_fixed_added_and_removed():
    a = {n: row(n, o) for n, o in [("keep", "passed"), ("breaks", "passed"), ("heals", "failed"), ("gone", "passed"),
                                    ("skips", "failed"), ("was_skipped", "skipped"), ("still", "error")]}  # fmt: skip
    b = {n: row(n, o) for n, o in [("keep", "passed"), ("breaks", "failed"), ("heals", "flaky"), ("new_ok", "passed"),
                                    ("new_bad", "error"), ("skips", "skipped"), ("was_skipped", "failed"),
                                    ("still", "failed")]}  # fmt: skip
    result = compare.compare_tests(a, b, {})
    names = {key: [t["nodeid"] for t in items] for key, items in result.items()}
    # A test added failing is a new failure too; one that fails in both is not new; skip -> fail is.
    assert names["new_failures"] == ["breaks", "new_bad", "was_skipped"]
    assert [t["was"] for t in result["new_failures"]] == ["passed", None, "skipped"]
    # Fixed means passing now (flaky counts: it passed on rerun); a failure turned skip is not fixed.
    assert names["fixed"] == ["heals"]
    assert names["added"] == ["new_bad", "new_ok"]
    assert names["removed"] == ["gone"]
    assert names["slower"] == []
    assert compare.regressed({**result, "benchmark_regressions": []})
    assert not compare.regressed({k: [] for k in compare.KEYS})


def test_slower_needs_more_than_the_spread_of_history_and_the_floors():
    rule = stats.SlowerRule(spreads=3.0, relative=0.25, absolute=0.1)
    noisy = [1.0, 1.4, 0.8, 1.2, 0.9, 1.3, 1.1]  # median 1.1, MAD 0.2 -> sigma 0.2965
    baseline, threshold = rule.threshold(noisy)
    assert baseline == 1.1 and threshold == pytest.approx(1.1 + 3 * 1.4826 * 0.2)
    steady = [1.0] * 7  # no spread: the relative floor decides
    assert rule.threshold(steady) == (1.0, 1.25)
    tiny = [0.001, 0.002, 0.001]  # milliseconds: the absolute floor decides
    assert rule.threshold(tiny)[1] == pytest.approx(0.101)

    def slower(history, a, b):
        result = compare.compare_tests({"t": row("t", "passed", a)}, {"t": row("t", "passed", b)}, {"t": history})
        return result["slower"]

    assert slower(noisy, 1.0, 1.9) == []  # within 3 sigmas of a noisy history
    assert [s["nodeid"] for s in slower(noisy, 1.0, 2.1)] == ["t"]
    assert slower(steady, 1.0, 1.2) == [] and slower(steady, 1.0, 1.3)
    assert slower(tiny, 0.001, 0.09) == [] and slower(tiny, 0.001, 0.2)
    found = slower([], 0.01, 0.5)[0]  # no history: A's own duration is the baseline
    assert found["baseline_s"] == 0.01 and found["runs"] == 1 and found["ratio"] == pytest.approx(50)
    # A test failing in either run is judged by its outcome, never by its time.
    result = compare.compare_tests({"t": row("t", "passed", 0.01)}, {"t": row("t", "failed", 5.0)}, {})
    assert result["slower"] == [] and result["new_failures"]


def bench(job, value, device="gpu-a", **params):
    return {"job_id": job, "benchmark": "matmul", "params": params or {"n": 64}, "device": device,
            "hardware": ["cuda"], "p50_ms": value, "unit": "TFLOP/s"}  # fmt: skip


def test_benchmark_regressions_per_benchmark_parameters_and_hardware():
    a = [bench("A", 10.0), bench("A", 10.2), bench("A", 9.8), bench("A", 5.0, device="gpu-b")]
    b = [bench("B", 11.0), bench("B", 11.1), bench("B", 10.9), bench("B", 5.1, device="gpu-b"), bench("B", 1, n=8)]
    found = compare.compare_benchmarks(a, b)
    assert [(r["hardware"], r["metric"]) for r in found] == [("gpu-a", "p50_ms")]
    assert found[0]["a"] == 10.0 and found[0]["b"] == 11.0 and found[0]["worse_by"] == pytest.approx(0.1)
    assert found[0]["params"] == {"n": 64} and found[0]["unit"] == "ms"
    # The same change within the spread of stored runs is noise, not a regression.
    history = [bench(f"h{i}", v) for i, v in enumerate([10.0, 11.5, 9.0, 12.0, 8.5])]
    assert compare.compare_benchmarks(a, b, history) == []
    # Throughput: higher is better, so a drop is the regression.
    a_tp = [{**bench("A", None), "throughput": 100.0}]
    b_tp = [{**bench("B", None), "throughput": 80.0}]
    (drop,) = compare.compare_benchmarks(a_tp, b_tp)
    assert drop["metric"] == "throughput" and drop["higher_is_better"] and drop["worse_by"] == pytest.approx(0.2)
    assert compare.compare_benchmarks(b_tp, a_tp) == []


def test_a_series_marks_each_run_that_regressed_against_the_one_before():
    runs = [[10.0], [10.1], [9.9], [13.0], [13.1]]
    marks = compare.mark_regressions(runs, higher=False)
    assert [flag for _, flag in marks] == [False, False, False, True, False]
    assert marks[0][0] is None and marks[3][0] == pytest.approx(3.1 / 9.9)
    assert compare.mark_regressions([], higher=False) == []


def frow(nodeid, outcome, job, commit=None, dirty=False, at=1.0):
    return {"nodeid": nodeid, "outcome": outcome, "job_id": job, "commit": commit, "dirty": dirty, "recorded_at": at}


def test_flaky_means_both_outcomes_on_the_same_code_or_a_pass_on_rerun():
    rows = [
        # Both outcomes on one clean commit, in two jobs: flaky.
        frow("t::mixed", "passed", "j1", "c1", at=1),
        frow("t::mixed", "failed", "j2", "c1", at=2),
        frow("t::mixed", "passed", "j3", "c2", at=3),
        # Failed on c1, passed on c2: maybe fixed, not flaky.
        frow("t::fixed", "failed", "j1", "c1", at=1),
        frow("t::fixed", "passed", "j3", "c2", at=3),
        # A dirty checkout is code of its own: not the same code as the clean c1.
        frow("t::dirty", "passed", "j1", "c1", at=1),
        frow("t::dirty", "failed", "j4", "c1", dirty=True, at=4),
        # Passed only on rerun within one job.
        frow("t::rerun", "failed", "j5", None, dirty=None, at=5),
        frow("t::rerun", "flaky", "j5", None, dirty=None, at=6),
        # Skips are neither outcome.
        frow("t::skip", "skipped", "j1", "c1", at=1),
        frow("t::skip", "passed", "j2", "c1", at=2),
    ]
    found = {t["nodeid"]: t for t in flaky.find_flaky(rows)}
    assert sorted(found) == ["t::mixed", "t::rerun"]
    mixed = found["t::mixed"]
    assert (mixed["runs"], mixed["passed"], mixed["failed"], mixed["mixed"], mixed["commits"]) == (3, 2, 1, 1, ["c1"])
    assert mixed["last_seen"] == 3 and mixed["last_outcome"] == "passed"
    rerun = found["t::rerun"]
    assert (rerun["passed_on_rerun"], rerun["failed"], rerun["mixed"], rerun["commits"]) == (1, 1, 1, [])
    assert [t["nodeid"] for t in flaky.find_flaky(rows)] == ["t::rerun", "t::mixed"]  # newest evidence first
