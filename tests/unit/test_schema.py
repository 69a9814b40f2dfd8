"""Every table declared once: DDL, rows by column name and recovery's reads derive from it."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from dtf_bus.store import recovery, rows, schema
from dtf_bus.store.db import Store
from dtf_bus.task import Attempt, Job, Task, TaskState

pytestmark = pytest.mark.unit

EVERY_TABLE = (*schema.CORE, *schema.RESULTS, *schema.MONITOR)


def test_every_table_is_declared_once_and_created_as_declared():
    names = [t.name for t in EVERY_TABLE]
    assert len(names) == len(set(names))
    con = duckdb.connect()
    for table in EVERY_TABLE:
        con.execute(table.ddl())
        declared = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?"
            " ORDER BY ordinal_position",
            [table.name],
        ).fetchall()
        assert tuple(declared) == table.columns, table.name


def test_a_row_is_built_by_column_name_and_a_wrong_name_is_refused():
    values = {"worker_id": "w1", "key": "k", "bound_at": 1.0}
    assert schema.WORKER_KEYS.row(dict(reversed(values.items()))) == ("w1", "k", 1.0)
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['keys'\], missing \['key'\]"):
        schema.WORKER_KEYS.row({"worker_id": "w1", "keys": "k", "bound_at": 1.0})


def test_task_attempt_and_job_survive_the_store_field_by_field(tmp_path):
    """Every column of the tasks and attempts rows comes back into the attribute it came from:
    a column added to the schema without its attribute fails here, not in a restart."""
    job = Job("j", "suite", ["j.0"], submitted_at=1.7e9, submitter="alice", meta={"commit": "a" * 40, "dirty": True})
    task = Task(
        "j.0", "j", "unit[3]", "sim", {"seconds": 1}, {"gpu": True}, 5, 30.0, 2, 7, retry_backoff=0.5,
        state=TaskState.RUNNING, attempt=2, worker_id="w1", submitted_at=1.7e9, started_at=1.7e9 + 1,
        failures=1, lost_workers=1, placement_timeout=60.0, resources={"gpus": 1}, depends_on=["j.9"],
    )  # fmt: skip
    task.history = [
        Attempt(1, "w0", 1.7e9, 1.7e9, 1.7e9 + 0.5, "failed", False, {"exit": 1}, "boom"),
        Attempt(2, "w1", 1.7e9 + 1, 1.7e9 + 1, None, "assigned", True),
    ]
    store = Store(tmp_path / "r.duckdb", flush_interval=0.05)
    store.put("jobs", rows.job_row(job, 1))
    store.put("tasks", rows.task_row(task))
    for attempt in task.history:
        store.put("attempts", rows.attempt_row(task, attempt))
    assert store.flush(10)
    [back_job], [back] = store.read(lambda cursor: recovery.load_jobs(cursor, "job_id = $1", ["j"]))
    store.close()
    assert (back_job.name, back_job.submitted_at, back_job.submitter) == ("suite", 1.7e9, "alice")
    assert back_job.meta == job.meta and back_job.task_ids == ["j.0"] and back_job.unfinished == 1
    for name in ("history", "key", *(rows.TASK_ATTRIBUTES.get(c, c) for c in schema.TASKS.names)):
        assert getattr(back, name) == getattr(task, name), name
    assert [dataclasses.asdict(a) for a in back.history] == [dataclasses.asdict(a) for a in task.history]
