"""Benchmark statistics and param checks shared by the cpu and cuda plugins."""

from __future__ import annotations

import pytest

from dtf_plugins import bench
from dtf_plugins.pytest_runner import build_argv

pytestmark = pytest.mark.unit


def test_percentiles_interpolate_like_numpy():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 90) == pytest.approx(90.1)
    assert bench.percentile(values, 99) == pytest.approx(99.01)
    assert bench.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_record_throughput_uses_the_median():
    samples = [0.010, 0.010, 0.010, 1.0]  # one outlier
    rec = bench.record("matmul", {"n": 8}, samples, work=2.0, unit="GFLOP/s", warmup=1, memory_bytes=64)
    assert rec["latency_ms"]["p50"] == pytest.approx(10.0)
    assert rec["throughput"] == pytest.approx(200.0)
    assert rec["latency_ms"]["p50"] <= rec["latency_ms"]["p90"] <= rec["latency_ms"]["p99"] <= rec["latency_ms"]["max"]
    assert (rec["iterations"], rec["warmup"], rec["unit"], rec["memory_bytes"]) == (4, 1, "GFLOP/s", 64)


def test_measure_runs_warmup_untimed():
    calls = []
    samples = bench.measure(lambda: calls.append(1), warmup=2, iterations=3)
    assert len(calls) == 5 and len(samples) == 3 and all(s >= 0 for s in samples)
    fixed = bench.measure(lambda: None, warmup=0, iterations=2, timer=lambda fn: 0.5)
    assert fixed == [0.5, 0.5]


def test_param_checks_name_the_param():
    assert bench.choose({"b": "x"}, "b", ("x", "y"), ["y"]) == ["x"]
    with pytest.raises(ValueError, match="param 'b'"):
        bench.choose({"b": ["z"]}, "b", ("x", "y"), ["y"])
    with pytest.raises(ValueError, match="param 'n' must be an integer >= 1"):
        bench.positive_int({"n": 0}, "n", 5)


def test_pytest_command_line():
    argv = build_argv({"targets": "t.py", "k": "fast", "rootdir": "/r", "args": "-x --tb=short"}, "/tmp/r.xml")
    assert argv[1:4] == ["-m", "pytest", "t.py"]
    assert "--junitxml=/tmp/r.xml" in argv and "--rootdir=/r" in argv and "no:cacheprovider" in argv
    assert argv[argv.index("-k") + 1] == "fast" and argv[-2:] == ["-x", "--tb=short"]
