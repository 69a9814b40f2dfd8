"""The worker's connection: what a full DEALER cannot take is held in order, heartbeats aside."""

from __future__ import annotations

import pytest
import zmq

from dtf_bus import defaults, protocol
from dtf_bus.worker.connection import Backoff, Connection

pytestmark = pytest.mark.unit

RESULT = {"task_id": "a", "attempt": 1, "outcome": "succeeded", "started_at": 1.0, "ended_at": 2.0}


class FullSocket:
    """A DEALER whose connection takes ``room`` more frames (its high-water mark), then none."""

    def __init__(self, room: int = 0) -> None:
        self.room = room
        self.sent: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        if self.room <= 0:
            raise zmq.Again()
        self.room -= 1
        self.sent.append(frame)

    def close(self, linger: int = 0) -> None:
        pass


def connection(room: int = 0) -> Connection:
    conn = Connection(None, "tcp://127.0.0.1:1")  # never connects: only its sending is under test
    conn.socket = FullSocket(room)
    return conn


def kinds(frames: list[bytes]) -> list[str]:
    return [protocol.decode(f)[0] for f in frames]


MESSAGES = {
    protocol.TASK_RESULT: {"results": [RESULT]},
    protocol.STEAL_ACK: {"task_id": "b", "attempt": 1, "ok": True},
    protocol.TASK_STARTED: {"task_id": "c", "attempt": 1, "started_at": 1.0},
    protocol.HEARTBEAT: {},
    protocol.DRAIN: {"reason": "SIGTERM"},
}


@pytest.mark.parametrize("room", [0, 1, 2])
@pytest.mark.parametrize(
    "sequence",
    [
        [protocol.TASK_RESULT, protocol.HEARTBEAT, protocol.STEAL_ACK],
        [protocol.HEARTBEAT, protocol.TASK_STARTED, protocol.HEARTBEAT, protocol.TASK_RESULT, protocol.DRAIN],
        [protocol.STEAL_ACK, protocol.TASK_RESULT, protocol.HEARTBEAT],
    ],
)
def test_a_full_connection_keeps_order_and_drops_only_heartbeats(sequence, room):
    """A result or STEAL_ACK dropped on a live connection was never sent again: the soak's hang
    (33 tasks assigned to an idle worker whose results had been dropped)."""
    conn = connection(room)
    for kind in sequence:
        conn.send(kind, MESSAGES[kind])
    conn.socket.room = 100
    conn.send(protocol.HEARTBEAT, {})  # never ahead of held frames: dropped while they wait
    conn.flush()
    sent = kinds(conn.socket.sent)
    # What fit went at once (heartbeats too); after that, everything but heartbeats, in order;
    # the last heartbeat only when nothing was held before it.
    held = [k for k in sequence[room:] if k != protocol.HEARTBEAT]
    assert sent == sequence[:room] + held + ([] if held else [protocol.HEARTBEAT])
    assert not conn.outbox


def test_a_flush_sends_as_much_as_the_connection_takes_and_holds_the_rest():
    conn = connection()
    for i in range(3):
        conn.send(protocol.TASK_RESULT, {"results": [{**RESULT, "task_id": str(i)}]})
    conn.socket.room = 2
    conn.flush()
    assert len(conn.socket.sent) == 2 and len(conn.outbox) == 1
    assert conn.poll_timeout(5.0) == defaults.WORKER_OUTBOX_RETRY  # offered again soon


def test_without_a_socket_nothing_is_sent_or_held():
    conn = connection()
    conn.socket = None
    conn.send(protocol.TASK_RESULT, {"results": [RESULT]})
    assert not conn.outbox and conn.poll_timeout(5.0) == 5.0


def test_closing_forgets_what_was_held():
    conn = connection()
    conn.send(protocol.TASK_RESULT, {"results": [RESULT]})
    conn.close()
    assert not conn.outbox and not conn.is_open  # the next connection registers and re-sends


@pytest.mark.parametrize(("count", "frames"), [(1, 1), (2, 1), (3, 2), (5, 3)])
def test_a_result_batch_is_halved_until_it_fits_the_message_limit(count, frames):
    conn = connection(room=100)
    blob = "x" * (defaults.MAX_MESSAGE_BYTES // 5)  # two fit half a message, three do not
    results = [{**RESULT, "task_id": f"j.{i}", "result": {"log": blob}} for i in range(count)]
    conn.send(protocol.TASK_RESULT, {"results": results})
    sent = conn.socket.sent
    assert len(sent) == frames and all(len(f) <= defaults.MAX_MESSAGE_BYTES // 2 for f in sent)
    assert [r["task_id"] for f in sent for r in protocol.decode(f)[1]["results"]] == [f"j.{i}" for i in range(count)]


def test_heartbeat_timing_and_broker_silence():
    conn = connection()
    conn.heartbeat_due = 1.0
    assert not conn.beat_due(0.9, 1.0)
    assert conn.beat_due(1.0, 1.0) and conn.heartbeat_due == 2.0
    conn.heard(10.0)
    assert not conn.silent(13.0, 1.0, 3) and conn.silent(13.01, 1.0, 3)


def test_backoff_doubles_to_its_maximum_and_starts_afresh_when_reset():
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.25
