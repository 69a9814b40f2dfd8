"""What a worker reports with each heartbeat: cpu, memory and (where present) gpu utilisation.

cpu and memory come from psutil and cost microseconds. nvidia-smi takes tens of milliseconds
or, with a wedged driver, much longer, so it never runs on the worker's loop: a daemon thread
samples it every ``GPU_SAMPLE_INTERVAL`` seconds and :func:`sample` returns the latest
reading. Without nvidia-smi on PATH no thread starts and no gpu key is reported.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

import psutil

from dtf_bus import defaults

log = logging.getLogger(__name__)

QUERY = ("nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits")


def parse_nvidia_smi(text: str) -> dict[str, float]:
    """Mean utilisation and memory share over all GPUs from ``nvidia-smi --query-gpu`` csv lines."""
    util, used, total = [], 0.0, 0.0
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            util.append(float(parts[0]))
            used += float(parts[1])
            total += float(parts[2])
        except ValueError:
            continue  # "[N/A]" on some boards
    out: dict[str, float] = {}
    if util:
        out["gpu_percent"] = round(sum(util) / len(util), 1)
        out["gpu_count"] = float(len(util))
    if total > 0:
        out["gpu_memory_percent"] = round(100 * used / total, 1)
    return out


class GpuSampler:
    def __init__(self, interval: float = defaults.GPU_SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self.latest: dict[str, float] = {}  # replaced whole, so readers never see half an update
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None and shutil.which(QUERY[0]):
                self._thread = threading.Thread(target=self._run, name="dtf-gpu-sampler", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()  # never set: a daemon thread that ends with the process
        failures = 0
        while failures < 3:
            try:
                out = subprocess.run(QUERY, capture_output=True, text=True, timeout=self.interval)
                if out.returncode != 0:
                    raise OSError(out.stderr.strip() or f"exit code {out.returncode}")
                self.latest = parse_nvidia_smi(out.stdout)
                failures = 0
            except (OSError, subprocess.SubprocessError) as exc:
                failures += 1
                log.warning("nvidia-smi sample failed (%d/3): %s", failures, exc)
            stop.wait(self.interval)
        log.warning("gpu utilisation sampling stopped after repeated nvidia-smi failures")
        self.latest = {}


_gpu = GpuSampler()


def sample() -> dict[str, float]:
    """One heartbeat's worth of utilisation, without blocking."""
    _gpu.ensure_started()
    return {
        "cpu_percent": psutil.cpu_percent(None),
        "memory_percent": psutil.virtual_memory().percent,
        **_gpu.latest,
    }
