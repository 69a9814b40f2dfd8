"""The batched DuckDB writer, against a real DuckDB file."""

import duckdb
import pytest

from dtf_bus.store import Store

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
        json_columns=frozenset({"extra"}),
        timestamp_columns=frozenset({"ts"}),
    )
    for i in range(3):
        store.put("samples", (1.7e9 + i, "cpu", float(i), {"i": i}))
    assert store.flush(10)
    assert store.cursor().execute("select count(*), sum(value) from samples").fetchone() == (3, 3.0)
    store.close()
