"""The monitor hook as pure logic: events fed by hand, no broker."""

from __future__ import annotations

import pytest

from dtf_bus.monitor.monitor import Monitor
from dtf_bus.task import Task, TaskState

pytestmark = pytest.mark.unit


def test_the_monitor_serves_a_task_as_it_was_at_its_last_event():
    """The API's threads read tuples taken on the broker's thread, never the live Task the loop
    goes on changing (a view built from it mid-change mixed two states)."""
    monitor = Monitor()
    task = Task("j.0", "j", "t", "sim", {}, {}, 0, None, 0, 0)
    monitor.on_task_state(None, task)
    task.state, task.worker_id, task.attempt = TaskState.ASSIGNED, "w1", 1  # the loop mid-change
    assert monitor.task("j.0")["state"] == "queued" and monitor.task("j.0")["worker_id"] is None
    monitor.on_task_state(None, task)
    assert monitor.task("j.0")["state"] == "assigned" and monitor.task("j.0")["worker_id"] == "w1"
