"""Consumable resources: counted things a worker has (``gpus``, ``licenses``) and a task uses up.

Slots say how many tasks a worker runs at once; resources say which of them may run together.
A worker advertises totals (``gpus`` from the devices it may use, others declared with
``--resource licenses=2``); a task asks with ``resources = { gpus = 1 }``. The broker places a
task only where the amount is free, counting what the worker's assigned tasks hold; the worker
hands each task concrete device indices and sets ``CUDA_VISIBLE_DEVICES`` and
``HIP_VISIBLE_DEVICES`` for it, so two tasks never share a GPU.

A worker's own ``CUDA_VISIBLE_DEVICES`` (or ``HIP_VISIBLE_DEVICES``) bounds what it may hand out:
``CUDA_VISIBLE_DEVICES=2,3`` advertises 2 GPUs and gives tasks devices ``2`` and ``3``.
A declared ``--resource gpus=N`` replaces the detected count and means devices ``0..N-1``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from dtf_bus import defaults

GPUS = "gpus"
# Variables a task's process reads to know its devices: CUDA's, and ROCm's.
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ResourceError(ValueError):
    """A resource declaration or request that cannot be used; the message names it."""


def check(amounts: Any, where: str, allow_zero: bool = False) -> dict[str, int]:
    """``{name: count}`` with lowercase identifier names and counts in range, or ResourceError."""
    if not isinstance(amounts, Mapping):
        raise ResourceError(f"{where} must be a table of name = count, e.g. {{ gpus = 1 }}")
    if len(amounts) > defaults.MAX_RESOURCE_KINDS:
        raise ResourceError(f"{where} names more than {defaults.MAX_RESOURCE_KINDS} resources")
    checked = {}
    for name, count in amounts.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ResourceError(f"{where}: {name!r} is not a resource name (lowercase letters, digits, _)")
        low = 0 if allow_zero else 1
        if isinstance(count, bool) or not isinstance(count, int) or not low <= count <= defaults.MAX_RESOURCE_COUNT:
            raise ResourceError(f"{where}.{name} must be an integer from {low} to {defaults.MAX_RESOURCE_COUNT}")
        checked[name] = count
    return checked


def visible_gpus(environ: Mapping[str, str], detected: int) -> list[str] | None:
    """Device indices this worker may hand out: its own visibility list when it has one (what
    CUDA and ROCm let its processes see), else the detected devices; None when neither says."""
    for variable in GPU_VARIABLES:
        value = environ.get(variable)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(detected)] if detected else None


def worker_totals(
    declared: Mapping[str, int], environ: Mapping[str, str], detected_gpus: int
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """What a worker advertises, and the concrete ids behind each device-like resource.
    A declared ``gpus`` wins over detection (devices 0..N-1)."""
    totals = dict(declared)
    devices: dict[str, list[str]] = {}
    if GPUS in declared:
        devices[GPUS] = [str(i) for i in range(declared[GPUS])]
    else:
        gpus = visible_gpus(environ, detected_gpus)
        if gpus is not None:
            totals[GPUS] = len(gpus)
            devices[GPUS] = gpus
    return {name: count for name, count in totals.items() if count > 0}, devices


def free(totals: Mapping[str, int], held: list[Mapping[str, int]]) -> dict[str, int]:
    """What is left of ``totals`` once the ``held`` requests are taken."""
    left = dict(totals)
    for request in held:
        for name, count in request.items():
            left[name] = left.get(name, 0) - count
    return left


def fits(wanted: Mapping[str, int], available: Mapping[str, int]) -> bool:
    return all(available.get(name, 0) >= count for name, count in wanted.items())


def gpu_environment(devices: Mapping[str, list[str]]) -> dict[str, str]:
    """The variables that confine a task to its devices (nothing when it asked for none)."""
    ids = devices.get(GPUS)
    if ids is None:
        return {}
    return dict.fromkeys(GPU_VARIABLES, ",".join(ids))


class Pool:
    """The worker's side: which concrete ids of each resource are free. Counted resources
    without ids (licenses) are handed out as ``name#k`` tokens, so both kinds are taken and given
    back the same way. Thread-safe: task threads take and give concurrently."""

    def __init__(self, totals: Mapping[str, int], devices: Mapping[str, list[str]]) -> None:
        self._free = {
            name: list(devices.get(name) or [f"{name}#{k}" for k in range(count)]) for name, count in totals.items()
        }
        self._lock = threading.Lock()

    def take(self, wanted: Mapping[str, int]) -> dict[str, list[str]] | None:
        """The ids for ``wanted``, now, or None when not all of it is free."""
        with self._lock:
            if not all(len(self._free.get(name, ())) >= count for name, count in wanted.items()):
                return None
            taken = {}
            for name, count in wanted.items():
                taken[name], self._free[name] = self._free[name][:count], self._free[name][count:]
            return taken

    def give(self, taken: Mapping[str, list[str]]) -> None:
        with self._lock:
            for name, ids in taken.items():
                self._free[name].extend(ids)
