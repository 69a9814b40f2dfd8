"""What every benchmark script shares: output (a table, or one JSON object per line), the
machine it ran on, process CPU/memory sampling, and a cluster that always cleans up.

The scripts are run as ``python bench/NAME.py``, so this module is imported from the script's
own directory; it is not part of the installed package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from dtf_bus.testing.cluster import LocalCluster

# Benchmarks are noisy on a small machine; rounds are interleaved and the median reported.
DEFAULT_ROUNDS = 3


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    return p


def machine() -> dict[str, Any]:
    """Where the figures came from, so a figure is never read without its machine."""
    cpu = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def emit(title: str, rows: list[tuple[str, Any]], summary: dict[str, Any], as_json: bool) -> None:
    """Print ``summary`` as one JSON line, or ``rows`` as an aligned two-column table."""
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    m = machine()
    print(f"{title}  ({m['cores']} cores, {m['cpu']}, Python {m['python']})")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        print(f"  {name:<{width}}  {shown:>14}")
    sys.stdout.flush()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def raise_fd_limit() -> int:
    """Thousands of connections need thousands of descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class CpuMeter:
    """CPU share of one process over a window: CPU seconds of all its threads / wall seconds.

    On Linux the per-thread scheduler counters (nanoseconds) are read, because the usual
    user/system times tick in 10 ms steps, too coarse for a short, nearly idle window.
    """

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self._tasks = Path(f"/proc/{pid}/task")
        self.reset()

    def cpu_seconds(self) -> float:
        if self._tasks.is_dir():
            total = 0
            for stat in self._tasks.glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
                    total += int(stat.read_text().split()[0])
            return total / 1e9
        t = self.proc.cpu_times()
        return t.user + t.system

    def reset(self) -> None:
        self._cpu = self.cpu_seconds()
        self._wall = time.monotonic()

    def used(self) -> float:
        """CPU seconds since the last reset."""
        return self.cpu_seconds() - self._cpu

    def percent(self) -> float:
        cpu = self.cpu_seconds()
        wall = time.monotonic() - self._wall
        return 100.0 * (cpu - self._cpu) / wall if wall > 0 else 0.0

    def rss_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20


@contextlib.contextmanager
def cluster(workdir: str | None = None, **kwargs: Any) -> Iterator[LocalCluster]:
    """A LocalCluster in a temp dir on ephemeral loopback ports, stopped by pid on exit."""
    with tempfile.TemporaryDirectory(prefix="dtf-bench-", dir=workdir) as tmp:
        c = LocalCluster(tmp, log_level=kwargs.pop("log_level", "WARNING"), **kwargs)
        try:
            yield c
        except BaseException:
            for proc in [c.broker, *c.workers.values()]:
                if proc is not None:
                    print(f"----- {proc.name} log tail -----\n{proc.log_tail(20)}", file=sys.stderr)
            raise
        finally:
            c.stop()
