"""Executor plugins: the small Protocol a plugin implements, and how workers find them.

An executor turns a task's ``params`` into a result dict. It runs on a worker thread, so it
must never need the worker's socket; it watches :attr:`TaskContext.cancelled` (set on timeout
or cancel) and uses :func:`run_process` for anything that forks, so the whole process group
dies with the task and no orphan survives it.

Plugins register under the ``dtf.executors`` entry-point group, or in a worker config's
``[plugins]`` table as ``name = "module:Class"``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from dtf_bus import defaults, resources

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dtf.executors"


class TaskFailed(Exception):
    """Raised by an executor for an ordinary failure (a failing test, a non-zero exit).

    Any other exception means the executor itself broke; the attempt is recorded as
    ``crashed``. Both consume a retry.
    """

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.result = result


@dataclass(slots=True)
class TaskContext:
    task_id: str
    attempt: int
    worker_id: str
    params: dict[str, Any]
    timeout: float | None
    capabilities: dict[str, Any]
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    progress: Callable[[dict[str, Any]], None] | None = None  # set by the worker
    devices: dict[str, list[str]] = field(default_factory=dict)  # resource -> the ids this task holds
    # Shipped code (dtf_bus/ship/worker.py): the unpacked tree the task runs in, the directory it
    # was packed from on the submitting machine, and the venv of its requirements.
    ship_dir: str | None = None
    ship_root: str | None = None
    ship_venv: str | None = None

    def report_progress(self, data: dict[str, Any]) -> None:
        """Show what the task has so far (a finished test's reports) before it ends: sent to the
        broker at once, best effort, for clients following the job; the result stays the record."""
        if self.progress is not None:
            self.progress(data)

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()

    @property
    def env(self) -> dict[str, str]:
        """Variables every command a task starts can read to know where it runs."""
        return {
            "DTF_TASK_ID": self.task_id,
            "DTF_ATTEMPT": str(self.attempt),
            "DTF_WORKER_ID": self.worker_id,
            **resources.gpu_environment(self.devices),  # its own GPUs, no one else's
            **({"DTF_SHIP_DIR": self.ship_dir} if self.ship_dir else {}),
            **({"VIRTUAL_ENV": self.ship_venv} if self.ship_venv else {}),
        }


@runtime_checkable
class Executor(Protocol):
    name: str

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        """Do the work; return a JSON-serialisable result or raise :class:`TaskFailed`."""
        ...


class PluginError(LookupError):
    pass


def _instantiate(name: str, factory: Any) -> Executor:
    executor = factory()
    if not isinstance(executor, Executor):
        raise PluginError(f"plugin {name!r}: {factory!r} does not implement run(ctx)")
    return executor


def load_executors(extra: dict[str, str] | None = None, only: list[str] | None = None) -> dict[str, Executor]:
    """Installed executors plus ``extra`` (name -> "module:Class"), optionally filtered.

    A plugin that fails to import is skipped with a warning, so one broken plugin does not
    take the worker down; asking for it by name in ``only`` is an error.
    """
    factories: dict[str, Any] = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, target in (extra or {}).items():
        factories[name] = target
    wanted = only if only else sorted(factories)
    executors: dict[str, Executor] = {}
    for name in wanted:
        if name not in factories:
            raise PluginError(f"unknown plugin {name!r} (available: {', '.join(sorted(factories))})")
        target = factories[name]
        try:
            if isinstance(target, str):
                module, _, attr = target.partition(":")
                if not attr:
                    raise PluginError(f"plugin {name!r}: expected 'module:Class', got {target!r}")
                factory = getattr(importlib.import_module(module), attr)
            else:
                factory = target.load()
            executors[name] = _instantiate(name, factory)
        except Exception as exc:
            if only:
                raise PluginError(f"plugin {name!r} failed to load: {exc}") from exc
            log.warning("plugin %r failed to load, skipping it: %s", name, exc)
    return executors


@dataclass(slots=True)
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str
    duration: float
    killed: bool  # True when cancel/timeout killed it


_SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD")


def is_secret_variable(name: str) -> bool:
    """Whether a worker's environment variable must not reach the tasks it runs: the worker's
    key paths and credentials (:data:`defaults.TASK_ENV_SECRETS`, or any ``DTF_*`` name that
    says it holds a secret). A task is code someone else submitted."""
    return name in defaults.TASK_ENV_SECRETS or (
        name.startswith("DTF_") and any(word in name for word in _SECRET_WORDS)
    )


def task_environ(env: dict[str, str] | None = None, ctx: TaskContext | None = None) -> dict[str, str]:
    """The environment a task's command runs with: the worker's own, less its secrets, then the
    task's ``env`` param, then the ``DTF_TASK_ID``/``DTF_ATTEMPT``/``DTF_WORKER_ID`` of ``ctx``."""
    inherited = {name: value for name, value in os.environ.items() if not is_secret_variable(name)}
    full = {**inherited, **(env or {}), **(ctx.env if ctx is not None else {})}
    if ctx is not None and ctx.ship_venv:  # the shipped requirements' venv comes first on PATH
        full["PATH"] = os.path.join(ctx.ship_venv, "bin") + os.pathsep + full.get("PATH", os.defpath)
    return full


def _tail(fh: Any, limit: int) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(size - limit, 0))
    return fh.read().decode(errors="replace")


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_process(
    ctx: TaskContext,
    argv: list[str] | str,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    tail_bytes: int = defaults.OUTPUT_TAIL_BYTES,
) -> ProcessResult:
    """Run a command in its own process group until it exits or the task is cancelled.

    On cancel the group gets SIGTERM, then SIGKILL after a grace period; after a normal exit
    the group is killed too, so background children the command left behind do not outlive it.
    The command never inherits the worker's secrets (:func:`task_environ`).
    """
    full_env = task_environ(env, ctx)
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            shell=isinstance(argv, str),
            cwd=cwd or ctx.ship_dir,  # a shipped task runs in its tree unless told otherwise
            env=full_env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        killed = False
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if ctx.cancelled.is_set():
                    killed = True
                    _kill_group(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=defaults.KILL_GRACE)
                    except subprocess.TimeoutExpired:
                        _kill_group(proc.pid, signal.SIGKILL)
                        proc.wait()
                    break
        _kill_group(proc.pid, signal.SIGKILL)  # stragglers left in the group
        return ProcessResult(
            returncode=proc.returncode,
            stdout=_tail(out, tail_bytes),
            stderr=_tail(err, tail_bytes),
            duration=time.monotonic() - started,
            killed=killed,
        )
