"""What a pytest-session task asks for, with the worker's paths applied: :class:`SessionSpec`.

Two tasks share a live session only when their specs' keys match (the controller's ``session``,
interpreter, rootdir, args, marker requirements, environment and devices). A worker that holds the
suite at another path maps the controller's rootdir with ``DTF_ROOTDIR_MAP="/ci/src=/home/me/src;..."``
or a ``rootdir_map`` capability (same format, or a table); node ids are relative to the rootdir,
so they still match. Kept apart from the session process (:mod:`dtf_plugins.pytest_session_process`)
and the executor (:mod:`dtf_plugins.pytest_session`): it is pure checking and mapping of params.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from dtf_bus import defaults, resources
from dtf_bus.plugins import TaskContext, TaskFailed


def parse_rootdir_map(spec: Any) -> list[tuple[str, str]]:
    """``"/ci/src=/home/me/src;/a=/b"`` or ``{"/ci/src": "/home/me/src"}`` -> pairs, longest
    source first so the most specific prefix wins."""
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, dict):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    elif isinstance(spec, str):
        for part in spec.split(";"):
            src, sep, dst = part.partition("=")
            if sep and src.strip() and dst.strip():
                pairs.append((src.strip(), dst.strip()))
    return sorted(((src.rstrip("/") or "/", dst.rstrip("/") or "/") for src, dst in pairs), key=lambda p: -len(p[0]))


def map_path(path: str, pairs: list[tuple[str, str]]) -> str:
    """``path`` with its first matching prefix replaced (whole path components only)."""
    for src, dst in pairs:
        if path == src:
            return dst
        if path.startswith(src.rstrip("/") + "/"):
            return dst.rstrip("/") + path[len(src.rstrip("/")) :]
    return path


def _map_arg(arg: str, pairs: list[tuple[str, str]]) -> str:
    """An absolute path among the args (``/ci/src/tests``, ``--opt=/ci/src/x``) follows the map."""
    if arg.startswith("/"):
        return map_path(arg, pairs)
    name, eq, value = arg.partition("=")
    if eq and value.startswith("/"):
        return f"{name}={map_path(value, pairs)}"
    return arg


def rootdir_pairs(ctx: TaskContext) -> list[tuple[str, str]]:
    """The worker's mapping: its ``rootdir_map`` capability, then ``$DTF_ROOTDIR_MAP``."""
    pairs = [(ctx.ship_root.rstrip("/") or "/", ctx.ship_dir)] if ctx.ship_root and ctx.ship_dir else []  # shipped
    pairs += parse_rootdir_map(ctx.capabilities.get("rootdir_map"))
    pairs += parse_rootdir_map(os.environ.get(defaults.ROOTDIR_MAP_ENV, ""))
    return sorted(pairs, key=lambda p: -len(p[0]))


def strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TaskFailed(f"pytest-session: param {name!r} must be a list of strings")


class SessionSpec:
    """What makes two tasks able to share a session, with the worker's paths applied."""

    def __init__(self, ctx: TaskContext) -> None:
        p = ctx.params
        session = p.get("session")
        rootdir = p.get("rootdir")
        if not isinstance(session, str) or not session:
            raise TaskFailed("pytest-session: param 'session' must be a non-empty string")
        if not isinstance(rootdir, str) or not rootdir:
            raise TaskFailed("pytest-session: param 'rootdir' must be a path")
        python = p.get("python")
        if python is not None and not isinstance(python, str):
            raise TaskFailed("pytest-session: param 'python' must be a path")
        marker_requires = p.get("marker_requires") or {}
        if not isinstance(marker_requires, dict):
            raise TaskFailed("pytest-session: param 'marker_requires' must be a table")
        env = p.get("env") or {}
        if not isinstance(env, dict):
            raise TaskFailed("pytest-session: param 'env' must be a table of strings")
        pairs = rootdir_pairs(ctx)
        self.session = session
        self.controller_rootdir = rootdir
        self.rootdir = map_path(rootdir, pairs)
        self.python = map_path(python, pairs) if python else sys.executable
        self.args = [_map_arg(a, pairs) for a in strings(p.get("args"), "args")]
        self.marker_requires = marker_requires
        # The task's GPUs are the session's: CUDA picks its devices once per process, so a
        # session serves only tasks handed the same devices (they are part of its key).
        devices = resources.gpu_environment(ctx.devices)
        self.env = {**{str(k): str(v) for k, v in env.items()}, **devices}
        # A session that may have put work on its devices ends with its task: idle, it would
        # still hold their memory while the worker hands them to the next task.
        self.holds_devices = bool(devices)
        self.key = (
            session,
            self.python,
            self.rootdir,
            tuple(self.args),
            json.dumps(marker_requires, sort_keys=True, default=str),
            json.dumps(self.env, sort_keys=True),
        )
