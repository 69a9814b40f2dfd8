"""A worker's cache of shipped trees and venvs: built once, shared by tasks, bounded in bytes (LRU).

Each entry (``tree-<hex>``, ``venv-<hex>``) is a directory under ``entries/`` with a JSON
marker beside it, written once the directory is complete: its size, and by its mtime when it
was last used. Two ``flock`` locks per entry keep tasks (threads of one worker, or several
workers sharing the cache) out of each other's way:

- ``<name>.build``, exclusive while the entry is built: a second task needing it waits, then
  finds it ready (a venv is never built twice at once);
- ``<name>.use``, shared by every task using the entry; eviction takes it exclusively without
  waiting, so an entry in use is never deleted.

After building, entries no task uses, and none used for SHIP_CACHE_MIN_IDLE seconds (longer
than a pytest session idles in its tree before it is shut down), are evicted least recently used
first until the cache fits its bound; what cannot go yet stays, with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from dtf_bus import defaults
from dtf_bus.ship.archive import ShipError

log = logging.getLogger("dtf.ship")

_LOCK_POLL = 0.05  # seconds between tries of a busy build lock (a cancelled task stops waiting)


def default_dir() -> Path:
    """``$DTF_SHIP_CACHE``, else ``$XDG_CACHE_HOME/dtf/ship`` (``~/.cache/dtf/ship``)."""
    explicit = os.environ.get(defaults.SHIP_CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dtf" / "ship"


def tree_size(path: Path) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


class Cache:
    def __init__(
        self,
        root: str | Path,
        max_bytes: int = defaults.SHIP_CACHE_BYTES,
        min_idle: float = defaults.SHIP_CACHE_MIN_IDLE,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_idle = min_idle
        self.entries = self.root / "entries"
        self.locks = self.root / "locks"
        self.partial = self.root / "partial"  # downloads in progress (kept to resume them)
        self._made = False

    def _setup(self) -> None:
        if not self._made:
            for directory in (self.entries, self.locks, self.partial):
                directory.mkdir(parents=True, exist_ok=True)
            self._made = True

    def path(self, name: str) -> Path:
        return self.entries / name

    def _marker(self, name: str) -> Path:
        return self.entries / f"{name}.json"

    def ready(self, name: str) -> bool:
        return self._marker(name).exists()

    @contextlib.contextmanager
    def use(
        self, name: str, build: Callable[[Path], None], cancelled: threading.Event | None = None
    ) -> Iterator[tuple[Path, bool]]:
        """The entry ``name``, built by ``build(directory)`` unless ready; yields (directory,
        whether it was ready). Nobody evicts it while the block runs."""
        self._setup()
        with self._lock(name, "use", fcntl.LOCK_SH, cancelled):
            with self._lock(name, "build", fcntl.LOCK_EX, cancelled):
                hit = self.ready(name)
                if not hit:
                    directory = self.path(name)
                    shutil.rmtree(directory, ignore_errors=True)  # an earlier build cut short
                    try:
                        build(directory)
                    except BaseException:
                        shutil.rmtree(directory, ignore_errors=True)
                        raise
                    self._write_marker(name, tree_size(directory))
                else:
                    os.utime(self._marker(name))  # used now: the LRU order
            # The build lock is free again (others may use the entry at once); the use lock is ours.
            if not hit:
                self.evict(keep=name)
            try:
                yield self.path(name), hit
            finally:
                with contextlib.suppress(OSError):
                    os.utime(self._marker(name))  # last used when the task ended (an idle session may follow)

    def _write_marker(self, name: str, size: int) -> None:
        tmp = self.entries / f".{name}.json.tmp"
        tmp.write_text(json.dumps({"size": size, "built": time.time()}))
        os.replace(tmp, self._marker(name))

    @contextlib.contextmanager
    def _lock(self, name: str, kind: str, mode: int, cancelled: threading.Event | None) -> Iterator[IO[str]]:
        with (self.locks / f"{name}.{kind}").open("a") as fh:
            while True:
                try:
                    fcntl.flock(fh, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if cancelled is not None and cancelled.is_set():
                        raise ShipError(f"cancelled while waiting for {name} (another task is preparing it)") from None
                    time.sleep(_LOCK_POLL)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def listing(self) -> list[tuple[str, float, int]]:
        """Ready entries: (name, last used, bytes), least recently used first."""
        found = []
        for marker in self.entries.glob("*.json"):
            try:
                size = int(json.loads(marker.read_text())["size"])
                used = marker.stat().st_mtime
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written or removed right now
            found.append((marker.name[: -len(".json")], used, size))
        return sorted(found, key=lambda e: e[1])

    def total(self) -> int:
        return sum(size for _, _, size in self.listing())

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete unused entries, oldest use first, until the cache fits; returns their names."""
        entries = self.listing()
        total = sum(size for _, _, size in entries)
        evicted: list[str] = []
        cutoff = time.time() - self.min_idle
        for name, used, size in entries:
            if total <= self.max_bytes or used > cutoff:
                break  # oldest first: the rest were used more recently still
            if name == keep or not self._evict_one(name):
                continue
            total -= size
            evicted.append(name)
        if total > self.max_bytes:
            log.warning(
                "ship cache %s holds %d bytes, over its %d: the rest is in use", self.root, total, self.max_bytes
            )
        return evicted

    def _evict_one(self, name: str) -> bool:
        with (self.locks / f"{name}.use").open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a task is using it
            try:
                self._marker(name).unlink(missing_ok=True)  # not ready from here on
                shutil.rmtree(self.path(name), ignore_errors=True)
                log.info("ship cache: evicted %s", name)
                return True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
