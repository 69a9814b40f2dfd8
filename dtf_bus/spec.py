"""Task specs: the ``[[tasks]]`` files users write, validated before anything is queued.

The same :func:`validate` runs in the CLI (so a typo fails fast, exit 2) and in the broker (so
a client that skips the CLI still cannot queue a malformed task).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import msgpack

from dtf_bus import defaults, resources

# What stored and served copies of params hold instead of an env value (see redact_env).
REDACTED = "***"

TASK_FIELDS = {
    "name",
    "plugin",
    "params",
    "requires",
    "priority",
    "timeout",
    "retries",
    "retry_backoff",
    "repeat",
    "depends_on",
    "placement_timeout",
    "resources",
}


class SpecError(ValueError):
    """A spec that cannot be queued; the message names the task and the field."""


def load(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Read a TOML or JSON spec file and return ``(job name, validated tasks)``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: not valid {path.suffix.lstrip('.') or 'toml'}: {exc}") from None
    if isinstance(doc, list):
        doc = {"tasks": doc}
    if not isinstance(doc, dict) or "tasks" not in doc:
        raise SpecError(f"{path}: no [[tasks]] found")
    name = doc.get("name", path.stem)
    if not isinstance(name, str):
        raise SpecError(f"{path}: 'name' must be a string")
    return name, validate(doc["tasks"])


def validate(tasks: Any) -> list[dict[str, Any]]:
    """Check every task and expand ``repeat``; returns tasks with all fields filled in."""
    if not isinstance(tasks, list) or not tasks:
        raise SpecError("spec has no tasks: 'tasks' must be a non-empty list")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    groups: dict[str, list[str]] = {}  # a repeated task's name -> its copies' names
    # Count before expanding anything: 50 tasks with repeat = 100,000 must not cost 5M dicts first.
    if len(tasks) > defaults.MAX_TASKS_PER_JOB:
        raise SpecError(f"spec has {len(tasks)} tasks; at most {defaults.MAX_TASKS_PER_JOB} per job")
    checked = [_validate_one(index, raw) for index, raw in enumerate(tasks)]
    total = sum(task["repeat"] for task in checked)
    if total > defaults.MAX_TASKS_PER_JOB:
        raise SpecError(f"spec has {total} tasks (repeats included); at most {defaults.MAX_TASKS_PER_JOB} per job")
    _check_job_params(checked)
    for raw, task in zip(tasks, checked, strict=True):
        copies = _expand(task)
        for task in copies:
            if task["name"] in seen:
                raise SpecError(f"task {task['name']!r}: duplicate name (names must be unique)")
            seen.add(task["name"])
            out.append(task)
        if len(copies) > 1:
            groups[str(raw["name"])] = [t["name"] for t in copies]
    if len(out) > defaults.MAX_TASKS_PER_JOB:
        raise SpecError(f"spec has {len(out)} tasks; at most {defaults.MAX_TASKS_PER_JOB} per job")
    _resolve_dependencies(out, seen, groups)
    return out


def redact_env(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as it may be stored, logged or served: every ``env`` value replaced by
    :data:`REDACTED`, names kept. Env values are how users pass credentials to their commands;
    they travel to the worker (which needs them) and nowhere else. Returns a copy when there is
    anything to redact, else ``params`` itself; never changes ``params``."""
    env = params.get("env") if type(params) is dict else None
    if not env:
        return params
    if isinstance(env, dict):
        return {**params, "env": dict.fromkeys(env, REDACTED)}
    return {**params, "env": REDACTED}  # not a table (the plugin will refuse it): hide it whole


def env_redacted(params: dict[str, Any]) -> bool:
    """Whether ``params`` is a redacted copy whose env values are gone (a task read back from
    the store): running it would hand ``***`` to its command instead of the real values."""
    env = params.get("env") if type(params) is dict else None
    if isinstance(env, dict):
        return any(value == REDACTED for value in env.values())
    return env == REDACTED


def _check_job_params(tasks: list[dict[str, Any]]) -> None:
    """Params of the whole job, repeats counted, within MAX_JOB_PARAMS_BYTES (each copy is
    stored and held on its own)."""
    total = 0
    for task in tasks:
        total += task.pop("params_bytes") * task["repeat"]
        if total > defaults.MAX_JOB_PARAMS_BYTES:
            raise SpecError(
                f"task {task['name']!r}: params of the job reach {total} bytes (repeats counted) here; "
                f"at most {defaults.MAX_JOB_PARAMS_BYTES} per job"
            )


def _params_bytes(params: dict[str, Any]) -> int | str:
    """Packed size of ``params``, or why it cannot be sent at all (a TOML date, an integer
    beyond 64 bits, nesting past msgpack's own limit)."""
    try:
        return len(msgpack.packb(params, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        return f"holds a value that cannot be sent ({exc})"


def _resolve_dependencies(tasks: list[dict[str, Any]], names: set[str], groups: dict[str, list[str]]) -> None:
    """Turn ``depends_on`` names into task names (a repeated task's name means all its copies)
    and reject unknown names and cycles, so the job's DAG is sound before anything is queued."""
    for task in tasks:
        resolved: list[str] = []
        for dep in task["depends_on"]:
            if dep in names:
                resolved.append(dep)
            elif dep in groups:
                resolved.extend(groups[dep])
            else:
                raise SpecError(f"task {task['name']!r}: field 'depends_on' names unknown task {dep!r}")
        if task["name"] in resolved:
            raise SpecError(f"task {task['name']!r}: field 'depends_on' names the task itself")
        task["depends_on"] = list(dict.fromkeys(resolved))
    # Kahn's algorithm: whatever cannot be ordered sits on a cycle.
    indegree = {t["name"]: len(t["depends_on"]) for t in tasks}
    dependents: dict[str, list[str]] = {}
    for t in tasks:
        for dep in t["depends_on"]:
            dependents.setdefault(dep, []).append(t["name"])
    ready = [name for name, n in indegree.items() if n == 0]
    while ready:
        for child in dependents.get(ready.pop(), []):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    cyclic = sorted(name for name, n in indegree.items() if n > 0)
    if cyclic:
        raise SpecError(f"dependency cycle among tasks: {', '.join(cyclic)}")


def _validate_one(index: int, raw: Any) -> dict[str, Any]:
    label = f"task #{index + 1}"
    if not isinstance(raw, dict):
        raise SpecError(f"{label}: must be a table/object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{label}: field 'name' is required and must be a non-empty string")
    label = f"task {name!r}"

    def fail(field: str, why: str) -> SpecError:
        return SpecError(f"{label}: field {field!r} {why}")

    unknown = sorted(set(raw) - TASK_FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a task field (known: {', '.join(sorted(TASK_FIELDS))})")
    plugin = raw.get("plugin")
    if not isinstance(plugin, str) or not plugin:
        raise fail("plugin", "is required and must be a plugin name such as 'sim' or 'shell'")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise fail("params", "must be a table/object")
    requires = raw.get("requires", {})
    if not isinstance(requires, dict):
        raise fail("requires", "must be a table/object")
    hw = requires.get("hardware")
    if hw is not None and not (
        isinstance(hw, str) or (isinstance(hw, list) and hw and all(isinstance(h, str) for h in hw))
    ):
        raise fail("requires.hardware", "must be a string or a non-empty list of strings")
    size = _params_bytes(params)
    if isinstance(size, str):
        raise fail("params", size)
    if size > defaults.MAX_TASK_PARAMS_BYTES:
        raise fail("params", f"is {size} bytes packed; at most {defaults.MAX_TASK_PARAMS_BYTES} per task")
    mem = requires.get("min_memory_gb")
    if mem is not None and (not _is_number(mem) or not 0 <= mem <= defaults.MAX_MIN_MEMORY_GB):
        raise fail("requires.min_memory_gb", f"must be a number from 0 to {defaults.MAX_MIN_MEMORY_GB}")
    priority = raw.get("priority", defaults.TASK_PRIORITY)
    if not _is_int(priority) or not -defaults.MAX_PRIORITY <= priority <= defaults.MAX_PRIORITY:
        raise fail("priority", f"must be an integer from {-defaults.MAX_PRIORITY} to {defaults.MAX_PRIORITY}")
    timeout = raw.get("timeout")
    if timeout is not None and (not _is_number(timeout) or not 0 < timeout <= defaults.MAX_TASK_TIMEOUT):
        raise fail("timeout", f"must be a positive number of seconds, at most {defaults.MAX_TASK_TIMEOUT:.0f}")
    try:
        wanted = resources.check(raw.get("resources", {}), "resources")
    except resources.ResourceError as exc:
        raise SpecError(f"{label}: field {exc}") from None
    placement_timeout = raw.get("placement_timeout")
    if placement_timeout is not None and (
        not _is_number(placement_timeout) or not 0 < placement_timeout <= defaults.MAX_TASK_TIMEOUT
    ):
        raise fail(
            "placement_timeout", f"must be a positive number of seconds, at most {defaults.MAX_TASK_TIMEOUT:.0f}"
        )
    retries = raw.get("retries", defaults.TASK_RETRIES)
    if not _is_int(retries) or not 0 <= retries <= defaults.MAX_RETRIES:
        raise fail("retries", f"must be a non-negative integer, at most {defaults.MAX_RETRIES}")
    backoff = raw.get("retry_backoff", defaults.RETRY_BACKOFF)
    if not _is_number(backoff) or not 0 <= backoff <= defaults.MAX_RETRY_BACKOFF:
        raise fail("retry_backoff", f"must be a number of seconds from 0 to {defaults.MAX_RETRY_BACKOFF:.0f}")
    depends_on = raw.get("depends_on", [])
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    if not isinstance(depends_on, list) or not all(isinstance(d, str) and d for d in depends_on):
        raise fail("depends_on", "must be a list of task names")
    repeat = raw.get("repeat", 1)
    if not _is_int(repeat) or repeat < 1:
        raise fail("repeat", "must be a positive integer")
    if repeat > defaults.MAX_TASKS_PER_JOB:
        raise fail("repeat", f"must be at most {defaults.MAX_TASKS_PER_JOB}")
    return {
        "name": name,
        "plugin": plugin,
        "params": params,
        "requires": requires,
        "resources": wanted,
        "priority": priority,
        "timeout": float(timeout) if timeout is not None else None,
        "placement_timeout": float(placement_timeout) if placement_timeout is not None else None,
        "retries": retries,
        "retry_backoff": float(backoff),
        "depends_on": list(depends_on),
        "repeat": repeat,
        "params_bytes": size,  # consumed by _check_job_params
    }


_REPEAT_SUFFIX = re.compile(r"\[\d+\]$")


def base_name(name: str) -> str:
    """The spec name a task came from: ``unit[3]`` -> ``unit`` (undoes ``repeat``)."""
    return _REPEAT_SUFFIX.sub("", name)


def _expand(task: dict[str, Any]) -> list[dict[str, Any]]:
    repeat = task.pop("repeat")
    if repeat == 1:
        return [task]
    return [dict(task, name=f"{task['name']}[{i}]", depends_on=list(task["depends_on"])) for i in range(repeat)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
