"""The batched DuckDB writer, against a real DuckDB file."""

import logging
import select

import duckdb
import pytest

from dtf_bus.store import recovery, rows
from dtf_bus.store.db import SCHEMA, Store
from dtf_bus.task import Task, TaskState

pytestmark = pytest.mark.unit


def test_rows_coalesce_and_survive_close(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path, flush_interval=0.05)
    base = ("j.0", "j", "t", "sim", {"seconds": 1}, {}, 0, None, 0, 1.0, 1)
    store.put("tasks", (*base, "queued", 1, None, 1.7e9, None, None, None, None, 0, 0, []))
    store.put("tasks", (*base, "succeeded", 2, "w1", 1.7e9, 1.7e9 + 1, 1.7e9 + 2, {"ok": True}, None, 0, 1, []))
    store.put("attempts", ("j.0", 1, "w0", 1.7e9, None, 1.7e9, "lost", False, None, "worker lost"))
    store.put("attempts", ("j.0", 2, "w1", 1.7e9, 1.7e9 + 1, 1.7e9 + 2, "succeeded", False, {"ok": True}, None))
    assert store.flush(10)
    store.close()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("select state, attempts, worker_id, result->>'ok' from tasks").fetchall() == [
        ("succeeded", 2, "w1", "true")
    ]
    assert con.execute("select attempt, outcome from attempts order by attempt").fetchall() == [
        (1, "lost"),
        (2, "succeeded"),
    ]
    assert con.execute("select ended_at - started_at from tasks").fetchone()[0].total_seconds() == 1


def test_extension_tables_append_only(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path, flush_interval=0.05)
    store.register_table(
        "samples",
        "CREATE TABLE IF NOT EXISTS samples (ts TIMESTAMP, name VARCHAR, value DOUBLE, extra JSON)",
        ("ts", "name", "value", "extra"),
    )
    for i in range(3):
        store.put("samples", (1.7e9 + i, "cpu", float(i), {"i": i}))
    assert store.flush(10)
    assert store.cursor().execute("select count(*), sum(value) from samples").fetchone() == (3, 3.0)
    store.close()


def test_values_are_converted_by_column_type(tmp_path):
    """Timestamps from epoch seconds, JSON kept as JSON (a string stays a JSON string, NaN
    becomes null without losing the row), NULLs as NULL, lists into list columns."""
    store = Store(tmp_path / "r.duckdb", flush_interval=0.05)
    store.register_table(
        "samples",
        "CREATE TABLE IF NOT EXISTS samples (k VARCHAR PRIMARY KEY, ts TIMESTAMP, n BIGINT, ok BOOLEAN,"
        " tags VARCHAR[], extra JSON)",
        ("k", "ts", "n", "ok", "tags", "extra"),
        key_columns=1,
    )
    store.put("samples", ("a", 1.7e9 + 0.25, 2**40, True, ["x", "y"], {"nested": [1, {"é": 'q"uote'}]}))
    store.put("samples", ("b", None, None, None, None, None))
    store.put("samples", ("c", 1.7e9, 1, False, [], "just text"))
    store.put("samples", ("d", 1.7e9, 1, False, [], {"mean": float("nan"), "n": 3}))
    assert store.flush(10)
    rows = store.cursor().execute("select k, epoch(ts), n, ok, tags, extra from samples order by k").fetchall()
    store.close()
    assert rows == [
        ("a", 1.7e9 + 0.25, 2**40, True, ["x", "y"], '{"nested":[1,{"é":"q\\"uote"}]}'),
        ("b", None, None, None, None, None),
        ("c", 1.7e9, 1, False, [], '"just text"'),
        ("d", 1.7e9, 1, False, [], '{"mean":null,"n":3}'),
    ]


# Safety of what is stored and logged.

# The tasks and jobs tables as dtf wrote them before the columns were widened.
OLD_SCHEMA = """
CREATE TABLE jobs (job_id VARCHAR PRIMARY KEY, name VARCHAR, submitted_at TIMESTAMP, total INTEGER);
CREATE TABLE tasks (
    task_id VARCHAR PRIMARY KEY, job_id VARCHAR, name VARCHAR, plugin VARCHAR, params JSON, requires JSON,
    priority INTEGER, timeout DOUBLE, retries INTEGER, retry_backoff DOUBLE, seq BIGINT, state VARCHAR,
    attempts INTEGER, worker_id VARCHAR, submitted_at TIMESTAMP, started_at TIMESTAMP, ended_at TIMESTAMP,
    result JSON, error VARCHAR, failures INTEGER, lost_workers INTEGER, depends_on JSON
);
INSERT INTO jobs VALUES ('j', 'old', now()::TIMESTAMP, 1);
INSERT INTO tasks VALUES ('j.0', 'j', 't', 'sim', '{}', '{}', 7, NULL, 2, 1.0, 1, 'succeeded', 1, 'w1',
    NULL, NULL, NULL, NULL, NULL, 0, 0, '[]');
"""


def _task(task_id: str, **fields) -> Task:
    base = {"job_id": "j", "name": task_id, "plugin": "shell", "params": {}, "requires": {}, "priority": 0}
    base.update(timeout=None, retries=0, seq=int(task_id.split(".")[1]))
    return Task(task_id=task_id, **{**base, **fields})


MIGRATED = ("priority", "retries", "attempts", "failures", "lost_workers")


def test_an_older_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_SCHEMA)
    con.close()
    for _ in range(2):  # and opening it again changes nothing
        store = Store(path, flush_interval=0.05)
        store.put("tasks", rows.task_row(_task("j.1", priority=10**6, retries=2**40)))
        assert store.flush(10)
        store.close()
    con = duckdb.connect(str(path), read_only=True)
    types = dict(
        con.execute(
            "select column_name, data_type from information_schema.columns where table_name = 'tasks'"
        ).fetchall()
    )
    assert [types[c] for c in MIGRATED] == ["BIGINT"] * len(MIGRATED)
    assert con.execute("select task_id, priority, retries from tasks order by task_id").fetchall() == [
        ("j.0", 7, 2),
        ("j.1", 10**6, 2**40),
    ]
    assert con.execute("select name, submitter from jobs").fetchall() == [("old", None)]


def test_a_row_that_cannot_be_stored_is_logged_by_key_alone(tmp_path, caplog):
    store = Store(tmp_path / "r.duckdb", flush_interval=0.05)
    secret = {"cmd": "deploy", "token": "s3cret-value"}
    good = rows.task_row(_task("j.0", params=secret))
    bad = rows.task_row(_task("j.1", params=secret))
    bad = (*bad[:6], "not a number", *bad[7:])  # priority: fails the batch, then its own insert
    with caplog.at_level(logging.WARNING, logger="dtf_bus.store.db"):
        store.put("tasks", good)
        store.put("tasks", bad)
        assert store.flush(10)
    stored = store.cursor().execute("select task_id from tasks").fetchall()
    store.close()
    assert stored == [("j.0",)]  # its batch-mate survived
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 1 and "dropped a row of tasks (j.1)" in dropped[0], dropped
    assert "s3cret" not in caplog.text and "deploy" not in caplog.text


def test_task_rows_hold_env_names_not_values():
    task = _task("j.0", params={"cmd": "echo $TOKEN", "env": {"TOKEN": "s3cret"}})
    row = rows.task_row(task)
    assert row[4] == {"cmd": "echo $TOKEN", "env": {"TOKEN": "***"}}
    assert task.params["env"]["TOKEN"] == "s3cret"  # what the worker is sent


def test_recovered_tasks_whose_env_was_redacted_fail_with_their_dependents(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path, flush_interval=0.05)
    store.put("jobs", ("j", "deploy", 1.7e9, 4, "alice"))
    env = {"cmd": "deploy", "env": {"TOKEN": "s3cret"}}
    for task in (
        _task("j.0", params=env),
        _task("j.1", depends_on=["j.0"]),
        _task("j.2", depends_on=["j.1"]),
        _task("j.3", params={"cmd": "true"}),
    ):
        store.put("tasks", rows.task_row(task))
    assert store.flush(10)
    jobs, tasks = recovery.load_unfinished(store.cursor())
    stored = store.cursor().execute("select task_id, state, error from tasks order by task_id").fetchall()
    store.close()
    by_id = {t.task_id: t for t in tasks}
    assert by_id["j.0"].state is TaskState.FAILED and by_id["j.0"].error == recovery.ENV_LOST_ERROR
    assert "resubmit the job" in recovery.ENV_LOST_ERROR
    assert [by_id[i].state for i in ("j.1", "j.2", "j.3")] == [
        TaskState.CANCELLED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
    ]
    assert jobs[0].unfinished == 1
    assert stored == [
        ("j.0", "failed", recovery.ENV_LOST_ERROR),
        ("j.1", "cancelled", "dependency 'j.0' failed"),
        ("j.2", "cancelled", "dependency 'j.1' cancelled"),
        ("j.3", "queued", None),
    ]


# One transaction per batch, and the rows DuckDB refuses.


def _attempt_row(task_id: str, result: dict | None = None) -> tuple:
    return (task_id, 1, "w1", 1.7e9, 1.7e9, 1.7e9 + 1, "succeeded", False, result, None)


def _refusing(path, task_ids: tuple[str, ...]) -> None:
    """The schema, with a CHECK on attempts that refuses these tasks' rows: a fault injected
    from outside, as a real refusal would come (SCHEMA creates tables only if missing)."""
    refuse = ", ".join(f"'{t}'" for t in task_ids)
    schema = SCHEMA.replace(
        "PRIMARY KEY (task_id, attempt)", f"PRIMARY KEY (task_id, attempt), CHECK (task_id NOT IN ({refuse}))"
    )
    con = duckdb.connect(str(path))
    con.execute(schema)
    con.close()


def test_a_batch_is_one_transaction_across_tables(tmp_path):
    """The tasks rows of a batch are not visible before its attempts rows are written too:
    a crash between the two leaves neither, so recovery never reads a task without its attempts."""
    store = Store(tmp_path / "r.duckdb", flush_interval=0.05)
    reader = store.cursor()
    seen: list[int] = []
    write_table = store._write_table

    def spying(table: str, batch_rows: list[tuple]) -> None:
        if table == "attempts":  # written after tasks in the same batch (dicts keep put order)
            seen.append(reader.execute("select count(*) from tasks").fetchone()[0])
        write_table(table, batch_rows)

    store._write_table = spying
    store.put("tasks", rows.task_row(_task("j.0")))
    store.put("attempts", _attempt_row("j.0"))
    assert store.flush(10)
    assert seen == [0]  # uncommitted while attempts were being written
    assert reader.execute("select count(*) from tasks").fetchone()[0] == 1
    assert reader.execute("select count(*) from attempts").fetchone()[0] == 1
    store.close()


def test_a_refused_row_is_isolated_by_bisection_and_reported_with_the_mark(tmp_path, caplog):
    path = tmp_path / "r.duckdb"
    _refusing(path, ("j.5", "j.40"))
    store = Store(path, flush_interval=10)  # one batch: only flush() wakes the writer
    commits = 0
    commit = store._commit

    def counting(tables: dict) -> None:
        nonlocal commits
        commits += 1
        commit(tables)

    store._commit = counting
    secret = {"token": "s3cret-value"}
    with caplog.at_level(logging.WARNING, logger="dtf_bus.store.db"):
        for i in range(64):
            store.put("tasks", rows.task_row(_task(f"j.{i}", params=secret)))
            store.put("attempts", _attempt_row(f"j.{i}", {"out": "s3cret-value"}))
        seq = store.mark()
        assert store.flush(10)
    durable, refused = store.durable()
    con = store.cursor()
    tasks = {r[0] for r in con.execute("select task_id from tasks").fetchall()}
    attempts = {r[0] for r in con.execute("select task_id from attempts").fetchall()}
    store.close()
    assert durable >= seq
    assert [(f.table, f.key) for f in refused] == [("attempts", ("j.40", 1)), ("attempts", ("j.5", 1))]
    assert all("CHECK constraint failed" in f.error for f in refused)
    assert store.durable()[1] == []  # each refusal is handed over once
    assert tasks == {f"j.{i}" for i in range(64)}
    assert attempts == tasks - {"j.5", "j.40"}
    # 128 rows, 2 refused: the failed batch, then a few dozen halves, not 128 single-row tries.
    assert commits < 40, commits
    assert store.rows_written == 126
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "store: dropped a row of attempts (j.40, 1) that cannot be stored: " + refused[0].error,
        "store: dropped a row of attempts (j.5, 1) that cannot be stored: " + refused[1].error,
    ]
    assert "s3cret" not in caplog.text


def test_a_refusal_notifies_the_broker_even_without_a_mark(tmp_path):
    path = tmp_path / "r.duckdb"
    _refusing(path, ("j.0",))
    store = Store(path, flush_interval=0.05)
    store.put("attempts", _attempt_row("j.0"))
    readable = select.select([store.notify_fd], [], [], 10)[0]
    store.drain_notify()
    durable, refused = store.durable()
    store.close()
    assert readable and durable == 0
    assert [(f.table, f.key) for f in refused] == [("attempts", ("j.0", 1))]


def test_the_buffer_pool_is_bounded(tmp_path):
    store = Store(tmp_path / "r.duckdb", memory_limit="64MB")
    limit = store.cursor().execute("select current_setting('memory_limit')").fetchone()[0]
    store.close()
    assert limit == "61.0 MiB"  # 64 MB, as DuckDB shows it
    with pytest.raises(ValueError, match="not a size"):
        Store(tmp_path / "other.duckdb", memory_limit="64MB'; DROP TABLE tasks; --")


def test_an_invalidated_database_reports_the_batch_at_once(tmp_path, caplog):
    """A fatal error (disk full, I/O) invalidates the database: no half could be written, so
    the batch is reported whole after one try, not bisected into a storm of single rows."""
    store = Store(tmp_path / "r.duckdb", flush_interval=10)
    tries = 0

    def broken(table: str, batch_rows: list[tuple]) -> None:
        nonlocal tries
        tries += 1
        raise duckdb.FatalException("FATAL Error: database has been invalidated")

    store._write_table = broken
    with caplog.at_level(logging.WARNING, logger="dtf_bus.store.db"):
        for i in range(100):
            store.put("attempts", _attempt_row(f"j.{i}"))
        assert store.flush(10)
    refused = store.durable()[1]
    store._write_table = lambda table, batch_rows: None
    store.close()
    assert sorted(f.key for f in refused) == sorted((f"j.{i}", 1) for i in range(100))
    assert tries == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "store: the database failed (FatalException: FATAL Error: database has been invalidated); 100 rows not stored"
    ]


def test_a_memory_limit_that_is_no_size_is_a_usage_error(tmp_path, capsys):
    from dtf_bus.broker import app as broker_cli

    assert broker_cli.main(["--db", str(tmp_path / "r.duckdb"), "--db-memory-limit", "lots"]) == 2
    assert "db_memory_limit must be a size such as 512MB or 2GB, got 'lots'" in capsys.readouterr().err
    assert not (tmp_path / "r.duckdb").exists()  # refused before anything opened
