"""cuda: GPU measurements with torch — matmul TFLOP/s, host<->device bandwidth, a forward pass.

Params (all optional): ``benchmarks`` (any of ``matmul``, ``transfer``, ``forward``; default
all), ``device`` (default ``cuda``, or ``cuda:N``), ``warmup``, ``iterations``,
``matmul_n`` (default 4096), ``precisions`` (``fp32``, ``tf32``, ``fp16``, ``bf16``; default
fp32, fp16 and bf16 where the GPU supports it), ``transfer_mb`` (default 256, pinned host
memory), ``batch_sizes`` (forward pass, default [1, 32, 256]), ``hidden`` and ``layers`` (the
forward pass's MLP, default 1024 and 8).

- matmul: C = A @ B on n x n matrices, 2n^3 FLOP per iteration; ``fp32`` turns TF32 off so
  it measures true fp32, ``tf32`` turns it on.
- transfer: one ``transfer_mb`` copy host->device (``h2d``) and device->host (``d2h``) from
  pinned memory, in GB/s.
- forward: an MLP (``layers`` x [Linear(h, 4h), GELU, Linear(4h, h)]) in inference mode per
  batch size and precision; throughput in samples/s, peak GPU memory per configuration.

Every iteration is timed with CUDA events around the work (``torch.cuda.Event``, then a
synchronize), after ``warmup`` untimed runs, so launch overhead and asynchrony do not bend
the numbers. torch is imported only inside the benchmark subprocess, never by the worker;
without torch or without a GPU the task fails with a clear reason.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_plugins.bench import Unavailable, base_environment, choose, measure, positive_int, record
from dtf_plugins.python_call import run_benchmark_function

BENCHMARKS = ("matmul", "transfer", "forward")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
KNOWN_PARAMS = {
    "benchmarks",
    "device",
    "warmup",
    "iterations",
    "matmul_n",
    "precisions",
    "transfer_mb",
    "batch_sizes",
    "hidden",
    "layers",
}


def run_benchmarks(**params: Any) -> dict[str, Any]:
    """Entry point, run inside the benchmark subprocess."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise ValueError(f"unknown param {unknown[0]!r}")
    try:
        import torch
    except ImportError:
        raise Unavailable("cuda: no CUDA device available (torch not installed)") from None
    device = torch.device(params.get("device", "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        raise Unavailable(f"cuda: no CUDA device available (torch {torch.__version__} sees none{hint})")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise Unavailable(f"cuda: device {device} does not exist ({torch.cuda.device_count()} visible)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        device = torch.device("cuda", torch.cuda.current_device())

    which = choose(params, "benchmarks", BENCHMARKS, list(BENCHMARKS))
    warmup = positive_int(params, "warmup", 3, minimum=0)
    iterations = positive_int(params, "iterations", 20)
    supported = [p for p in PRECISIONS if p != "tf32" and _supports(torch, device, p)]
    precisions = choose(params, "precisions", PRECISIONS, supported)
    for precision in precisions:
        if not _supports(torch, device, precision):
            raise Unavailable(f"cuda: {precision} is not supported on {_device_name(torch, device)}")
    timer = _event_timer(torch, device)

    records: list[dict[str, Any]] = []
    if "matmul" in which:
        n = positive_int(params, "matmul_n", 4096)
        for precision in precisions:
            records.append(_matmul(torch, device, n, precision, warmup, iterations, timer))
    if "transfer" in which and device.type == "cuda":
        megabytes = positive_int(params, "transfer_mb", 256)
        records.extend(_transfer(torch, device, megabytes, warmup, iterations, timer))
    if "forward" in which:
        batch_sizes = params.get("batch_sizes", [1, 32, 256])
        if not isinstance(batch_sizes, list) or not batch_sizes or not all(_is_pos_int(b) for b in batch_sizes):
            raise ValueError(f"param 'batch_sizes' must be a list of positive integers, got {batch_sizes!r}")
        hidden = positive_int(params, "hidden", 1024)
        layers = positive_int(params, "layers", 8)
        for precision in precisions:
            for batch in batch_sizes:
                records.append(_forward(torch, device, batch, hidden, layers, precision, warmup, iterations, timer))
    return {"benchmarks": records, "environment": environment(torch, device)}


def _is_pos_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _supports(torch: Any, device: Any, precision: str) -> bool:
    if device.type != "cuda":
        return precision in ("fp32", "bf16")
    major, _ = torch.cuda.get_device_capability(device)
    if precision == "bf16":
        return torch.cuda.is_bf16_supported()
    if precision == "tf32":
        return major >= 8
    return True


def _dtype(torch: Any, precision: str) -> Any:
    return {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class _Precision:
    """TF32 on only for ``tf32``: fp32 numbers must mean real fp32 math."""

    def __init__(self, torch: Any, precision: str) -> None:
        self.torch, self.on = torch, precision == "tf32"

    def __enter__(self) -> None:
        self.saved = (self.torch.backends.cuda.matmul.allow_tf32, self.torch.backends.cudnn.allow_tf32)
        self.torch.backends.cuda.matmul.allow_tf32 = self.on
        self.torch.backends.cudnn.allow_tf32 = self.on

    def __exit__(self, *exc: object) -> None:
        self.torch.backends.cuda.matmul.allow_tf32, self.torch.backends.cudnn.allow_tf32 = self.saved


def _event_timer(torch: Any, device: Any) -> Any:
    """Seconds one call takes on the device: CUDA events bracket it, then we wait for the end."""
    if device.type != "cuda":

        def wall(fn: Any) -> float:
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

        return wall

    def events(fn: Any) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0  # elapsed_time is in ms

    return events


def _synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(torch: Any, device: Any) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _matmul(torch: Any, device: Any, n: int, precision: str, warmup: int, iterations: int, timer: Any) -> dict:
    _reset_peak(torch, device)
    dtype = _dtype(torch, precision)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn((n, n), device=device, dtype=dtype, generator=gen)
    b = torch.randn((n, n), device=device, dtype=dtype, generator=gen)
    c = torch.empty((n, n), device=device, dtype=dtype)
    with _Precision(torch, precision), torch.inference_mode():
        samples = measure(lambda: torch.matmul(a, b, out=c), warmup, iterations, timer)
    _synchronize(torch, device)
    params = {"n": n, "precision": precision}
    result = record("matmul", params, samples, 2 * n**3 / 1e12, "TFLOP/s", warmup, _peak(torch, device))
    return result


def _transfer(torch: Any, device: Any, megabytes: int, warmup: int, iterations: int, timer: Any) -> list[dict]:
    numel = megabytes * 2**20
    host = torch.empty(numel, dtype=torch.uint8, pin_memory=True)
    host.fill_(1)
    dev = torch.empty(numel, dtype=torch.uint8, device=device)
    gb = numel / 1e9
    out = []
    h2d = measure(lambda: dev.copy_(host, non_blocking=True), warmup, iterations, timer)
    out.append(record("h2d", {"size_mb": megabytes, "pinned": True}, h2d, gb, "GB/s", warmup, numel))
    d2h = measure(lambda: host.copy_(dev, non_blocking=True), warmup, iterations, timer)
    out.append(record("d2h", {"size_mb": megabytes, "pinned": True}, d2h, gb, "GB/s", warmup, numel))
    _synchronize(torch, device)
    return out


def _forward(
    torch: Any,
    device: Any,
    batch: int,
    hidden: int,
    layers: int,
    precision: str,
    warmup: int,
    iterations: int,
    timer: Any,
) -> dict:
    _reset_peak(torch, device)
    dtype = _dtype(torch, precision)
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(hidden, 4 * hidden), torch.nn.GELU(), torch.nn.Linear(4 * hidden, hidden)]
    model = torch.nn.Sequential(*blocks).to(device=device, dtype=dtype).eval()
    x = torch.randn((batch, hidden), device=device, dtype=dtype)
    with _Precision(torch, precision), torch.inference_mode():
        samples = measure(lambda: model(x), warmup, iterations, timer)
    _synchronize(torch, device)
    params = {"model": "mlp", "hidden": hidden, "layers": layers, "batch_size": batch, "precision": precision}
    result = record("forward", params, samples, batch, "samples/s", warmup, _peak(torch, device))
    return result


def _device_name(torch: Any, device: Any) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def environment(torch: Any, device: Any) -> dict[str, Any]:
    env: dict[str, Any] = {**base_environment(), "torch": torch.__version__, "device": _device_name(torch, device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            cuda_runtime=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 2**30, 2),
            gpu_count=torch.cuda.device_count(),
            **_device_ids(device.index if device.index is not None else torch.cuda.current_device()),
        )
        from dtf_bus.worker.hardware import nvidia_gpus

        gpus = nvidia_gpus()
        if gpus:
            env["driver"] = gpus[0].get("driver_version")
    return env


def _device_ids(index: int) -> dict[str, Any]:
    """Which GPU the figures came from: the index torch used and, when the worker handed the task
    its devices (CUDA_VISIBLE_DEVICES), the machine's index of that device."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids: dict[str, Any] = {"device_index": index}
    if visible:
        ids["cuda_visible_devices"] = ",".join(visible)
        ids["physical_device"] = visible[index] if index < len(visible) else None
    return ids


class CudaBenchExecutor:
    name = "cuda"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        # Fail fast, and without importing torch into the worker.
        if importlib.util.find_spec("torch") is None:
            raise TaskFailed("cuda: no CUDA device available (torch not installed)")
        device = ctx.params.get("device", "cuda")
        if not isinstance(device, str) or not device.startswith("cuda"):
            raise TaskFailed(f"cuda: param 'device' must be 'cuda' or 'cuda:N', got {device!r}")
        return run_benchmark_function(ctx, "cuda", "dtf_plugins.cuda_bench:run_benchmarks", PROJECT_ROOT)
