"""A job's status as clients see it (STATUS, WAIT, FOLLOW, the finished job's summary)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.task import Job, Task, TaskState


def job_status(job: Job, tasks: Mapping[str, Task], scheduler: Scheduler) -> dict[str, Any]:
    """What a client sees of a job: counts per state, and why queued tasks wait (blocked by
    dependencies, or unplaceable: no live worker could run them now)."""
    counts: Counter[str] = Counter()
    blocked: dict[tuple[str, ...], list[str]] = {}
    unplaceable: list[str] = []  # no live worker could run it now
    for task_id in job.task_ids:
        task = tasks[task_id]
        counts[str(task.state)] += 1
        if task.state is TaskState.QUEUED:
            if task.waiting_on:
                names = ", ".join(sorted(tasks[d].name for d in task.waiting_on))
                reasons = [f"waiting for dependencies: {names}"]
            else:
                reasons = scheduler.why_queued(task)
                if reasons:
                    unplaceable.append(task_id)
            if reasons:
                blocked.setdefault(tuple(reasons), []).append(task.name)
    return {
        "job_id": job.job_id,
        "name": job.name,
        "submitter": job.submitter,
        "meta": job.meta,
        "total": len(job.task_ids),
        "done": job.done,
        "open": job.open,
        "counts": dict(counts),
        "succeeded": counts["succeeded"],
        "failed": counts["failed"] + counts["timed_out"],
        "cancelled": counts["cancelled"],
        "blocked": [{"tasks": names, "reasons": list(r)} for r, names in blocked.items()],
        "unplaceable": unplaceable,
    }
