"""How broker objects become rows of the results store (the reverse is :mod:`dtf_bus.store.recovery`).

Column order follows the tables' declarations in :data:`dtf_bus.store.db.SCHEMA`; keep the two in step.
A task's ``params.env`` values never reach a row (:func:`dtf_bus.spec.redact_env`): the worker
gets them with the task, the database only their names.
"""

from __future__ import annotations

import time
from typing import Any

from dtf_bus import runmeta
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.spec import redact_env
from dtf_bus.task import Attempt, Job, Task


def job_row(j: Job, total: int) -> tuple[Any, ...]:
    return (j.job_id, j.name, j.submitted_at, total, j.submitter, *runmeta.columns(j.meta))


def task_row(t: Task) -> tuple[Any, ...]:
    return (
        t.task_id, t.job_id, t.name, t.plugin, redact_env(t.params), t.requires, t.priority, t.timeout, t.retries,
        t.retry_backoff, t.seq, str(t.state), t.attempt, t.worker_id, t.submitted_at, t.started_at, t.ended_at,
        t.result, t.error, t.failures, t.lost_workers, t.depends_on, t.resources,
        t.placement_timeout,
    )  # fmt: skip


def attempt_row(t: Task, a: Attempt) -> tuple[Any, ...]:
    return (
        t.task_id, a.number, a.worker_id, a.assigned_at, a.started_at, a.ended_at, a.outcome, a.stale, a.result,
        a.error,
    )  # fmt: skip


def worker_row(w: WorkerInfo, state: str) -> tuple[Any, ...]:
    return (
        w.worker_id, w.capabilities.get("hostname"), w.hardware, w.capabilities, w.slots, sorted(w.plugins),
        w.registered_at, time.time(), state,
    )  # fmt: skip
