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
from typing import Any

import duckdb

from dtf_bus import runmeta
from dtf_bus.spec import env_redacted
from dtf_bus.task import FINAL_STATES, Attempt, Job, Task, TaskState

log = logging.getLogger(__name__)

ENV_LOST_ERROR = "env values are never stored; resubmit the job (the broker restarted before this task finished)"

_TASK_COLUMNS = (
    "task_id, job_id, name, plugin, params, requires, priority, timeout, retries, retry_backoff, seq, state, "
    "attempts, worker_id, epoch(submitted_at), epoch(started_at), epoch(ended_at), result, error, failures, "
    "lost_workers, depends_on, resources, placement_timeout"
)
_ATTEMPT_COLUMNS = (
    "task_id, attempt, worker_id, epoch(assigned_at), epoch(started_at), epoch(ended_at), outcome, stale, result, error"
)


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def load_jobs(cursor: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> tuple[list[Job], list[Task]]:
    """Jobs matching ``where`` (SQL over the jobs table) with all their tasks and attempts."""
    jobs = {
        row[0]: Job(
            job_id=row[0],
            name=row[1],
            task_ids=[],
            submitted_at=row[2] or 0.0,
            submitter=row[3] or "anonymous",
            meta=runmeta.from_columns(*row[4:]),
        )
        for row in cursor.execute(
            "SELECT job_id, name, epoch(submitted_at), submitter, git_commit, git_branch, git_dirty, "
            f"epoch(git_commit_time), labels FROM jobs WHERE {where}",
            params,
        ).fetchall()
    }
    if not jobs:
        return [], []
    ids = list(jobs)
    tasks: dict[str, Task] = {}
    rows = cursor.execute(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE job_id IN (SELECT unnest($1)) ORDER BY seq", [ids]
    ).fetchall()
    for r in rows:
        task = Task(
            task_id=r[0], job_id=r[1], name=r[2], plugin=r[3], params=_json(r[4]) or {}, requires=_json(r[5]) or {},
            priority=r[6], timeout=r[7], retries=r[8], retry_backoff=r[9] or 0.0, seq=r[10], state=TaskState(r[11]),
            attempt=r[12], worker_id=r[13], submitted_at=r[14], started_at=r[15], ended_at=r[16],
            result=_json(r[17]), error=r[18], failures=r[19] or 0, lost_workers=r[20] or 0,
            depends_on=_json(r[21]) or [],
            resources=_json(r[22]) or {},
            placement_timeout=r[23],
        )  # fmt: skip
        tasks[task.task_id] = task
        job = jobs[task.job_id]
        job.task_ids.append(task.task_id)
        if task.state not in FINAL_STATES:
            job.unfinished += 1
    attempts = cursor.execute(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE task_id IN (SELECT unnest($1)) ORDER BY task_id, attempt",
        [list(tasks)],
    ).fetchall()
    for r in attempts:
        tasks[r[0]].history.append(
            Attempt(number=r[1], worker_id=r[2], assigned_at=r[3], started_at=r[4], ended_at=r[5],
                    outcome=r[6], stale=bool(r[7]), result=_json(r[8]), error=r[9])
        )  # fmt: skip
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
    """What the task analyzer had learned before the restart."""
    return cursor.execute("SELECT worker_id, plugin, task_key, ewma_s, samples FROM task_durations").fetchall()


def next_seq(cursor: duckdb.DuckDBPyConnection) -> int:
    """Submit order continues where the previous broker left off."""
    return (cursor.execute("SELECT max(seq) FROM tasks").fetchone()[0] or 0) + 1


def load_worker_keys(cursor: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Worker id -> the CURVE key it is bound to (released bindings hold no key)."""
    return dict(cursor.execute("SELECT worker_id, key FROM worker_keys WHERE key IS NOT NULL").fetchall())
