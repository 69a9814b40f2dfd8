"""The dashboard's options: ``bokeh serve bokeh_app --args ...`` (``dtf-dashboard`` passes them)."""

from __future__ import annotations

import argparse
import os

from dtf_bus import defaults

REFRESH_ENV = defaults.DASHBOARD_REFRESH_ENV


def _milliseconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the periodic refresh must be whole milliseconds > 0, got {text!r}")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bokeh serve bokeh_app --args")
    parser.add_argument("--broker", default="", help="the broker's endpoint (shown on the page)")
    parser.add_argument("--http", default=None, help="the broker's HTTP API, e.g. http://127.0.0.1:8585")
    parser.add_argument("--events", default=None, help="the broker's PUB endpoint (default: asked of --http)")
    parser.add_argument(
        "--refresh-ms",
        type=_milliseconds,
        default=os.environ.get(REFRESH_ENV) or defaults.DASHBOARD_REFRESH_MS,
        help=f"the periodic refresh (per-worker metrics, history timers; default ${REFRESH_ENV} or "
        f"{defaults.DASHBOARD_REFRESH_MS}); news refreshes at once",
    )
    parser.add_argument("--history", default="15m", help="how far back the plots start (default 15m)")
    parser.add_argument(
        "--api-key-file",
        default=None,
        help="the broker's API token file (<db>.api-token) or a read key (else $DTF_API_KEY)",
    )
    return parser.parse_args(argv)
