"""A worker fetches a shipped archive from the broker: chunked, resumable, verified.

The fetch runs on the task's thread with a DEALER socket of its own (the worker's socket
belongs to its main loop, whose heartbeats must never wait for a download). It keeps a window
of SHIP_FETCH_WINDOW chunk requests in flight and writes chunks in order to a partial file.
A request unanswered for SHIP_FETCH_TIMEOUT seconds drops the connection; the next one
continues from the chunks already on disk (:class:`Download` is that bookkeeping, without
I/O of its own). Nothing is used before the whole file's sha256 is the name asked for.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from dtf_bus import defaults, protocol
from dtf_bus.security import curve as security
from dtf_bus.ship import archive as ship
from dtf_bus.ship.archive import ShipError

_POLL = 0.1  # seconds between looks at the task's cancel flag while waiting for a chunk


@dataclass
class Download:
    """Which chunks to ask for next, given what is on disk and what is in flight."""

    path: Path
    size: int | None = None  # known from the first reply
    chunk: int = defaults.SHIP_CHUNK_BYTES
    in_flight: set[int] = field(default_factory=set)
    offset: int = 0
    sha: Any = field(default_factory=hashlib.sha256)  # of what is on disk, kept up as chunks come

    def __post_init__(self) -> None:
        if self.path.exists():  # resume what is there
            with self.path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    self.sha.update(block)
                    self.offset += len(block)

    @property
    def done(self) -> bool:
        return self.size is not None and self.offset >= self.size

    def wanted(self, window: int) -> list[int]:
        """Offsets to request now: the next ones not on disk nor asked for, up to ``window``
        in flight (one until the size is known)."""
        if self.done:
            return []
        if self.size is None:
            return [] if self.in_flight else [self.offset]
        ahead = max(self.in_flight, default=self.offset - self.chunk) + self.chunk
        out: list[int] = []
        while len(self.in_flight) + len(out) < window and ahead < self.size:
            out.append(ahead)
            ahead += self.chunk
        if not self.in_flight and not out:
            out.append(self.offset)
        return out

    def received(self, offset: int, data: bytes, size: int) -> bool:
        """A chunk arrived; written when it is the next one (True). Replies on one connection
        come in order, so anything else is a stale answer to a request given up on."""
        self.in_flight.discard(offset)
        if self.size is not None and size != self.size:
            raise ShipError(f"the broker's archive changed size while it was fetched ({self.size} -> {size})")
        self.size = size
        if offset != self.offset or (not data and offset < size):
            return False
        with self.path.open("ab") as fh:
            fh.write(data)
        self.sha.update(data)
        self.offset += len(data)
        return True

    def lost_connection(self) -> None:
        """Requests in flight will never be answered; ask again from what is on disk."""
        self.in_flight.clear()


class Fetcher:
    """Fetches archives by hash from the broker for one worker (one socket per fetch)."""

    def __init__(
        self,
        broker: str,
        worker_id: str,
        curve: security.ClientCurve | None = None,
        timeout: float = defaults.SHIP_FETCH_TIMEOUT,
        patience: float = defaults.SHIP_FETCH_PATIENCE,
    ) -> None:
        self.broker = broker
        self.timeout = timeout  # unanswered this long: reconnect and resume
        self.patience = patience  # no progress this long: give up
        self.worker_id = worker_id
        self.curve = curve
        self._ctx = zmq.Context.instance()
        self._req = itertools.count(1)

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            security.make_client(sock, self.curve)
        sock.connect(self.broker)
        return sock

    def fetch(self, hexdigest: str, path: Path, cancelled: threading.Event) -> dict[str, Any]:
        """Bring the archive ``hexdigest`` to ``path`` (continuing a partial file there) and
        check it; returns what it took: bytes, chunks, reconnects, seconds (fetch_s)."""
        started = time.monotonic()
        download = Download(path)
        resumed = download.offset
        stats = {"fetched_bytes": 0, "chunks": 0, "reconnects": 0, "resumed_at": resumed}
        code = ship.ref(hexdigest)
        sock = self._connect()
        pending: dict[int, int] = {}  # req -> offset
        progress_at = time.monotonic()
        asked_at = time.monotonic()
        try:
            while not download.done:
                if cancelled.is_set():
                    raise ShipError(f"fetching {ship.short(hexdigest)} was cancelled")
                for offset in download.wanted(defaults.SHIP_FETCH_WINDOW):
                    req = next(self._req)
                    body = {"req": req, "code": code, "offset": offset, "worker_id": self.worker_id}
                    sock.send(protocol.encode(protocol.SHIP_GET, body))
                    pending[req] = offset
                    download.in_flight.add(offset)
                    asked_at = time.monotonic()
                if not sock.poll(_POLL * 1000):
                    now = time.monotonic()
                    if now - progress_at > self.patience:
                        raise ShipError(
                            f"no chunk of {ship.short(hexdigest)} from the broker at {self.broker} "
                            f"for {self.patience:g}s"
                        )
                    if now - asked_at > self.timeout:
                        sock.close()  # a new connection; the next requests resume from disk
                        sock = self._connect()
                        pending.clear()
                        download.lost_connection()
                        stats["reconnects"] += 1
                    continue
                self._receive(sock, pending, download, hexdigest, stats)
                progress_at = time.monotonic()
        finally:
            sock.close()
        got = download.sha.hexdigest()  # of the bytes written: no second read of the archive
        if got != hexdigest:
            path.unlink(missing_ok=True)
            raise ShipError(
                f"shipped code {ship.short(hexdigest)}: the archive received hashes to {ship.short(got)}; "
                "not running it (deleted: the next attempt fetches it again)"
            )
        stats["fetch_s"] = round(time.monotonic() - started, 6)
        return stats

    @staticmethod
    def _receive(
        sock: zmq.Socket, pending: dict[int, int], download: Download, hexdigest: str, stats: dict[str, Any]
    ) -> None:
        kind, body = protocol.decode(sock.recv())
        offset = pending.pop(body.get("req"), None)  # type: ignore[arg-type]
        if offset is None:
            return  # an answer to a request given up on
        if kind == protocol.ERROR:
            raise ShipError(f"the broker cannot serve shipped code {ship.short(hexdigest)}: {body['error']}")
        data = body["data"]
        if not isinstance(data, dict) or not isinstance(data.get("data"), bytes) or type(data.get("size")) is not int:
            raise ShipError(f"the broker answered a fetch of {ship.short(hexdigest)} with something else")
        if download.received(offset, data["data"], data["size"]):
            stats["fetched_bytes"] += len(data["data"])
            stats["chunks"] += 1


Fetch = Callable[[str, Path, threading.Event], dict[str, Any]]
