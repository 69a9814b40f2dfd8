"""When a session refreshes: soon after news, never more often than a set gap, and on a slow tick.

A fixed 200 ms periodic refresh made every event wait 100 ms on average for the next tick, and
up to 200 ms. Instead the feed's thread tells each session when news arrives (:meth:`Pacer.nudge`,
for anything but per-worker metrics), and the session refreshes ``SETTLE_MS`` later, so that a
burst (a job submitted, assigned, run and done within a few milliseconds) is one refresh, not
four. Refreshes that news causes are at least ``GAP_MS`` apart, which bounds what a busy run
costs the server and the browser (ten refreshes a second at most); the periodic tick still
refreshes what is not news (the worker table's per-worker metrics) and the history pages' timers.

``nudge`` runs on the feed's thread: it only sets a flag and calls ``add_next_tick_callback``,
the one Document method safe to call from another thread; the timing and the refresh itself run
on the document's loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dtf.dashboard")

SETTLE_MS = 10  # news waits this long for the rest of its burst
GAP_MS = 100  # news-driven refreshes of one session are at least this far apart


class Pacer:
    def __init__(self, doc: Any, refresh: Callable[[], None], settle_ms: int = SETTLE_MS, gap_ms: int = GAP_MS) -> None:
        self.doc, self.refresh = doc, refresh
        self.settle, self.gap = settle_ms / 1000, gap_ms / 1000
        self._lock = threading.Lock()
        self._pending = False  # a refresh is due: further news joins it
        self._last = -float("inf")  # when the last news-driven refresh ran (monotonic)

    def nudge(self) -> None:
        """News arrived (any thread): a refresh soon, unless one is due already."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self.doc.add_next_tick_callback(self._schedule)
        except Exception:  # the session is gone; its feed listener goes with it
            log.debug("dashboard: news for a closed session")

    def _schedule(self) -> None:
        delay = max(self.settle, self._last + self.gap - time.monotonic())
        self.doc.add_timeout_callback(self._run, int(delay * 1000))

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        self._last = time.monotonic()
        self.refresh()
