"""What every benchmark plugin shares: the timing loop, percentiles and the record shape.

A benchmark result is ``{"benchmarks": [record, ...], "environment": {...}}`` where a record
is::

    {"name": "matmul", "params": {"n": 512, "precision": "fp32", ...},
     "warmup": 3, "iterations": 20,
     "latency_ms": {"p50": ..., "p90": ..., "p99": ..., "mean": ..., "min": ..., "max": ...},
     "throughput": 123.4, "unit": "GFLOP/s", "memory_bytes": 2097152}

``throughput`` is the work of one iteration divided by the median latency, so one slow
outlier does not move it. The broker's ResultRows hook stores each record as a row of
``benchmark_results``; a user's own function run by the ``python`` plugin gets the same
treatment by returning this shape.

This module is imported inside benchmark subprocesses: stdlib only.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from dtf_bus import defaults


class Unavailable(RuntimeError):
    """This benchmark cannot run on this machine; the message says why, for the user."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99, mean, min and max of per-iteration latencies, in milliseconds."""
    ordered = sorted(seconds)
    ms = 1000.0
    return {
        "p50": percentile(ordered, 50) * ms,
        "p90": percentile(ordered, 90) * ms,
        "p99": percentile(ordered, 99) * ms,
        "mean": sum(ordered) / len(ordered) * ms,
        "min": ordered[0] * ms,
        "max": ordered[-1] * ms,
    }


def measure(
    fn: Callable[[], Any],
    warmup: int = defaults.BENCH_WARMUP,
    iterations: int = defaults.BENCH_ITERATIONS,
    timer: Callable[[Callable[[], Any]], float] | None = None,
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``iterations`` times; seconds per iteration.

    ``timer(fn) -> seconds`` replaces the wall clock, e.g. with CUDA events for GPU work.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        if timer is not None:
            samples.append(timer(fn))
        else:
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
    return samples


def record(
    name: str,
    params: dict[str, Any],
    samples: list[float],
    work: float,
    unit: str,
    warmup: int,
    memory_bytes: int | None = None,
) -> dict[str, Any]:
    """One benchmark record; ``work`` is what one iteration does, in ``unit``'s numerator."""
    latency = latency_summary(samples)
    median_s = latency["p50"] / 1000.0
    return {
        "name": name,
        "params": params,
        "warmup": warmup,
        "iterations": len(samples),
        "latency_ms": {k: round(v, 6) for k, v in latency.items()},
        "throughput": round(work / median_s, 6) if median_s > 0 else None,
        "unit": unit,
        "memory_bytes": memory_bytes,
    }


def positive_int(params: dict[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"param {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def choose(params: dict[str, Any], key: str, known: tuple[str, ...], default: list[str]) -> list[str]:
    """A list param whose items must come from ``known`` (a single string is a list of one)."""
    value = params.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(v in known for v in value):
        raise ValueError(f"param {key!r} must be a list of {', '.join(known)}; got {value!r}")
    return list(dict.fromkeys(value))


def base_environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform,
        "machine": platform.machine(),
    }
