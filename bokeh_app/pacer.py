"""When a session refreshes: soon after news, at a bounded rate, and on a slow periodic tick.

A fixed 200 ms periodic refresh made every event wait 100 ms on average for the next tick, and
up to 200 ms. Instead the feed's thread tells each session when news arrives (:meth:`Pacer.nudge`,
for anything but per-worker metrics), and the session refreshes ``DASHBOARD_NEWS_SETTLE_MS`` later, so that a
burst (a job submitted, assigned, run and done within a few milliseconds) is one refresh, not
four. What news may cost is bounded by a token bucket: ``DASHBOARD_NEWS_RATE`` refreshes a second on average,
up to ``DASHBOARD_NEWS_BURST`` at once, which bounds what a busy run costs the server and the browser while an
event after a quiet spell (the once-a-second metrics snapshot just before it, say) never waits
for a gap. The periodic tick still refreshes what is not news (the worker table's per-worker
metrics) and the history pages' timers.

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

from dtf_bus import defaults

log = logging.getLogger("dtf.dashboard")


class Pacer:
    def __init__(
        self,
        doc: Any,
        refresh: Callable[[], None],
        settle_ms: int = defaults.DASHBOARD_NEWS_SETTLE_MS,
        rate: float = defaults.DASHBOARD_NEWS_RATE,
        burst: int = defaults.DASHBOARD_NEWS_BURST,
    ) -> None:
        self.doc, self.refresh = doc, refresh
        self.settle, self.rate, self.burst = settle_ms / 1000, rate, burst
        self._lock = threading.Lock()
        self._pending = False  # a refresh is due: further news joins it
        self._tokens = float(burst)  # refreshes news may have now
        self._counted = time.monotonic()  # when _tokens was last brought up to date

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

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._counted) * self.rate)
        self._counted = now

    def _schedule(self) -> None:
        self._refill()
        short = max(0.0, 1 - self._tokens) / self.rate  # the time until a refresh is free again
        self.doc.add_timeout_callback(self._run, int(max(self.settle, short) * 1000))

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        self._refill()
        self._tokens -= 1
        self.refresh()
