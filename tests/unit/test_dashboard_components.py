"""The dashboard's components as pure logic: events in, ColumnDataSource contents out."""

from __future__ import annotations

import pytest

from dtf_dashboard.anomalies import AnomalyList
from dtf_dashboard.blocked import BlockedList
from dtf_dashboard.summary import Summary
from dtf_dashboard.task_stream import MAX_LABELLED_ROWS, TaskStream
from dtf_dashboard.workers import WorkerTable

pytestmark = pytest.mark.unit


def task(event: str, task_id: str, ts: float, worker: str = "w1", name: str = "unit[0]") -> tuple:
    return (0, "events.task", {"event": event, "task_id": task_id, "worker_id": worker, "name": name, "ts": ts})


def test_summary_counts_events_on_top_of_the_last_snapshot():
    s = Summary("tcp://b", None)
    s.update([(1, "metrics.system", {"ts": 1.0, "succeeded": 5, "running": 2, "queued": 3, "workers_total": 2})])
    s.update([task("assigned", "t1", 2.0), task("running", "t1", 2.0), task("succeeded", "t0", 2.1)])
    assert (s.value("succeeded"), s.value("running"), s.value("queued")) == (6, 2, 2)
    assert 'data-metric="succeeded">6<' in s.div.text
    s.update([(2, "metrics.system", {"ts": 3.0, "succeeded": 6, "running": 2, "queued": 2, "workers_total": 2})])
    assert s.value("succeeded") == 6  # the snapshot replaces the counted deltas


def test_task_stream_draws_a_bar_per_finished_task_per_worker():
    ts = TaskStream(rollover=3)
    ts.update([task("running", "a", 10.0, "w1"), task("running", "b", 10.5, "w2", "gpu[0]")])
    ts.update([task("succeeded", "a", 11.0, "w1"), task("failed", "b", 12.0, "w2", "gpu[0]")])
    data = ts.source.data
    assert data["worker"] == ["w1", "w2"] and data["y"] == [0, 1] and data["state"] == ["succeeded", "failed"]
    assert data["duration"] == [1.0, 1.5] and data["colour"][1] == "#d62728"
    for i in range(5):  # rollover keeps the page bounded
        ts.update([task("running", f"r{i}", 20.0 + i), task("succeeded", f"r{i}", 20.5 + i)])
    assert len(ts.source.data["start"]) == 3


def test_task_stream_draws_a_task_never_seen_running_from_its_final_event():
    ts = TaskStream()
    quick = task("succeeded", "q", 5.25, "w3")
    quick[2]["started_at"] = 5.0  # ended before the worker reported its start
    ts.update([quick, task("succeeded", "unknown", 6.0, "w3")])  # no start known: no bar
    data = ts.source.data
    assert data["worker"] == ["w3"] and data["duration"] == [0.25]


def test_task_stream_stops_labelling_rows_when_they_would_overlap():
    ts = TaskStream()
    for i in range(MAX_LABELLED_ROWS + 5):
        ts.update([task("running", f"t{i}", 1.0, f"w{i}"), task("succeeded", f"t{i}", 2.0, f"w{i}")])
    assert ts.ticker.ticks == [] and len(ts.rows) == MAX_LABELLED_ROWS + 5


def test_worker_table_handles_hundreds_of_workers_grouped_and_in_natural_order():
    table = WorkerTable()
    workers = {
        f"w{i}": {
            "worker_id": f"w{i}",
            "status": "busy" if i % 2 else "idle",
            "profile": "cuda" if i < 50 else "cpu-small",
            "hardware": ["cpu", "cuda"] if i < 50 else ["cpu"],
            "slots": 2,
            "running": i % 2,
            "cpu_percent": 50.0,
            "memory_percent": 10.0,
            "gpu_percent": None,
            "score": 80.0,
            "completed": 1,
            "failed": 0,
        }
        for i in range(250)
    }
    table.update(workers, force=True)
    assert table.source.data["worker_id"][:3] == ["w0", "w1", "w2"] and len(table.source.data["worker_id"]) == 250
    groups = dict(zip(table.groups.data["group"], table.groups.data["workers"], strict=True))
    assert groups == {"cpu-small": 200, "cuda": 50}
    assert "250 (125 busy) in 2 group(s)" in table.title.text
    assert not table.table.view.tags  # a new number of rows redraws the table by itself: no second redraw
    table.update(workers, force=True)
    assert table.table.view.tags == [1]  # the same rows with new values: the browser is told to redraw them


def test_anomaly_list_shows_newest_first():
    backfill = [{"ts": 1.0, "type": "queue_wait", "severity": "warning", "subject": "queue", "explanation": "x"}]
    a = AnomalyList(backfill)
    a.update([(0, "anomaly", {"ts": 2.0, "type": "slow_task", "severity": "critical", "subject": "w1",
                              "explanation": "y"})])  # fmt: skip
    assert a.source.data["type"] == ["slow_task", "queue_wait"]


def test_blocked_panel_shows_reasons_and_hides_when_placeable():
    panel = BlockedList({"blocked_reasons": []})
    assert not panel.div.visible
    block = {"requirement": "plugin=shel", "tasks": 3, "reasons": ["plugin=shel: no live worker has it"]}
    panel.update([(1, "metrics.system", {"blocked": 3, "blocked_reasons": [block]})])
    assert panel.div.visible and 'data-metric="blocked">3<' in panel.div.text
    assert "plugin=shel: no live worker has it" in panel.div.text
    panel.update([(2, "metrics.system", {"blocked": 0, "blocked_reasons": []})])
    assert not panel.div.visible


def test_summary_says_blocked_instead_of_the_oldest_wait():
    s = Summary("tcp://b", None)
    s.update([(1, "metrics.system", {"ts": 1.0, "queued": 4, "blocked": 3, "queue_oldest_wait": 9.0})])
    assert "3 blocked" in s.div.text and "oldest" not in s.div.text
