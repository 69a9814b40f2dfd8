"""Capability matching: can this worker run this task, and if nobody can, why not.

Rules: ``hardware`` is any-of against the worker's hardware list; ``min_memory_gb`` is a
minimum against ``memory_gb``; every other key must equal the worker's capability of that
name. The task's plugin is an implicit requirement. Like LAVA's ``accepts() -> (bool,
reason)``, :func:`explain` says per requirement why no live worker qualifies.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from dtf_bus.broker.workers import WorkerInfo


def requirement_key(plugin: str, requires: dict[str, Any], wanted: Mapping[str, int] | None = None) -> str:
    """Tasks with equal keys have equal eligibility, so placement caches per key."""
    key = plugin + "|" + json.dumps(requires, sort_keys=True, default=str)
    return key + "|" + json.dumps(wanted, sort_keys=True) if wanted else key


def parse_key(key: str) -> tuple[str, dict[str, Any], dict[str, int]]:
    """(plugin, requires, resources) back from :func:`requirement_key`."""
    plugin, _, rest = key.partition("|")
    decoder = json.JSONDecoder()
    requires, end = decoder.raw_decode(rest or "{}")
    wanted = decoder.raw_decode(rest, end + 1)[0] if rest[end : end + 1] == "|" else {}
    return plugin, requires, wanted


def _hardware_wanted(requires: dict[str, Any]) -> list[str]:
    hw = requires.get("hardware")
    if hw is None:
        return []
    return [hw] if isinstance(hw, str) else list(hw)


def _equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # Declared on a command line, "2" and 2 mean the same; compare case-insensitively as text.
    return have is not None and str(want).lower() == str(have).lower()


def unmet(
    plugin: str, requires: dict[str, Any], worker: WorkerInfo, wanted: Mapping[str, int] | None = None
) -> list[str]:
    """Every requirement ``worker`` fails, as readable reasons (empty = it can run the task).
    ``wanted`` resources count against the worker's totals: whether they are free now is
    placement's business, not eligibility's."""
    reasons = [
        f"resources.{name}={count}" for name, count in (wanted or {}).items() if worker.resources.get(name, 0) < count
    ]
    if plugin not in worker.plugins:
        reasons.append(f"plugin={plugin}")
    caps = worker.capabilities
    for key, want in requires.items():
        if key == "hardware":
            wanted = _hardware_wanted(requires)
            if not set(wanted) & set(worker.hardware):
                reasons.append(f"hardware={'|'.join(wanted)}")
        elif key == "min_memory_gb":
            have = caps.get("memory_gb")
            if not isinstance(have, int | float) or have < want:
                reasons.append(f"min_memory_gb={want}")
        elif not _equal(want, caps.get(key)):
            reasons.append(f"{key}={want}")
    return reasons


def can_run(plugin: str, requires: dict[str, Any], worker: WorkerInfo, wanted: Mapping[str, int] | None = None) -> bool:
    return not unmet(plugin, requires, worker, wanted)


def explain(
    plugin: str, requires: dict[str, Any], workers: Iterable[WorkerInfo], wanted: Mapping[str, int] | None = None
) -> list[str]:
    """Why no live worker can run a task: one line per requirement nobody meets."""
    workers = list(workers)
    if not workers:
        return ["no live workers are registered"]
    reasons: list[str] = []
    for name, count in (wanted or {}).items():
        most = max(w.resources.get(name, 0) for w in workers)
        if most < count:
            reasons.append(f"resources.{name}={count}: the most any live worker has is {most}")
    if not any(plugin in w.plugins for w in workers):
        have = sorted({p for w in workers for p in w.plugins})
        reasons.append(f"plugin={plugin}: no live worker has it (fleet has: {', '.join(have)})")
    for key, want in requires.items():
        if key == "hardware":
            wanted = _hardware_wanted(requires)
            if not any(set(wanted) & set(w.hardware) for w in workers):
                have = sorted({h for w in workers for h in w.hardware})
                reasons.append(
                    f"requires.hardware={'|'.join(wanted)}: no live worker has it"
                    f" (fleet has: {', '.join(have) or 'none'})"
                )
        elif key == "min_memory_gb":
            mems = [w.capabilities.get("memory_gb") for w in workers]
            best = max((m for m in mems if isinstance(m, int | float)), default=None)
            if best is None or best < want:
                reasons.append(f"requires.min_memory_gb={want}: largest live worker has {best} GB")
        else:
            values = [w.capabilities.get(key) for w in workers]
            if not any(_equal(want, v) for v in values):
                seen = sorted({str(v) for v in values if v is not None})
                reasons.append(
                    f"requires.{key}={want}: no live worker has it"
                    f" (fleet has: {', '.join(seen) or 'no such capability'})"
                )
    if not reasons:
        reasons.append("each requirement is met by some worker, but no single worker meets all")
    return reasons


def suggestions(plugin: str, requires: dict[str, Any], plugins: set[str], keys: set[str]) -> list[str]:
    """Did-you-mean hints for a plugin name or requirement key no worker ever offered."""
    hints = []
    if plugin not in plugins:
        close = difflib.get_close_matches(plugin, sorted(plugins), n=1)
        if close:
            hints.append(f"plugin {plugin!r}: did you mean {close[0]!r}?")
    known = keys | {"hardware", "min_memory_gb"}
    for key in requires:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            if close:
                hints.append(f"requirement {key!r}: did you mean {close[0]!r}?")
    return hints
