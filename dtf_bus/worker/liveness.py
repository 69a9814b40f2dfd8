"""A liveness file: a process with nothing to serve shows that its main loop still turns.

A worker listens on no port, so a container orchestrator (a Kubernetes liveness probe, a systemd
watchdog script) cannot ask it over the network whether it is stuck. Given ``--alive-file FILE``
the worker touches FILE from its main loop at least every ``ALIVE_FILE_INTERVAL`` seconds, and
``dtf ping --alive-file FILE`` judges the file's age. Asking the broker instead would be wrong:
during a broker outage every healthy worker would fail its probe and be restarted, losing the
tasks it is still running.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from dtf_bus import defaults

log = logging.getLogger(__name__)


class AliveFile:
    """Touched by :meth:`beat` from one loop; a ``None`` path makes every beat a no-op."""

    def __init__(self, path: str | Path | None, interval: float = defaults.ALIVE_FILE_INTERVAL) -> None:
        self.path = Path(path) if path else None
        self.interval = interval
        self._next = -math.inf  # monotonic time of the next touch
        self._warned = False

    def beat(self, now: float, due: float) -> float:
        """Touch the file when it is time; returns ``due`` brought forward to the next touch, so a
        loop that sleeps until ``due`` wakes in time for it."""
        if self.path is None:
            return due
        if now >= self._next:
            self._next = now + self.interval
            try:
                self.path.touch()
            except OSError as exc:  # a full or read-only disk: say so once, keep working
                if not self._warned:
                    log.warning("cannot touch the alive file %s: %s", self.path, exc)
                    self._warned = True
        return min(due, self._next)


def problem(path: str | Path, max_age: float = defaults.ALIVE_FILE_MAX_AGE) -> str | None:
    """Why the process writing ``path`` does not look alive, or None when it does."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return f"{path}: no alive file (is the worker running with --alive-file {path}?)"
    except OSError as exc:
        return f"{path}: cannot read the alive file: {exc.strerror}"
    if age > max_age:
        return f"{path}: last touched {age:.0f}s ago (more than {max_age:g}s): the worker's loop is stuck"
    return None
