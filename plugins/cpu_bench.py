"""cpu: real CPU measurements — matrix multiply GFLOP/s, memory copy bandwidth, interpreter speed.

Params (all optional): ``benchmarks`` (any of ``matmul``, ``memory``, ``interpreter``; default
all), ``warmup`` and ``iterations`` (per benchmark), ``matmul_n`` (matrix side; default 256
with numpy, 48 in pure Python), ``precisions`` (``fp64``, ``fp32``; numpy only, default
both), ``memory_mb`` (buffer size for the copy, default 64), ``backend`` (``auto`` uses
numpy when it is installed, ``numpy``, ``python``).

- matmul: C = A @ B on n x n random matrices, 2n^3 floating-point operations per iteration.
- memory: copy a ``memory_mb`` buffer into another (a memcpy); bandwidth counts the bytes read
  plus the bytes written, as STREAM's copy does.
- interpreter: a fixed pure-Python loop of 100,000 multiply-adds, in Mop/s: how fast this
  machine runs Python itself, the number that predicts a test suite's speed.

Measurements run in a subprocess (so the worker's own threads do not disturb them, and a
timeout kills them like any command); results are ``{"benchmarks": [...], "environment":
{...}}`` as described in :mod:`dtf_plugins.bench`, stored in ``benchmark_results``.
numpy is optional: without it the matmul runs in pure Python (and is reported as such).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
from pathlib import Path
from typing import Any

from dtf_bus.plugins import TaskContext
from dtf_plugins.bench import base_environment, choose, measure, positive_int, record
from dtf_plugins.python_call import run_benchmark_function

BENCHMARKS = ("matmul", "memory", "interpreter")
PRECISIONS = {"fp64": "float64", "fp32": "float32"}
INTERPRETER_OPS = 100_000
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def run_benchmarks(**params: Any) -> dict[str, Any]:
    """Entry point, run inside the benchmark subprocess."""
    unknown = sorted(
        set(params) - {"benchmarks", "warmup", "iterations", "matmul_n", "precisions", "memory_mb", "backend"}
    )
    if unknown:
        raise ValueError(f"unknown param {unknown[0]!r}")
    which = choose(params, "benchmarks", BENCHMARKS, list(BENCHMARKS))
    warmup = positive_int(params, "warmup", 3, minimum=0)
    iterations = positive_int(params, "iterations", 20)
    backend = params.get("backend", "auto")
    if backend not in ("auto", "numpy", "python"):
        raise ValueError(f"param 'backend' must be auto, numpy or python; got {backend!r}")
    have_numpy = importlib.util.find_spec("numpy") is not None
    if backend == "numpy" and not have_numpy:
        raise ValueError("backend 'numpy' asked for, but numpy is not installed on this worker")
    use_numpy = have_numpy and backend != "python"

    records = []
    if "matmul" in which:
        n = positive_int(params, "matmul_n", 256 if use_numpy else 48)
        if use_numpy:
            for precision in choose(params, "precisions", tuple(PRECISIONS), list(PRECISIONS)):
                records.append(_matmul_numpy(n, precision, warmup, iterations))
        else:
            records.append(_matmul_python(n, warmup, iterations))
    if "memory" in which:
        records.append(_memory_copy(positive_int(params, "memory_mb", 64), warmup, iterations))
    if "interpreter" in which:
        records.append(_interpreter(warmup, iterations))
    return {"benchmarks": records, "environment": environment(use_numpy)}


def _matmul_numpy(n: int, precision: str, warmup: int, iterations: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    dtype = PRECISIONS[precision]
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    samples = measure(lambda: np.matmul(a, b, out=c), warmup, iterations)
    params = {"n": n, "precision": precision, "backend": "numpy"}
    return record("matmul", params, samples, 2 * n**3 / 1e9, "GFLOP/s", warmup, a.nbytes * 3)


def _matmul_python(n: int, warmup: int, iterations: int) -> dict[str, Any]:
    rng = random.Random(0)
    a = [[rng.random() for _ in range(n)] for _ in range(n)]
    bt = [list(col) for col in zip(*[[rng.random() for _ in range(n)] for _ in range(n)], strict=True)]

    def multiply() -> list[list[float]]:
        return [[sum(x * y for x, y in zip(row, col, strict=True)) for col in bt] for row in a]

    samples = measure(multiply, warmup, iterations)
    params = {"n": n, "precision": "fp64", "backend": "python"}
    return record("matmul", params, samples, 2 * n**3 / 1e9, "GFLOP/s", warmup)


def _memory_copy(megabytes: int, warmup: int, iterations: int) -> dict[str, Any]:
    size = megabytes * 2**20
    src = bytearray(os.urandom(min(size, 2**20))) * (size // min(size, 2**20))
    dst = bytearray(len(src))
    view_src, view_dst = memoryview(src), memoryview(dst)

    def copy() -> None:
        view_dst[:] = view_src  # one memmove in C

    samples = measure(copy, warmup, iterations)
    moved = 2 * len(src)  # read + written
    return record("memory", {"size_mb": megabytes, "op": "copy"}, samples, moved / 1e9, "GB/s", warmup, moved)


def _interpreter(warmup: int, iterations: int) -> dict[str, Any]:
    def loop() -> float:
        total = 0.0
        for i in range(INTERPRETER_OPS):
            total += i * 0.5
        return total

    samples = measure(loop, warmup, iterations)
    return record("interpreter", {"ops": INTERPRETER_OPS}, samples, INTERPRETER_OPS / 1e6, "Mop/s", warmup)


def environment(use_numpy: bool) -> dict[str, Any]:
    from dtf_bus.worker.hardware import cpu_model

    env = {**base_environment(), "device": cpu_model(), "cpu_count": os.cpu_count()}
    if use_numpy:
        import numpy as np

        env["numpy"] = np.__version__
        with contextlib.suppress(Exception):  # older numpy: no dict mode; the version is enough
            env["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"].get("name")
    return env


class CpuBenchExecutor:
    name = "cpu"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        return run_benchmark_function(ctx, "cpu", "dtf_plugins.cpu_bench:run_benchmarks", PROJECT_ROOT)
