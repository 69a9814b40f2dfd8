"""Waiting for a job without looking like a silent hang: ``dtf submit --wait`` and ``dtf up --suite``.

A long poll follows the job; tasks the broker cannot place are reported on stderr once their
reasons have held for ``defaults.BLOCKED_REPORT_AFTER`` seconds, and again whenever they change.
A broker that stops answering is given time to come back before the wait gives up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from dtf_bus import defaults
from dtf_bus.client import BrokerUnreachable, Client

# Seconds the broker's reasons for not placing tasks must hold before a wait reports them: long
# enough that a worker still registering is not reported, short enough that nobody waits blind.
# A wait asks the broker for news this often (a long poll: it answers at once when tasks finish).
WATCH_POLL = 1.0


def describe_blocked(blocked: list[dict[str, Any]]) -> list[str]:
    lines = []
    for block in blocked:
        names = block["tasks"]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"  {len(names)} task(s) cannot be placed ({shown}):")
        lines.extend(f"    - {reason}" for reason in block["reasons"])
    return lines


def _is_dependency_wait(block: dict[str, Any]) -> bool:
    return all(reason.startswith("waiting for dependencies") for reason in block["reasons"])


class BlockedReporter:
    """When a wait should show the broker's reasons for not placing tasks.

    Once the reasons have held for ``after`` seconds, and again each time they change; when they
    clear, the clock starts over. Waiting for a dependency is not reported: it ends by itself,
    and a dependency that cannot be placed is reported under its own name. Pure (the caller
    passes the clock), so its timing is unit-tested without a broker.
    """

    def __init__(self, after: float = defaults.BLOCKED_REPORT_AFTER) -> None:
        self.after = after
        self._current: frozenset[tuple[str, ...]] = frozenset()
        self._since = 0.0
        self._reported: frozenset[tuple[str, ...]] = frozenset()

    def update(self, blocked: list[dict[str, Any]], now: float) -> list[dict[str, Any]] | None:
        """The blocks to report now, or None."""
        blocks = [b for b in blocked if not _is_dependency_wait(b)]
        key = frozenset(tuple(b["reasons"]) for b in blocks)
        if not key:
            self._current = self._reported = frozenset()
            return None
        if key != self._current:
            self._current, self._since = key, now
        if key == self._reported:
            return None
        if not self._reported and now - self._since < self.after:
            return None
        self._reported = key
        return blocks


def _report_blocked(blocks: list[dict[str, Any]], job_id: str, waited: float) -> None:
    print(f"job {job_id}: still waiting after {waited:.0f}s; the broker cannot place:", file=sys.stderr)
    for line in describe_blocked(blocks):
        print(line, file=sys.stderr)
    print(f"  (dtf status {job_id} for details; dtf cancel {job_id} to give up)", file=sys.stderr, flush=True)


def watch(
    client: Client,
    job_id: str,
    timeout: float | None = None,
    stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    reporter: BlockedReporter | None = None,
) -> dict[str, Any] | None:
    """Wait for a job to finish and return its final status; None once ``stop()`` is true.

    A long poll (``follow``) about once a second brings the counts and the blocked reasons with
    it, so unplaceable work is reported while we wait. A broker that stops answering is given
    ``CLIENT_RECONNECT_PATIENCE`` seconds to come back (a restart keeps the job) before
    BrokerUnreachable. ``timeout`` raises TimeoutError; the job keeps running.
    """
    reporter = reporter or BlockedReporter()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    since = 0
    unreachable_since: float | None = None
    while not stop():
        wait = WATCH_POLL
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"job {job_id} not finished within {timeout:g}s")
        try:
            news = client.follow(job_id, since=since, wait=wait, status=True)
        except BrokerUnreachable:
            now = time.monotonic()
            if unreachable_since is None:
                unreachable_since = now
                print(f"broker at {client.endpoint} not answering; still waiting for job {job_id}", file=sys.stderr)
            elif now - unreachable_since > defaults.CLIENT_RECONNECT_PATIENCE:
                raise
            continue
        unreachable_since = None
        since = news["next"]
        if news["done"]:
            return client.status(job_id)
        if on_progress is not None:
            on_progress(news)
        now = time.monotonic()
        blocks = reporter.update(news.get("blocked") or [], now)
        if blocks:
            _report_blocked(blocks, job_id, now - started)
    return None


def progress_printer() -> Callable[[dict[str, Any]], None]:
    """A ``watch`` callback printing the job's counts whenever they change."""
    last = None

    def show(news: dict[str, Any]) -> None:
        nonlocal last
        line = ", ".join(f"{n} {s}" for s, n in sorted((news.get("counts") or {}).items()))
        if line and line != last:
            print(f"  progress: {line}", flush=True)
            last = line

    return show
