"""The worker's bookkeeping of assigned attempts (no broker: messages handed to the handlers)."""

from __future__ import annotations

import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.worker.worker import Worker

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


class FullSocket:
    """A DEALER whose connection takes nothing until ``room`` is set (its high-water mark)."""

    def __init__(self) -> None:
        self.room = 0
        self.sent: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        if self.room <= 0:
            raise zmq.Again()
        self.room -= 1
        self.sent.append(frame)


def test_a_full_connection_holds_results_and_steal_acks_in_order_and_drops_only_heartbeats():
    """A result or STEAL_ACK dropped on a live connection was never sent again: the soak's hang
    (33 tasks assigned to an idle worker whose results had been dropped)."""
    worker = idle_worker()
    worker._socket = sock = FullSocket()
    result = {"task_id": "a", "attempt": 1, "outcome": "succeeded", "started_at": 1.0, "ended_at": 2.0}
    worker._send(protocol.TASK_RESULT, {"results": [result]})
    worker._send(protocol.HEARTBEAT, {})
    worker._send(protocol.STEAL_ACK, {"task_id": "b", "attempt": 1, "ok": True})
    assert sock.sent == [] and len(worker._outbox) == 2
    sock.room = 5
    worker._send(protocol.HEARTBEAT, {})  # never ahead of the held ones: dropped while they wait
    assert sock.sent == []
    worker._flush_outbox()
    assert [protocol.decode(f)[0] for f in sock.sent] == [protocol.TASK_RESULT, protocol.STEAL_ACK]
    assert not worker._outbox
