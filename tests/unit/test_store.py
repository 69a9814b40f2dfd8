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
