"""The dashboard page: one Bokeh document per browser session, refreshed every 200 ms.

``bokeh serve bokeh_app --args --broker EP --http URL [--events EP]``. The events endpoint (the
broker's PUB socket) is asked of the HTTP API when not given. Each refresh takes what the
shared :mod:`feed` received since the last one and hands it to every component's ``update``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bokeh.io import curdoc
from bokeh.layouts import column, row
from bokeh.models import Div

from dtf_bus import defaults

from . import api
from .anomalies import AnomalyList
from .blocked import BlockedList
from .feed import shared
from .queue_depth import SERIES, QueueThroughput
from .summary import Summary
from .task_stream import TaskStream
from .workers import WorkerTable

log = logging.getLogger("dtf.dashboard")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bokeh serve bokeh_app --args")
    parser.add_argument("--broker", default="", help="the broker's endpoint (shown on the page)")
    parser.add_argument("--http", default=None, help="the broker's HTTP API, e.g. http://127.0.0.1:8585")
    parser.add_argument("--events", default=None, help="the broker's PUB endpoint (default: asked of --http)")
    parser.add_argument("--refresh-ms", type=int, default=defaults.DASHBOARD_REFRESH_MS)
    parser.add_argument("--history", default="15m", help="how far back the plots start (default 15m)")
    parser.add_argument(
        "--api-key-file",
        default=None,
        help="the broker's API token file (<db>.api-token) or a read key (else $DTF_API_KEY)",
    )
    return parser.parse_args(argv)


def build(doc, args: argparse.Namespace) -> None:
    doc.title = "dtf dashboard"
    if args.api_key_file:
        api.load_key(args.api_key_file)
    status = api.get(args.http, "/api/status") or {}
    endpoint = args.events or status.get("metrics_endpoint")
    broker = args.broker or status.get("endpoint", "")
    header = Div(text='<h2 style="margin:4px 0;font-family:sans-serif">dtf — live cluster</h2>')
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

    def refresh() -> None:
        position["seq"], events = feed.since(position["seq"])
        summary.update(events)
        blocked.update(events)
        queue.update(events)
        stream.update(events)
        anomalies.update(events)
        workers.update(feed.workers())

    doc.add_periodic_callback(refresh, args.refresh_ms)
    doc.add_root(
        column(
            header,
            summary.div,
            blocked.div,
            row(queue.depth, queue.throughput, sizing_mode="stretch_width"),
            stream.figure,
            workers.layout,
            anomalies.layout,
            sizing_mode="stretch_width",
        )
    )


build(curdoc(), parse(sys.argv[1:]))
