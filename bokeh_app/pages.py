"""What the history pages share: API reads off the session's loop, and small HTML helpers.

The live page draws what the PUB feed brings; the history pages (Jobs, Job, Flaky & slow,
Benchmarks) show what the broker's HTTP API reads from DuckDB. An HTTP call on the Bokeh
session's loop would hold up every session's refresh behind it, so :class:`Fetcher` runs the
read on a small shared thread pool and hands the answer back with ``add_next_tick_callback``
(the one Document method safe to call from another thread). One read per page at a time; a
request while one runs is remembered and answered by one more read when it ends.

A page refreshes when it is shown, every ``DASHBOARD_HISTORY_REFRESH`` seconds while shown, and
when the feed brings news it cares about (:meth:`Page.wants`: a job submitted or done; the Job
page, any event of its job), at most once per ``DASHBOARD_NEWS_INTERVAL``: the reads run in the
broker's process, and a busy run must not turn one open tab into a stream of store scans. DuckDB
lags the broker by up to one store flush, so such news also schedules reads within a flush later
(:data:`FOLLOW_UPS_MS`).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

from dtf_bus import defaults

from .held import Held

log = logging.getLogger("dtf.dashboard")

POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dtf-dashboard-api")
# Reads after news, by when DuckDB has it: the store commits every STORE_FLUSH_INTERVAL, so the
# last of these is past a flush whenever the news came.
FOLLOW_UPS_MS = (100, int(defaults.STORE_FLUSH_INTERVAL * 1000) + 50)
OUTCOME_COLOURS = {
    "passed": "#2ca02c",
    "flaky": "#e0a000",
    "failed": "#d62728",
    "error": "#8c0000",
    "skipped": "#999999",
    "xfailed": "#999999",
    "xpassed": "#e0a000",
}
BOX = "font-family:sans-serif;font-size:13px"

Event = tuple[int, str, dict[str, Any]]
JOB_NEWS = ("job_submitted", "job_done")


class Fetcher:
    """``read()`` on the pool, then ``show(result)`` on the document's loop."""

    def __init__(self, doc: Any, read: Callable[[], Any], show: Callable[[Any], None]) -> None:
        self.doc, self.read, self.show = doc, read, show
        self.busy = False
        self.again = False
        self.requested_at = 0.0  # when the read now running (or the last) was asked for

    def request(self) -> None:
        if self.busy:
            self.again = True
            return
        self.busy = True
        self.requested_at = time.monotonic()
        POOL.submit(self._run)

    def later(self, delays_ms: Sequence[int] = FOLLOW_UPS_MS) -> None:
        for ms in delays_ms:
            self.doc.add_timeout_callback(self.request, ms)

    def _run(self) -> None:
        try:
            result = self.read()
        except Exception as exc:  # a bug in a read must not leave the page stuck as busy
            log.exception("dashboard: a history read failed")
            result = ("error", str(exc))
        try:
            self.doc.add_next_tick_callback(partial(self._done, result))
        except Exception:  # the session closed meanwhile
            log.debug("dashboard: session gone before its read ended")

    def _done(self, result: Any) -> None:
        self.busy = False
        try:
            self.show(result)
        finally:
            if self.again:
                self.again = False
                self.request()


class Page(Held):
    """A history page: a layout, a read (on the pool) and a show (on the loop). What it takes
    from the feed (:meth:`absorb`) reaches its models only while it is shown (:class:`Held`)."""

    title = ""
    layout: Any
    shown = False

    def __init__(self, doc: Any, http: str | None) -> None:
        self.http = http
        self.fetcher = Fetcher(doc, self.read, self.show)
        self._news_at = -float("inf")  # when news last caused a read

    def read(self) -> Any:
        raise NotImplementedError

    def show(self, result: Any) -> None:
        raise NotImplementedError

    def publish(self) -> None:
        """Write what :meth:`absorb` took (default: nothing, the page only shows reads)."""

    def absorb(self, events: Sequence[Event]) -> None:
        """Take what the feed says directly, before any read (every page, shown or not; default: nothing)."""

    def wants(self, events: Sequence[Event]) -> bool:
        """Whether news from the feed calls for a fresh read (default: a job submitted or done;
        each task's end would re-read the store continuously during a busy run)."""
        return any(topic == "events.task" and p.get("event") in JOB_NEWS for _, topic, p in events)

    def refresh(self, follow_up: bool = False) -> None:
        """A read now; news-driven ones (``follow_up``, with their later re-reads) at most once per
        DASHBOARD_NEWS_INTERVAL: the reads run in the broker's process."""
        if follow_up:
            now = time.monotonic()
            if now - self._news_at < defaults.DASHBOARD_NEWS_INTERVAL:
                return
            self._news_at = now
        self.fetcher.request()
        if follow_up:
            self.fetcher.later()


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}s"


def run_label(job: dict[str, Any]) -> str:
    """``main@1a2b3c4d5e (dirty)`` or ``no git``."""
    if not job.get("commit"):
        return "no git"
    return f"{job.get('branch') or 'detached'}@{job['commit'][:10]}" + (" (dirty)" if job.get("dirty") else "")


def labels_text(labels: dict[str, str] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def outcome(value: str | None) -> str:
    colour = OUTCOME_COLOURS.get(value or "", "#333")
    return f'<span style="color:{colour};font-weight:600">{esc(value)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], attrs: Iterable[str] | None = None) -> str:
    """An HTML table; cells are HTML already (escape values with :func:`esc`); ``attrs``: extra
    attributes per row (``data-*`` for tests and scrapers)."""
    head = "".join(
        f'<th style="text-align:left;padding:2px 8px;border-bottom:1px solid #ccc">{h}</th>' for h in headers
    )
    attrs = list(attrs) if attrs is not None else None
    body = "".join(
        f"<tr {attrs[i] if attrs else ''}>"
        + "".join(f'<td style="padding:2px 8px;vertical-align:top">{c}</td>' for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table style="border-collapse:collapse;{BOX}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(title: str, body: str, metric: str | None = None, count: int | None = None) -> str:
    shown = f' (<span data-metric="{metric}">{count}</span>)' if metric and count is not None else ""
    return f'<div style="{BOX};margin:6px 0"><b>{esc(title)}</b>{shown}<div style="margin-top:4px">{body}</div></div>'
