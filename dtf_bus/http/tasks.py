"""The API's view of tasks: ``/api/tasks`` (newest first, filtered) and ``/api/tasks/ID``.

Rows come from the store, read by column name (:mod:`dtf_bus.store.schema`); the store lags the
broker by up to one flush, so the monitor's live view of a recently changed task
(:data:`dtf_bus.task.LIVE_FIELDS`) is laid over it. A task the store has not written yet is
served from the live view alone.
"""

from __future__ import annotations

import json
from typing import Any

from dtf_bus import spec
from dtf_bus.http.handler import ApiError, Handler
from dtf_bus.store import schema
from dtf_bus.store.rows import TASK_ATTRIBUTES
from dtf_bus.task import SUMMARY_FIELDS

# A task as the API lists it: store columns (``attempts`` is the current attempt's number).
TASK_COLUMNS = (*SUMMARY_FIELDS, "attempts", "submitted_at", "started_at", "ended_at", "error")
_DETAIL_COLUMNS = ("result", "params", "requires")  # JSON, one task's page only
# What the live view knows better than a row up to one flush old.
_OVERLAID = ("state", "worker_id", "attempts", "started_at", "ended_at", "error")
_ATTEMPT_FIELDS = tuple(c for c in schema.ATTEMPTS.names if c not in ("task_id", "result"))
_TASK_SELECT = f"SELECT {schema.TASKS.select(TASK_COLUMNS)} FROM tasks"


def _live(column: str, live: dict[str, Any]) -> Any:
    """The live view's value for a tasks-table ``column``."""
    return live.get(TASK_ATTRIBUTES.get(column, column))


def _overlay(row: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The store lags the broker by up to one flush; the monitor's live view is fresher."""
    if live is not None:
        row.update((column, _live(column, live)) for column in _OVERLAID)
    return row


def _served_params(params: Any) -> Any:
    """What the API shows of a task's params: ``env`` names with their values as ``***`` (the
    store keeps them so already; this holds for rows written before it did)."""
    return spec.redact_env(params) if isinstance(params, dict) else params


class TasksHandler(Handler):
    async def get(self) -> None:
        where, params = [], []
        for arg, column in (("state", "state"), ("job", "job_id"), ("worker", "worker_id")):
            value = self.get_query_argument(arg, None)
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        offset, limit = self.page(100)
        sql = _TASK_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY submitted_at DESC, task_id LIMIT ? OFFSET ?"
        rows = await self.query(sql, [*params, limit, offset])
        tasks = [_overlay(dict(zip(TASK_COLUMNS, r, strict=True)), self.monitor.task(r[0])) for r in rows]
        self.reply(tasks, limit=limit, offset=offset)


class TaskHandler(Handler):
    async def get(self, task_id: str) -> None:
        live = self.monitor.task(task_id)
        columns = (*TASK_COLUMNS, *_DETAIL_COLUMNS)
        rows = await self.query(f"SELECT {schema.TASKS.select(columns)} FROM tasks WHERE task_id = ?", [task_id])
        if not rows and live is None:
            raise ApiError(404, f"unknown task {task_id!r}")
        if rows:
            task = dict(zip(columns, rows[0], strict=True))
            for column in _DETAIL_COLUMNS:
                task[column] = json.loads(task[column]) if task[column] else None
            task["params"] = _served_params(task["params"])
        else:
            task = {column: _live(column, live) for column in TASK_COLUMNS}
        _overlay(task, live)
        attempts = await self.query(
            f"SELECT {schema.ATTEMPTS.select(_ATTEMPT_FIELDS)} FROM attempts WHERE task_id = ? ORDER BY attempt",
            [task_id],
        )
        task["history"] = [dict(zip(_ATTEMPT_FIELDS, a, strict=True)) for a in attempts]
        self.reply(task, live=live is not None)


ROUTES: list[tuple[str, type]] = [
    ("/api/tasks", TasksHandler),
    ("/api/tasks/([^/]+)", TaskHandler),
]
