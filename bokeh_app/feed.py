"""The dashboard's one connection to the broker's PUB channel, shared by every browser session.

A SUB socket on a daemon thread receives every event and metrics frame into a bounded buffer
(and keeps the latest system and per-worker metrics). Sessions never touch the socket: each
one asks :meth:`Feed.since` for what arrived after its last look, on a periodic tick and when
the feed tells it there is news (:meth:`Feed.listen`: a batch with anything but per-worker
metrics, which only the worker table shows, once a second). A session that falls more than
the buffer behind skips ahead instead of growing memory.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from dtf_bus import defaults, events
from dtf_bus.security import curve as security

log = logging.getLogger("dtf.dashboard")

Event = tuple[int, str, dict[str, Any]]  # (sequence number, topic, payload)
QUIET = "metrics.worker."  # topics that are no news: the worker table reads them on its own tick


class Feed:
    def __init__(self, endpoint: str, buffer: int = defaults.DASHBOARD_EVENT_BUFFER) -> None:
        self.endpoint = endpoint
        self._events: deque[Event] = deque(maxlen=buffer)
        self._seq = 0
        self._lock = threading.Lock()
        self.system: dict[str, Any] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self.received = 0
        self.last_received = 0.0
        self._listeners: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dtf-dashboard-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:  # a broker with CURVE: keys from $DTF_CURVE_SECRET and $DTF_BROKER_KEY
            curve = security.resolve_client_curve()
        except security.SecurityError as exc:
            log.error("dashboard feed: %s", exc)
            curve = None
        if curve is not None:
            security.make_client(sub, curve)
        sub.connect(self.endpoint)
        log.info("dashboard feed subscribed to %s", self.endpoint)
        try:
            self._receive(sub)
        finally:
            sub.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (within its one-second poll) and close its socket (tests)."""
        self._stopping.set()
        self._thread.join(timeout)

    def _receive(self, sub: zmq.Socket) -> None:
        while not self._stopping.is_set():
            if not sub.poll(1000):
                continue
            batch = []
            for _ in range(5000):
                try:
                    batch.append(events.decode(sub.recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    break
                except Exception:
                    log.exception("undecodable frame on the events channel")
            with self._lock:
                for topic, payload in batch:
                    self._seq += 1
                    self._events.append((self._seq, topic, payload))
                    if topic == "metrics.system":
                        self.system = payload
                    elif topic.startswith("metrics.worker."):
                        self._workers[payload["worker_id"]] = payload
                    elif topic == "events.worker" and payload.get("event") in ("dead", "left"):
                        self._workers.pop(payload.get("worker_id"), None)
                self.received += len(batch)
                self.last_received = time.time()
                listeners = list(self._listeners)
            if listeners and any(not topic.startswith(QUIET) for topic, _ in batch):
                for listener in listeners:
                    try:
                        listener()
                    except Exception:  # one session's failure must not stop the feed
                        log.exception("dashboard feed: a listener failed")

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the feed's thread after each batch with news in it."""
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def seq(self) -> int:
        return self._seq

    def since(self, seq: int) -> tuple[int, list[Event]]:
        """Events after ``seq`` (all still buffered ones if it fell behind), and the new position."""
        with self._lock:
            if not self._events or self._events[-1][0] <= seq:
                return seq, []
            start = max(seq + 1 - self._events[0][0], 0)
            items = list(itertools.islice(self._events, start, None))
        return items[-1][0], items

    def workers(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._workers)


_feeds: dict[str, Feed] = {}
_feeds_lock = threading.Lock()


def shared(endpoint: str) -> Feed:
    """The process-wide feed for ``endpoint`` (sessions of one server share one socket)."""
    with _feeds_lock:
        feed = _feeds.get(endpoint)
        if feed is None:
            feed = _feeds[endpoint] = Feed(endpoint)
        return feed
