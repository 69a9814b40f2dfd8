"""Run metadata: where a job came from (git commit, branch, dirty flag, commit time) and its labels.

A test lead's first questions about a run are "which commit?" and "which of our runs is it?".
The client answers them at submit (``dtf submit``, ``dtf up --suite``, ``pytest --dtf``): it asks
``git`` about the submitting directory, each call under a short timeout, and sends what it
learnt with ``--label K=V`` pairs in the SUBMIT body's ``meta``. No git, no checkout, a git that
hangs or refuses (a "dubious ownership" repository): no git fields, never an error, since a
run's metadata must not be the reason it cannot run. The broker checks ``meta`` with
:func:`validate_meta` (bounded like every other field a peer sends) and stores it on the job's row.

The commit is the full 40-character SHA (64 for a SHA-256 repository), so two runs name the
same code exactly. ``dirty`` ignores untracked files, as ``git describe --dirty`` does: a
``__pycache__`` or a report file beside the tests is not a change of the code under test.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dtf_bus import defaults

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9_.:/-]+")
GIT_FIELDS = ("commit", "branch", "dirty", "commit_time")


class MetaError(ValueError):
    """Metadata that cannot be stored; the message names the field."""


def parse_labels(items: Iterable[str] | None, flag: str = "--label") -> dict[str, str]:
    """``K=V`` strings as a dict (a later K wins); raises MetaError naming the bad one."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise MetaError(f"{flag}: expected KEY=VALUE, got {item!r}")
        labels[key.strip()] = value.strip()
    check_labels(labels, flag)
    return labels


def check_labels(labels: Any, where: str = "labels") -> dict[str, str]:
    """Labels as stored: at most MAX_JOB_LABELS, keys of letters, digits and ``_.:/-``, string values."""
    if not isinstance(labels, dict):
        raise MetaError(f"{where}: expected a table of KEY=VALUE")
    if len(labels) > defaults.MAX_JOB_LABELS:
        raise MetaError(f"{where}: {len(labels)} labels; at most {defaults.MAX_JOB_LABELS}")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key) or len(key) > defaults.MAX_LABEL_KEY_CHARS:
            raise MetaError(
                f"{where}: label key {str(key)[:80]!r} must be 1-{defaults.MAX_LABEL_KEY_CHARS} letters, digits "
                "or _.:/-"
            )
        if not isinstance(value, str) or len(value) > defaults.MAX_LABEL_VALUE_CHARS:
            raise MetaError(
                f"{where}: label {key!r} must be a string of at most {defaults.MAX_LABEL_VALUE_CHARS} chars"
            )
    return labels


def _git(directory: Path, *args: str) -> str | None:
    """One git command's stdout, or None (no git, not a checkout, an error, too slow)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status must not take index.lock
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=defaults.GIT_TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git %s in %s: %s", args[0], directory, exc)
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(directory: str | Path) -> dict[str, Any]:
    """``commit``, ``branch`` (None when detached), ``dirty`` and ``commit_time`` (epoch seconds)
    of the checkout holding ``directory``; {} when it is none or git cannot tell."""
    path = Path(directory)
    head = _git(path, "log", "-1", "--format=%H %ct")
    if not head:
        return {}
    sha, _, when = head.strip().partition(" ")
    if not _SHA.fullmatch(sha):
        return {}
    info: dict[str, Any] = {"commit": sha, "commit_time": float(when) if when.isdigit() else None}
    branch = _git(path, "symbolic-ref", "-q", "--short", "HEAD")
    info["branch"] = branch.strip()[: defaults.MAX_BRANCH_CHARS] if branch and branch.strip() else None
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    info["dirty"] = None if status is None else bool(status.strip())
    return info


def collect(directory: str | Path, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What a client sends as a SUBMIT's ``meta``: git facts of ``directory`` and the labels."""
    meta: dict[str, Any] = dict(git_info(directory))
    if labels:
        meta["labels"] = dict(labels)
    return meta


def validate_meta(meta: Any) -> dict[str, Any]:
    """A SUBMIT's ``meta`` as the broker stores it; raises MetaError naming the field at fault."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise MetaError("meta: expected a table")
    unknown = sorted(set(meta) - {*GIT_FIELDS, "labels"})
    if unknown:
        raise MetaError(f"meta: unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    out: dict[str, Any] = {}
    commit = meta.get("commit")
    if commit is not None:
        if not isinstance(commit, str) or not _SHA.fullmatch(commit):
            raise MetaError("meta.commit: expected the full 40-character hexadecimal commit id")
        out["commit"] = commit
    branch = meta.get("branch")
    if branch is not None:
        if not isinstance(branch, str) or not 0 < len(branch) <= defaults.MAX_BRANCH_CHARS:
            raise MetaError(f"meta.branch: expected a name of 1-{defaults.MAX_BRANCH_CHARS} characters")
        out["branch"] = branch
    dirty = meta.get("dirty")
    if dirty is not None:
        if not isinstance(dirty, bool):
            raise MetaError("meta.dirty: expected true or false")
        out["dirty"] = dirty
    when = meta.get("commit_time")
    if when is not None:
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            raise MetaError("meta.commit_time: expected epoch seconds")
        if not 0 <= when < 1e11:
            raise MetaError(f"meta.commit_time: not a plausible epoch timestamp ({when!r})")
        out["commit_time"] = float(when)
    if meta.get("labels") is not None:
        out["labels"] = dict(check_labels(meta["labels"], "meta.labels"))
    return out


def from_columns(commit: Any, branch: Any, dirty: Any, commit_time: Any, labels: Any) -> dict[str, Any]:
    """Job.meta from the jobs row's metadata columns (``labels`` as DuckDB returns JSON: text);
    :data:`dtf_bus.store.rows.JOB_META` maps the columns to these names."""
    meta: dict[str, Any] = {}
    for name, value in (("commit", commit), ("branch", branch), ("dirty", dirty), ("commit_time", commit_time)):
        if value is not None:
            meta[name] = value
    if labels:
        meta["labels"] = json.loads(labels) if isinstance(labels, str) else labels
    return meta
