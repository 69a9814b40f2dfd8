"""The dashboard: one Bokeh document per browser session, in tabs, refreshed on news.

``bokeh serve bokeh_app --args --broker EP --http URL [--events EP]``. The events endpoint (the
broker's PUB socket) is asked of the HTTP API when not given. Each refresh takes what the
shared :mod:`feed` received since the last one and hands it to every live component's
``update``, and tells the history page on show (Jobs, Job, Flaky & slow, Benchmarks: read from
the broker's HTTP API, see :mod:`pages`) whether that news calls for a fresh read. A session
refreshes as soon as the feed has news for it (:mod:`pacer`: within milliseconds, ten
times a second on average) and every ``--refresh-ms`` for the rest. Only the shown tab's models are
written (:mod:`held`): the others catch up when shown. The fleet's summary and blocked work
head every tab, with the tab bar, in a root of their own, and each tab's page is a root of its
own: a Div's new text or a plot's new axis re-lays out its whole root in BokehJS (measured: 60
to 250 ms a time with every page's plots and tables in one root).

``?tab=live|jobs|job|flaky|benchmarks`` opens a tab, ``?job=ID`` a job on the Job tab.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from bokeh.io import curdoc
from bokeh.layouts import column, row
from bokeh.models import CustomJS, Div, TabPanel, Tabs

from dtf_bus import defaults

from . import api
from .anomalies import AnomalyList
from .bench_page import BenchPage
from .blocked import BlockedList
from .feed import shared
from .flaky_page import FlakyPage
from .job_page import JobPage
from .jobs_page import JobsPage
from .options import parse
from .pacer import Pacer
from .queue_depth import SERIES, QueueThroughput
from .summary import Summary
from .task_stream import TaskStream
from .workers import WorkerTable

log = logging.getLogger("dtf.dashboard")
TABS = ("live", "jobs", "job", "flaky", "benchmarks")
SWITCH_JS = "bodies.forEach((body, index) => { body.visible = index == cb_obj.active })"


def _argument(doc: Any, name: str) -> str:
    """A query argument of the page's URL ('' when absent)."""
    request = getattr(doc.session_context, "request", None) if doc.session_context else None
    values = (getattr(request, "arguments", None) or {}).get(name) or [b""]
    value = values[0]
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip()


def build(doc, args: argparse.Namespace) -> None:
    doc.title = "dtf dashboard"
    if args.api_key_file:
        api.load_key(args.api_key_file)
    status = api.get(args.http, "/api/status") or {}
    endpoint = args.events or status.get("metrics_endpoint")
    broker = args.broker or status.get("endpoint", "")
    header = Div(text='<h2 style="margin:4px 0;font-family:sans-serif">dtf</h2>')
    if not endpoint:
        doc.add_root(
            column(
                header,
                Div(text=f"<b>No events endpoint</b>: pass --events, or --http of a running broker ({args.http})."),
            )
        )
        return
    feed = shared(endpoint)
    history = api.get(
        args.http, "/api/metrics/history/system", metrics=",".join(SERIES), interval="1s", duration=args.history
    )
    summary = Summary(broker, args.http)
    if status.get("system"):
        summary.base = status["system"]
    blocked = BlockedList(status.get("system"))
    queue = QueueThroughput(history["series"] if history else None)
    stream = TaskStream()
    workers = WorkerTable()
    anomalies = AnomalyList(api.get(args.http, "/api/anomalies", limit=100) or [])
    summary.update([(0, "metrics.system", feed.system)] if feed.system else [])
    workers.update(feed.workers(), force=True)
    position = {"seq": feed.seq}
    live = column(
        row(queue.depth, queue.throughput, sizing_mode="stretch_width"),
        stream.layout,
        workers.layout,
        anomalies.layout,
        sizing_mode="stretch_width",
    )
    job_id = _argument(doc, "job")
    job_page = JobPage(doc, args.http, job_id)
    pages = [JobsPage(doc, args.http, lambda chosen: open_job(chosen)), job_page, FlakyPage(doc, args.http)]
    pages.append(BenchPage(doc, args.http))
    wanted = _argument(doc, "tab") or ("job" if job_id else "live")
    # Tabs as a bar only: each page is a root of its own, shown while its tab is active. BokehJS
    # lays out a whole root again when a Div's text or a plot's axis changes; in one root with
    # every page, that cost 250 ms a time on a busy machine, hidden pages' tables and plots included.
    bodies = [live, *(p.layout for p in pages)]
    tabs = Tabs(
        tabs=[TabPanel(child=Div(height=0, margin=0), title=title) for title in ("Live", *(p.title for p in pages))],
        active=TABS.index(wanted) if wanted in TABS else 0,
        sizing_mode="stretch_width",
    )
    due = {"at": 0.0}
    live_parts = (queue, stream, anomalies)

    def shown() -> Any:
        return pages[tabs.active - 1] if tabs.active > 0 else None

    def show_tab() -> None:
        for index, body in enumerate(bodies):
            body.visible = index == tabs.active
        for part in live_parts:
            part.set_shown(tabs.active == 0)
        for index, page in enumerate(pages, 1):
            page.set_shown(tabs.active == index)

    def open_job(chosen: str) -> None:
        job_page.open(chosen)
        tabs.active = TABS.index("job")

    def on_tab(attr: str, old: int, new: int) -> None:
        show_tab()
        if new == 0:  # back on the live page: its worker tables catch up at once
            workers.update(feed.workers(), force=True)
        page = shown()
        if page is not None:
            page.refresh()
            due["at"] = time.monotonic() + defaults.DASHBOARD_HISTORY_REFRESH

    def refresh() -> None:
        position["seq"], events = feed.since(position["seq"])
        for each in pages:  # the shown page's news first: the browser applies changes in the order sent
            each.absorb(events)
        summary.update(events)
        blocked.update(events)
        queue.update(events)
        stream.update(events)
        anomalies.update(events)
        if tabs.active == 0:  # hundreds of worker rows: not re-sent to the browser while another tab is shown
            workers.update(feed.workers())
        page = shown()
        if page is not None:
            now = time.monotonic()
            news = page.wants(events)
            if news or now >= due["at"]:
                page.refresh(follow_up=news)
                due["at"] = now + defaults.DASHBOARD_HISTORY_REFRESH

    show_tab()
    tabs.on_change("active", on_tab)
    # In the browser at once too, without waiting for the server's answer.
    tabs.js_on_change("active", CustomJS(args={"bodies": bodies}, code=SWITCH_JS))
    doc.add_periodic_callback(refresh, args.refresh_ms)
    pacer = Pacer(doc, refresh)
    feed.listen(pacer.nudge)
    doc.on_session_destroyed(lambda context: feed.unlisten(pacer.nudge))
    # The summary and blocked work head every tab, with the tab bar, in a root of their own.
    doc.add_root(column(header, summary.div, blocked.div, tabs, sizing_mode="stretch_width"))
    for body in bodies:
        doc.add_root(body)


build(curdoc(), parse(sys.argv[1:]))
