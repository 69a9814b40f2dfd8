"""The worker's bookkeeping of assigned attempts (no broker: messages handed to the handlers)."""

from __future__ import annotations

import pytest

from dtf_bus.worker import Worker

pytestmark = pytest.mark.unit


def idle_worker() -> Worker:
    worker = Worker("tcp://127.0.0.1:1", "w1", executors={}, capabilities={"hardware": ["cpu"]}, slots=1)
    worker._task_threads = worker.slots  # no task thread starts: what is pending stays pending
    return worker


def assign(worker: Worker, attempt: int) -> None:
    worker._on_assign({"tasks": [{"task_id": "j.1", "attempt": attempt, "plugin": "sim", "params": {}}]})


def test_a_newer_attempt_replaces_an_older_pending_one_and_survives_its_cancel():
    """Attempt 2 arriving while attempt 1 still waited here used to be dropped as a duplicate;
    attempt 1's CANCEL then left the task assigned to this worker and never run."""
    worker = idle_worker()
    assign(worker, 1)
    assign(worker, 2)
    worker._on_cancel({"task_id": "j.1", "attempt": 1, "reason": "superseded"})
    assert worker.pending["j.1"]["attempt"] == 2


def test_a_repeated_or_older_delivery_is_ignored():
    worker = idle_worker()
    assign(worker, 2)
    assign(worker, 2)
    assign(worker, 1)
    assert worker.pending["j.1"]["attempt"] == 2 and len(worker.pending) == 1
