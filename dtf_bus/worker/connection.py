"""The worker's link to the broker: one DEALER at a time, its heartbeat clock and its outbox.

Following the zguide's Paranoid Pirate worker: a heartbeat goes out every interval, and a
broker silent for liveness x interval means the socket is dropped and, after a doubling
back-off, opened anew. What a connection carries is the state machine's business
(:mod:`dtf_bus.worker.state`); this module only moves frames.

A send never blocks the loop: what the connection cannot take yet (its high-water mark) is
held in order and sent as soon as it can. A result or STEAL_ACK dropped on a live connection
was never sent again (a task stayed assigned to an idle worker: the soak's second hang), so
only heartbeats are dropped: the next one will do.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import zmq

from dtf_bus import defaults, protocol
from dtf_bus.security import curve as security

log = logging.getLogger("dtf.worker")


class Backoff:
    """Reconnect delays: ``initial`` doubling to ``maximum``; afresh after a served connection."""

    def __init__(self, initial: float = defaults.RECONNECT_INITIAL, maximum: float = defaults.RECONNECT_MAX) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial

    def reset(self) -> None:
        self.delay = self.initial

    def next(self) -> float:
        """The delay to wait now; the one after it doubles."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay


class Connection:
    """One DEALER to ``endpoint`` at a time (``open``/``close``), CURVE if ``curve`` is given."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: security.ClientCurve | None = None) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.curve = curve  # CURVE keys (dtf_bus.security.curve), or None for plaintext
        self.socket: Any = None  # a zmq DEALER while open (a stand-in in unit tests)
        self.outbox: collections.deque[bytes] = collections.deque()  # frames the connection could not take yet
        self.broker_seen = 0.0  # monotonic: last time anything arrived
        self.heartbeat_due = 0.0

    # -------------------------------------------------------------- lifecycle

    def open(self, now: float, interval: float) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            security.make_client(sock, self.curve)
        sock.connect(self.endpoint)
        self.socket = sock
        self.broker_seen = now
        self.heartbeat_due = now + interval
        return sock

    def close(self, linger: int = 0) -> None:
        if self.socket is not None:
            self.socket.close(linger=linger)
            self.socket = None
        self.outbox.clear()  # a new connection registers afresh and re-sends what is unacknowledged

    @property
    def is_open(self) -> bool:
        return self.socket is not None

    # ------------------------------------------------------------------ timing

    def heard(self, now: float) -> None:
        self.broker_seen = now

    def beat_due(self, now: float, interval: float) -> bool:
        """Whether a heartbeat is due now (then the next one is one interval away)."""
        if now < self.heartbeat_due:
            return False
        self.heartbeat_due = now + interval
        return True

    def silent(self, now: float, interval: float, liveness: int) -> bool:
        """The broker said nothing for liveness x interval: drop this connection."""
        return now - self.broker_seen > interval * liveness

    def poll_timeout(self, wait: float) -> float:
        """Seconds to poll: shorter while frames are held, to offer them again soon."""
        return min(wait, defaults.WORKER_OUTBOX_RETRY) if self.outbox else wait

    # ------------------------------------------------------------------ frames

    def receive(self) -> list[tuple[str, dict[str, Any]]]:
        """Every message waiting, decoded; a malformed one is logged and skipped."""
        messages = []
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return messages
            try:
                messages.append(protocol.decode(frame))
            except protocol.ProtocolError as exc:
                log.warning("malformed message from broker: %s", exc)

    def send(self, kind: str, body: dict[str, Any]) -> None:
        """Send a message; a TASK_RESULT is halved until each part fits the broker's limit."""
        frame = protocol.encode(kind, body)
        results = body.get("results") if kind == protocol.TASK_RESULT else None
        if results is not None and len(frame) > defaults.MAX_MESSAGE_BYTES // 2 and len(results) > 1:
            half = len(results) // 2
            self.send(kind, {**body, "results": results[:half]})
            self.send(kind, {**body, "results": results[half:]})
            return
        self.send_frame(kind, frame)

    def send_frame(self, kind: str, frame: bytes) -> None:
        """Send, or keep in order behind what the connection could not take yet (heartbeats
        excepted: dropped). Without a connection nothing is sent: a new one re-registers."""
        if self.socket is None:
            return
        if not self.outbox and self._try_send(frame):
            return
        if kind == protocol.HEARTBEAT:
            return
        if not self.outbox:
            log.warning("send queue to the broker full: holding messages until it reads them")
        self.outbox.append(frame)

    def flush(self) -> None:
        """Offer the held frames again, oldest first, as far as the connection takes them."""
        while self.outbox and self._try_send(self.outbox[0]):
            self.outbox.popleft()

    def _try_send(self, frame: bytes) -> bool:
        try:
            self.socket.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
