"""python: call ``module:function`` with params in a subprocess and return what it returns.

The hook for users' own benchmarks and checks. Params: ``target`` (``"pkg.mod:func"``, a dotted
attribute path after the colon is fine), ``params`` (keyword arguments, a table), ``args`` (a
list of positional arguments), ``cwd`` (where to run; it is put first on ``sys.path``),
``path`` (more directories for ``sys.path``), ``python`` (interpreter, default the worker's
own) and ``env``. The value must be JSON-serialisable; a dict with a ``benchmarks`` list is
also stored row by row in ``benchmark_results`` (see docs/schema.md).

The call runs in its own process (through :func:`dtf_bus.plugins.run_process`), so a timeout
or cancel kills it with its whole process group, and nothing it imports or leaks stays in the
worker. The built-in ``cpu`` and ``cuda`` benchmarks run through :func:`call_function` too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from dtf_bus.plugins import ProcessResult, TaskContext, TaskFailed, run_process

# Runs in the child: import the target, call it, write {"ok", "value" | "error"} atomically.
# Kept self-contained (stdlib only) so any interpreter with the user's code can run it.
RUNNER = r"""
import importlib, json, os, sys, time, traceback
out_path, spec_path = sys.argv[1], sys.argv[2]
with open(spec_path) as fh:
    spec = json.load(fh)
for entry in reversed(spec["path"]):
    sys.path.insert(0, entry)

def emit(doc):
    tmp = out_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, allow_nan=False)
    os.replace(tmp, out_path)

def failure(stage, exc):
    return {"ok": False, "stage": stage, "type": type(exc).__name__, "error": str(exc),
            "traceback": traceback.format_exc()[-4000:]}

module_name, _, attr = spec["target"].partition(":")
doc = None
try:
    func = importlib.import_module(module_name)
except Exception as exc:
    doc = failure("import", exc)
if doc is None:
    try:
        for part in attr.split("."):
            func = getattr(func, part)
        started = time.perf_counter()
        value = func(*spec["args"], **spec["kwargs"])
        doc = {"ok": True, "value": value, "seconds": time.perf_counter() - started}
    except BaseException as exc:
        doc = failure("call", exc)
try:
    emit(doc)
except (TypeError, ValueError) as exc:
    emit({"ok": False, "stage": "result", "type": type(exc).__name__,
          "error": f"the return value is not JSON-serialisable: {exc}"})
sys.exit(0 if doc["ok"] else 1)
"""


@dataclass(slots=True)
class CallOutcome:
    """What the child reported (``doc``: None when it died without a word) and how it ran."""

    doc: dict[str, Any] | None
    process: ProcessResult

    def output(self) -> dict[str, Any]:
        return {
            "exit_code": self.process.returncode,
            "stdout": self.process.stdout,
            "stderr": self.process.stderr,
            "duration_s": round(self.process.duration, 6),
        }


def call_function(
    ctx: TaskContext,
    target: str,
    kwargs: dict[str, Any] | None = None,
    args: list[Any] | None = None,
    cwd: str | None = None,
    path: list[str] | None = None,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> CallOutcome:
    """Run ``target(*args, **kwargs)`` in a child process and return its report."""
    search = ([cwd] if cwd else []) + list(path or [])
    with tempfile.TemporaryDirectory(prefix="dtf-call-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        out_path = os.path.join(tmp, "out.json")
        with open(spec_path, "w") as fh:
            json.dump({"target": target, "kwargs": kwargs or {}, "args": args or [], "path": search}, fh)
        try:
            proc = run_process(ctx, [python or sys.executable, "-c", RUNNER, out_path, spec_path], cwd=cwd, env=env)
        except OSError as exc:  # missing interpreter, bad cwd
            raise TaskFailed(f"cannot start {python or sys.executable}: {exc}") from None
        doc = None
        if os.path.exists(out_path):
            with open(out_path) as fh:
                doc = json.load(fh)
        return CallOutcome(doc, proc)


def _check_target(target: Any, plugin: str) -> str:
    if not isinstance(target, str) or ":" not in target or not all(target.partition(":")[::2]):
        raise TaskFailed(f"{plugin}: param 'target' must be 'module:function', got {target!r}")
    return target


def failure_reason(plugin: str, target: str, outcome: CallOutcome) -> str:
    """A one-line reason for a call that did not return a value."""
    doc = outcome.doc
    if doc is None:
        last = (outcome.process.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{plugin}: {target} exited with code {outcome.process.returncode} without a result ({last})"
    if doc.get("stage") == "import":
        return f"{plugin}: cannot import {target.partition(':')[0]}: {doc['type']}: {doc['error']}"
    if doc.get("stage") == "result":
        return f"{plugin}: {target}: {doc['error']}"
    return f"{plugin}: {target} raised {doc['type']}: {doc['error']}"


class PythonExecutor:
    name = "python"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        p = ctx.params
        target = _check_target(p.get("target"), "python")
        kwargs = p.get("params", {})
        args = p.get("args", [])
        path = p.get("path", [])
        env = p.get("env") or {}
        if not isinstance(kwargs, dict):
            raise TaskFailed("python: param 'params' must be a table of keyword arguments")
        if not isinstance(args, list):
            raise TaskFailed("python: param 'args' must be a list")
        if isinstance(path, str):
            path = [path]
        if not isinstance(path, list) or not all(isinstance(x, str) for x in path):
            raise TaskFailed("python: param 'path' must be a directory or a list of them")
        for key in ("cwd", "python"):
            if p.get(key) is not None and not isinstance(p[key], str):
                raise TaskFailed(f"python: param {key!r} must be a string")
        if not isinstance(env, dict):
            raise TaskFailed("python: param 'env' must be a table of strings")
        outcome = call_function(
            ctx,
            target,
            kwargs=kwargs,
            args=args,
            cwd=p.get("cwd"),
            path=path,
            python=p.get("python"),
            env={str(k): str(v) for k, v in env.items()},
        )
        result = outcome.output()
        if outcome.process.killed:
            return result  # the worker reports it as timed out or cancelled
        if outcome.doc is None or not outcome.doc.get("ok"):
            if outcome.doc and outcome.doc.get("traceback"):
                result["traceback"] = outcome.doc["traceback"]
            raise TaskFailed(failure_reason("python", target, outcome), result)
        value = outcome.doc["value"]
        result.update(value=value, call_seconds=round(outcome.doc["seconds"], 6))
        return result


def run_benchmark_function(ctx: TaskContext, plugin: str, target: str, root: str) -> dict[str, Any]:
    """Run a built-in benchmark's entry point with the task's params as keyword arguments.

    A ``ValueError`` (bad param) or ``Unavailable`` (missing hardware) from the benchmark is
    the user's answer, so its message becomes the task's error as it is.
    """
    outcome = call_function(ctx, target, kwargs=dict(ctx.params), path=[root])
    if outcome.process.killed:
        return outcome.output()  # the worker reports it as timed out or cancelled
    doc = outcome.doc
    if doc is None or not doc.get("ok"):
        if doc is not None and doc.get("stage") == "call" and doc.get("type") in ("ValueError", "Unavailable"):
            reason = doc["error"] if doc["error"].startswith(f"{plugin}:") else f"{plugin}: {doc['error']}"
        else:
            reason = failure_reason(plugin, target, outcome)
        result = outcome.output()
        if doc is not None and doc.get("traceback"):
            result["traceback"] = doc["traceback"]
        raise TaskFailed(reason, result)
    value = doc["value"]
    return {**value, "duration_s": round(outcome.process.duration, 6)}
