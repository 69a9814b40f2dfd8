"""What this machine is: auto-detected capabilities a worker advertises at registration.

Declared capabilities (config ``[capabilities]``, ``--capability K=V``) are merged on top by
:func:`merge`; declared keys win and are listed under ``declared`` so users can tell a mock
worker's claims from what was measured.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

import psutil


def detect() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "hardware": ["cpu"],
        "hostname": socket.gethostname(),
        "platform": sys.platform,
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "cpu_physical_cores": psutil.cpu_count(logical=False) or 1,
        "memory_gb": round(memory.total / 2**30, 2),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def merge(detected: dict[str, Any], declared: list[tuple[str, Any]]) -> dict[str, Any]:
    """Apply declarations in order. ``hardware`` adds to the list instead of replacing it."""
    caps = dict(detected)
    hardware = list(caps.get("hardware", []))
    marked: list[str] = []
    for key, value in declared:
        if key == "hardware":
            for item in value if isinstance(value, list) else [value]:
                if str(item) not in hardware:
                    hardware.append(str(item))
        else:
            caps[key] = value
        if key not in marked:
            marked.append(key)
    caps["hardware"] = hardware
    caps["declared"] = marked
    return caps
