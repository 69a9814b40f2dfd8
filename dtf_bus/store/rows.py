"""How broker objects become rows of the results store (the reverse is :mod:`dtf_bus.store.recovery`).

Rows are built by column name from the declarations in :mod:`dtf_bus.store.schema`: a column
maps to the attribute of the same name unless :data:`TASK_ATTRIBUTES` (and its kin) say
otherwise, so the column order lives in one place. The task and attempt rows, written at every
state change on the broker's loop, are compiled from those maps (:mod:`dtf_bus.projection`).
A task's ``params.env`` values never reach a row (:func:`dtf_bus.spec.redact_env`): the worker
gets them with the task, the database only their names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from dtf_bus.projection import compile_tuple
from dtf_bus.spec import redact_env
from dtf_bus.store import schema
from dtf_bus.task import Attempt, Job, Task

# Column -> the attribute holding it, where the two names differ.
TASK_ATTRIBUTES = {"attempts": "attempt"}  # the fencing number of the task's current attempt
ATTEMPT_ATTRIBUTES = {"attempt": "number"}
# The jobs table's metadata columns -> their keys in Job.meta (dtf_bus.runmeta).
JOB_META = {
    "git_commit": "commit",
    "git_branch": "branch",
    "git_dirty": "dirty",
    "git_commit_time": "commit_time",
    "labels": "labels",
}

# The rows written at every state change, compiled from the schema (dtf_bus.projection).
task_row: Callable[[Task], tuple[Any, ...]] = compile_tuple(
    ("t",), [("t", TASK_ATTRIBUTES.get(c, c)) for c in schema.TASKS.names], {"params": redact_env, "state": str}
)
task_row.__doc__ = "A task's row of the tasks table (its env values redacted)."
attempt_row: Callable[[Task, Attempt], tuple[Any, ...]] = compile_tuple(
    ("t", "a"), [("t", c) if c == "task_id" else ("a", ATTEMPT_ATTRIBUTES.get(c, c)) for c in schema.ATTEMPTS.names]
)
attempt_row.__doc__ = "An attempt's row of the attempts table (``task_id`` from its task, the rest from it)."


class WorkerLike(Protocol):
    """What a worker row reads (:class:`dtf_bus.broker.workers.WorkerInfo` has it)."""

    worker_id: str
    capabilities: dict[str, Any]
    slots: int
    plugins: frozenset[str]
    registered_at: float

    @property
    def hardware(self) -> list[str]: ...


def job_row(j: Job, total: int) -> tuple[Any, ...]:
    values = {"job_id": j.job_id, "name": j.name, "submitted_at": j.submitted_at, "total": total}
    values["submitter"] = j.submitter
    values.update((column, j.meta.get(key)) for column, key in JOB_META.items())
    return schema.JOBS.row(values)


def duration_row(
    worker_id: str, plugin: str, task_key: str, mean_s: float, samples: int, updated_at: float
) -> tuple[Any, ...]:
    """What the duration model learned of one (worker, plugin, task key), as of ``updated_at``."""
    return schema.TASK_DURATIONS.row(
        {
            "worker_id": worker_id,
            "plugin": plugin,
            "task_key": task_key,
            "ewma_s": mean_s,
            "samples": samples,
            "updated_at": updated_at,
        }
    )


def worker_key_row(worker_id: str, key: str | None, bound_at: float) -> tuple[Any, ...]:
    """A worker id bound to a CURVE key (None: released, the id is free again)."""
    return schema.WORKER_KEYS.row({"worker_id": worker_id, "key": key, "bound_at": bound_at})


def worker_row(w: WorkerLike, state: str) -> tuple[Any, ...]:
    return schema.WORKERS.row(
        {
            "worker_id": w.worker_id,
            "hostname": w.capabilities.get("hostname"),
            "hardware": w.hardware,
            "capabilities": w.capabilities,
            "slots": w.slots,
            "plugins": sorted(w.plugins),
            "registered_at": w.registered_at,
            "last_seen": time.time(),
            "state": state,
        }
    )
