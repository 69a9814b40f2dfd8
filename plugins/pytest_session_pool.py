"""The worker's live pytest sessions: idle ones by key, reaped when idle too long, all ended at exit.

A task takes an idle session of its key (the most recently used: its fixtures are warmest) or
starts one; a session that may hold the task's devices ends with its task. Apart from the
session process (:mod:`dtf_plugins.pytest_session_process`) because its concern is sharing and
lifetime across task threads, not the channel to one process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import subprocess
import threading
import time
import weakref

from dtf_bus import defaults
from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_plugins.pytest_session_process import Session, SessionDied, kill_group
from dtf_plugins.pytest_session_spec import SessionSpec

log = logging.getLogger(__name__)


class SessionPool:
    """Idle sessions by key; a reaper shuts down the ones idle too long, atexit all of them."""

    def __init__(self, idle: float = defaults.PYTEST_SESSION_IDLE) -> None:
        self.idle_timeout = idle
        self.lock = threading.Condition()
        self.idle: dict[tuple, list[Session]] = {}
        self.live: set[Session] = set()
        self.closing = False
        self.reaper: threading.Thread | None = None
        atexit.register(_close_at_exit, weakref.ref(self))

    def acquire(self, spec: SessionSpec, ctx: TaskContext) -> Session:
        with self.lock:
            if self.closing:
                raise TaskFailed("pytest-session: the worker is shutting down")
            stack = self.idle.get(spec.key)
            if stack:
                session = stack.pop()  # the most recently used: its fixtures are warmest
                if not stack:
                    del self.idle[spec.key]
                if session.proc.poll() is None:
                    return session
                self.live.discard(session)
                session.close()
        return self.start(spec, ctx)

    def start(self, spec: SessionSpec, ctx: TaskContext) -> Session:
        session = Session(spec)
        with self.lock:
            self.live.add(session)
            self._ensure_reaper()
        try:
            session.await_collection(ctx)
        except BaseException:
            self.discard(session)
            raise
        log.info("pytest session %d started in %s (%d items)", session.pid, spec.rootdir, len(session.items))
        return session

    def release(self, session: Session) -> None:
        if session.spec.holds_devices and not session.closed and session.proc.poll() is None:
            with self.lock:
                self.live.discard(session)
            session.shutdown()  # before the task ends: its devices are free once it has returned
            return
        with self.lock:
            if session.closed or session.proc.poll() is not None or self.closing:
                alive = False
            else:
                alive = True
                session.idle_since = time.monotonic()
                self.idle.setdefault(session.key, []).append(session)
                self.lock.notify_all()
        if not alive:
            self.discard(session)

    def discard(self, session: Session, kill: bool = True) -> None:
        with self.lock:
            self.live.discard(session)
        if kill:
            session.kill()
        else:
            session.close()

    def _ensure_reaper(self) -> None:
        if self.reaper is None:
            self.reaper = threading.Thread(target=self._reap, name="pytest-session-reaper", daemon=True)
            self.reaper.start()

    def _reap(self) -> None:
        while True:
            with self.lock:
                if self.closing:
                    return
                now = time.monotonic()
                expired: list[Session] = []
                next_due = now + self.idle_timeout
                for key, stack in list(self.idle.items()):
                    keep = []
                    for session in stack:
                        due = session.idle_since + self.idle_timeout
                        if due <= now:
                            expired.append(session)
                        else:
                            keep.append(session)
                            next_due = min(next_due, due)
                    if keep:
                        self.idle[key] = keep
                    else:
                        del self.idle[key]
                for session in expired:
                    self.live.discard(session)
                if not expired:
                    self.lock.wait(timeout=max(next_due - now, 0.01))
            for session in expired:
                log.info("pytest session %d idle for %.0fs: shutting it down", session.pid, self.idle_timeout)
                session.shutdown()

    def close(self, grace: float = defaults.PYTEST_SESSION_SHUTDOWN_GRACE) -> None:
        """Every session ends: idle ones are asked to tear down (all at once, one shared grace),
        busy ones are killed; the worker exiting never leaves a session behind."""
        with self.lock:
            self.closing = True
            sessions = list(self.live)
            idle = {id(s) for stack in self.idle.values() for s in stack}
            self.idle.clear()
            self.live.clear()
            self.lock.notify_all()
        for session in sessions:
            if id(session) in idle:
                with contextlib.suppress(SessionDied, OSError):
                    session.send({"cmd": "shutdown"})
            else:
                kill_group(session.pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        for session in sessions:
            with contextlib.suppress(subprocess.TimeoutExpired):
                session.proc.wait(timeout=max(deadline - time.monotonic(), 0))
            session.close()


def _close_at_exit(ref: weakref.ref) -> None:
    pool = ref()
    if pool is not None:
        pool.close()
