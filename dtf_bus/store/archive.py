"""Jobs the broker no longer holds, and other DuckDB reads, on a thread of their own.

A finished job leaves the broker's memory a while after its end (``--finished-job-ttl``); a
request about it, or about a job id nobody knows, needs a DuckDB read. On the broker's loop that
read held every heartbeat and result behind it (seconds for a job of 100,000 tasks), so it runs
here instead: the loop hands over the request, goes on, and takes the loaded job back when this
thread signals ``notify_fd``; then it answers the request as if the job had been in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dtf_bus import defaults
from dtf_bus.store import recovery
from dtf_bus.store.db import Store
from dtf_bus.task import Job, Task

log = logging.getLogger(__name__)


class Refused(LookupError):
    """A read's answer is a refusal the requester should hear (a job or test the store does not
    hold): its message goes back as the error, where any other failure is logged and hidden."""


@dataclass(slots=True)
class Loaded:
    """A deferred request and what DuckDB holds of its job (nothing: an unknown job)."""

    peer: bytes
    kind: str
    body: dict[str, Any]
    jobs: list[Job]
    tasks: list[Task]
    error: str | None = None
    reply: Any = None  # a plain read's answer (kind ""), sent as it is


class Archive:
    def __init__(self, store: Store, pending_max: int = defaults.ARCHIVE_PENDING_MAX) -> None:
        self.store = store
        self.pending_max = pending_max
        self.pending = 0  # requests handed over and not yet taken back (loop thread only)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dtf-archive")
        self._done: queue.SimpleQueue[Loaded] = queue.SimpleQueue()
        self.notify_fd, self._notify_w = os.pipe()
        os.set_blocking(self.notify_fd, False)
        os.set_blocking(self._notify_w, False)

    def load(self, peer: bytes, kind: str, body: dict[str, Any]) -> bool:
        """Read the request's job on the archive thread; False when too many reads wait already."""
        if self.pending >= self.pending_max:
            return False
        self.pending += 1
        self._pool.submit(self._read, peer, kind, body)
        return True

    def query(self, peer: bytes, body: dict[str, Any], read: Callable[[Any], Any], what: str) -> bool:
        """Any other read (a rootdir's test history): ``read(cursor)`` on this thread; what it
        returns is the reply. False when too many reads wait already."""
        if self.pending >= self.pending_max:
            return False
        self.pending += 1
        self._pool.submit(self._run, Loaded(peer, "", body, [], []), read, what)
        return True

    def _read(self, peer: bytes, kind: str, body: dict[str, Any]) -> None:
        loaded = Loaded(peer, kind, body, [], [])

        def read(cursor: Any) -> None:
            loaded.jobs, loaded.tasks = recovery.load_jobs(cursor, "job_id = $1", [body["job_id"]])

        self._run(loaded, read, f"job {body.get('job_id')!r}")

    def _run(self, loaded: Loaded, read: Callable[[Any], Any], what: str) -> None:
        try:
            loaded.reply = self.store.read(read)
        except Refused as exc:
            loaded.error = str(exc)
        except Exception as exc:  # a broken or closing database: the request fails, the loop goes on
            log.warning("reading %s from the results store failed: %s", what, exc)
            loaded.error = f"cannot read {what} from the results store: {type(exc).__name__}"
        self._done.put(loaded)
        with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
            os.write(self._notify_w, b"\0")

    def taken(self) -> list[Loaded]:
        """On the loop: every read that is done."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.notify_fd, 4096):
                pass
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                self.pending -= len(done)
                return done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        os.close(self.notify_fd)
        os.close(self._notify_w)
