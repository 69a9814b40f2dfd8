"""The slot threads: whatever a plugin does, its attempt ends with a result and frees its slot."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from dtf_bus.plugins import TaskFailed
from dtf_bus.testing.cluster import wait_for
from dtf_bus.worker.events import Running
from dtf_bus.worker.runner import Runner

pytestmark = pytest.mark.unit


class Plugin:
    def __init__(self, behaviour) -> None:
        self.name = "fake"
        self.behaviour = behaviour

    def run(self, ctx):
        return self.behaviour(ctx)


class Direct:
    """Runs the executor in place (no shipped tree)."""

    def run(self, executor, ctx, plugin):
        return executor.run(ctx)


def boom(ctx):
    raise RuntimeError("bang")


def fails(ctx):
    raise TaskFailed("2 tests failed", result={"failed": 2})


def waits_for_cancel(ctx):
    ctx.cancelled.wait(5)
    return {"stopped": True}


BEHAVIOURS = {
    "ok": lambda ctx: {"x": 1},
    "scalar": lambda ctx: 42,
    "boom": boom,
    "fails": fails,
    "unpackable": lambda ctx: {"s": {1, 2}},
    "waits": waits_for_cancel,
    "progress": lambda ctx: ctx.report_progress({"step": 1}) or {},
}


@pytest.fixture
def runner():
    done: queue.SimpleQueue = queue.SimpleQueue()
    progress: list = []
    executors = {name: Plugin(b) for name, b in BEHAVIOURS.items()}
    r = Runner(2, "w1", {}, executors, Direct(), lambda run, report: done.put(report), lambda *a: progress.append(a))
    r.start()
    r.done, r.progress_seen = done, progress
    yield r
    r.stop(time.monotonic() + 5)


def attempt(plugin: str, task_id: str = "t", timeout: float | None = None) -> Running:
    return Running(task_id, 1, plugin, {}, timeout, started_at=100.0, deadline=None, report_at=None)


@pytest.mark.parametrize(
    ("plugin", "outcome", "result", "error"),
    [
        ("ok", "succeeded", {"x": 1}, None),
        ("scalar", "succeeded", {"value": 42}, None),
        ("fails", "failed", {"failed": 2}, "2 tests failed"),
        ("boom", "crashed", None, "RuntimeError: bang"),
        ("unpackable", "crashed", None, "result not deliverable: cannot be packed"),
        ("missing", "failed", None, "plugin 'missing' is not loaded on worker w1"),
    ],
)
def test_every_attempt_ends_with_a_result(runner, plugin, outcome, result, error):
    runner.submit(attempt(plugin))
    report = runner.done.get(timeout=5)
    assert (report["task_id"], report["attempt"], report["outcome"], report["result"]) == ("t", 1, outcome, result)
    assert (report["error"] or "").startswith(error or "") and report["started_at"] == 100.0


@pytest.mark.parametrize(
    ("reason", "outcome", "error"),
    [("timeout", "timed_out", "timed out after 3s"), ("cancelled", "cancelled", "cancelled")],
)
def test_a_cancelled_attempt_says_why_whatever_the_plugin_returned(runner, reason, outcome, error):
    runner.submit(attempt("waits", timeout=3))
    runner.cancel("t", 1, reason)
    report = runner.done.get(timeout=5)
    assert (report["outcome"], report["error"]) == (outcome, error)


def test_slots_run_side_by_side_and_progress_is_handed_on(runner):
    runner.submit(attempt("waits", "a"))
    runner.submit(attempt("progress", "b"))  # the second slot: not behind "a"
    assert runner.done.get(timeout=5)["task_id"] == "b"
    assert runner.progress_seen == [("b", 1, {"step": 1})]
    runner.cancel("a", 1, "cancelled")
    assert runner.done.get(timeout=5)["task_id"] == "a"


def test_a_slot_lives_on_when_handing_a_result_over_fails():
    handed = []

    def finished(run, report):
        handed.append(run.task_id)
        if run.task_id == "first":
            raise RuntimeError("a bug in the caller")

    r = Runner(1, "w1", {}, {"ok": Plugin(BEHAVIOURS["ok"])}, Direct(), finished, lambda *a: None)
    r.start()
    r.submit(attempt("ok", "first"))
    r.submit(attempt("ok", "second"))
    wait_for(lambda: len(handed) == 2, 5, "the one slot thread to run the second attempt too")
    r.stop(time.monotonic() + 5)
    assert handed == ["first", "second"]


def test_stop_waits_for_running_attempts_and_starts_nothing_more():
    started = threading.Event()

    def slow(ctx):
        started.set()
        ctx.cancelled.wait(0.3)
        return {}

    reports = []
    r = Runner(1, "w1", {}, {"slow": Plugin(slow)}, Direct(), lambda run, rep: reports.append(rep), lambda *a: None)
    r.start()
    r.submit(attempt("slow", "a"))
    started.wait(5)
    r.submit(attempt("slow", "b"))  # queued behind "a": never begun
    r.stop(time.monotonic() + 5)
    assert [rep["task_id"] for rep in reports] == ["a"]
