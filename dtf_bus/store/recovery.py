"""Rebuilding broker state from the results database after a restart.

Every task and attempt row is committed before the broker acknowledges anything that depends
on it (see :meth:`dtf_bus.store.db.Store.mark`), so the database is the truth a restarted
broker resumes from: unfinished jobs are loaded whole, queued tasks queue again, and tasks
that were assigned or running wait a grace period for their workers to come back and report.

One thing the database never had is a task's ``env`` values (rows hold them redacted, see
:func:`dtf_bus.spec.redact_env`): an unfinished task that had them comes back failed, saying so,
rather than running with ``***`` where its credentials were.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import duckdb

from dtf_bus import runmeta
from dtf_bus.spec import env_redacted
from dtf_bus.store import rows, schema
from dtf_bus.task import FINAL_STATES, Attempt, Job, Task, TaskState

log = logging.getLogger(__name__)

ENV_LOST_ERROR = "env values are never stored; resubmit the job (the broker restarted before this task finished)"

# A column read back NULL (a row older than the column) -> what the broker object holds instead.
_TASK_NULLS: dict[str, Callable[[], Any]] = {
    "params": dict,
    "requires": dict,
    "retry_backoff": float,
    "failures": int,
    "lost_workers": int,
    "depends_on": list,
    "resources": dict,
}


def _decoded(table: schema.TableSchema, row: tuple[Any, ...]) -> dict[str, Any]:
    """A row read with ``table.select()``, keyed by column name, its JSON columns parsed."""
    values = dict(zip(table.names, row, strict=True))
    for name, sql_type in table.columns:
        if sql_type == "JSON" and values[name] is not None:
            values[name] = json.loads(values[name])
    return values


def task_from_row(row: tuple[Any, ...]) -> Task:
    """The reverse of :func:`dtf_bus.store.rows.task_row`."""
    values = _decoded(schema.TASKS, row)
    for name, empty in _TASK_NULLS.items():
        if values[name] is None:
            values[name] = empty()
    values["state"] = TaskState(values["state"])
    return Task(**{rows.TASK_ATTRIBUTES.get(name, name): value for name, value in values.items()})


def attempt_from_row(row: tuple[Any, ...]) -> tuple[str, Attempt]:
    """The reverse of :func:`dtf_bus.store.rows.attempt_row`: the task id and its attempt."""
    values = _decoded(schema.ATTEMPTS, row)
    task_id = values.pop("task_id")
    values["stale"] = bool(values["stale"])
    return task_id, Attempt(**{rows.ATTEMPT_ATTRIBUTES.get(name, name): value for name, value in values.items()})


def job_from_row(row: tuple[Any, ...]) -> Job:
    """A job (its tasks not yet attached) from a row read with ``schema.JOBS.select()``."""
    values = dict(zip(schema.JOBS.names, row, strict=True))
    meta = runmeta.from_columns(**{key: values[column] for column, key in rows.JOB_META.items()})
    return Job(
        job_id=values["job_id"],
        name=values["name"],
        task_ids=[],
        submitted_at=values["submitted_at"] or 0.0,
        submitter=values["submitter"] or "anonymous",
        meta=meta,
    )


def load_jobs(cursor: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> tuple[list[Job], list[Task]]:
    """Jobs matching ``where`` (SQL over the jobs table) with all their tasks and attempts."""
    found = cursor.execute(f"SELECT {schema.JOBS.select()} FROM jobs WHERE {where}", params).fetchall()
    jobs = {job.job_id: job for job in map(job_from_row, found)}
    if not jobs:
        return [], []
    tasks: dict[str, Task] = {}
    task_rows = cursor.execute(
        f"SELECT {schema.TASKS.select()} FROM tasks WHERE job_id IN (SELECT unnest($1)) ORDER BY seq", [list(jobs)]
    ).fetchall()
    for row in task_rows:
        task = task_from_row(row)
        tasks[task.task_id] = task
        job = jobs[task.job_id]
        job.task_ids.append(task.task_id)
        if task.state not in FINAL_STATES:
            job.unfinished += 1
    attempt_rows = cursor.execute(
        f"SELECT {schema.ATTEMPTS.select()} FROM attempts WHERE task_id IN (SELECT unnest($1)) "
        "ORDER BY task_id, attempt",
        [list(tasks)],
    ).fetchall()
    for row in attempt_rows:
        task_id, attempt = attempt_from_row(row)
        tasks[task_id].history.append(attempt)
    return list(jobs.values()), list(tasks.values())


def load_unfinished(cursor: duckdb.DuckDBPyConnection) -> tuple[list[Job], list[Task]]:
    """Every job that still has a task that is not final."""
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    where = f"job_id IN (SELECT DISTINCT job_id FROM tasks WHERE state NOT IN ({final}))"
    jobs, tasks = load_jobs(cursor, where, [])
    _fail_without_env(cursor, jobs, tasks)
    return jobs, tasks


def _fail_without_env(cursor: duckdb.DuckDBPyConnection, jobs: list[Job], tasks: list[Task]) -> None:
    """Unfinished tasks whose env values were redacted fail (their dependents are cancelled),
    in memory and in the database, so the broker resumes with them final and no one runs them."""
    by_id = {t.task_id: t for t in tasks}
    doomed = [t for t in tasks if t.state not in FINAL_STATES and env_redacted(t.params)]
    if not doomed:
        return
    now = time.time()
    changed: list[Task] = []
    for task in doomed:
        task.state, task.error, task.ended_at = TaskState.FAILED, ENV_LOST_ERROR, now
        changed.append(task)
    # A dependent of a failed task is cancelled, as the broker does when a dependency fails.
    dependents: dict[str, list[Task]] = {}
    for task in tasks:
        for dep in task.depends_on:
            dependents.setdefault(dep, []).append(task)
    pending = list(doomed)
    while pending:
        failed = pending.pop()
        for dependent in dependents.get(failed.task_id, []):
            if dependent.state in FINAL_STATES:
                continue
            dependent.state, dependent.ended_at = TaskState.CANCELLED, now
            dependent.error = f"dependency {by_id[failed.task_id].name!r} {failed.state}"
            changed.append(dependent)
            pending.append(dependent)
    jobs_by_id = {job.job_id: job for job in jobs}
    for task in changed:
        jobs_by_id[task.job_id].unfinished -= 1
    cursor.executemany(
        "UPDATE tasks SET state = $1, error = $2, ended_at = make_timestamp(CAST($3 * 1e6 AS BIGINT)) "
        "WHERE task_id = $4",
        [[str(t.state), t.error, t.ended_at, t.task_id] for t in changed],
    )
    for job_id in sorted({t.job_id for t in doomed}):
        count = sum(1 for t in doomed if t.job_id == job_id)
        log.warning("job %s: %d unfinished task(s) failed: %s", job_id, count, ENV_LOST_ERROR)


def load_durations(cursor: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, float, int]]:
    """What the duration model (:mod:`dtf_bus.durations`) had learned before the restart."""
    return cursor.execute("SELECT worker_id, plugin, task_key, ewma_s, samples FROM task_durations").fetchall()


def next_seq(cursor: duckdb.DuckDBPyConnection) -> int:
    """Submit order continues where the previous broker left off."""
    return (cursor.execute("SELECT max(seq) FROM tasks").fetchone()[0] or 0) + 1


def load_worker_keys(cursor: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Worker id -> the CURVE key it is bound to (released bindings hold no key)."""
    return dict(cursor.execute("SELECT worker_id, key FROM worker_keys WHERE key IS NOT NULL").fetchall())
