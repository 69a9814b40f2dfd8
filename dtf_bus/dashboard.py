"""Serve the Bokeh dashboard (``bokeh_app/``) on a port of our choosing, 0 included.

``bokeh serve bokeh_app --args ...`` works too; this launcher exists for ``dtf up`` and the
tests, which need an ephemeral port reported back (a ready file, like the broker's) and the
WebSocket origin check to allow exactly that port on 127.0.0.1 and localhost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

import tornado.netutil
from bokeh.application import Application
from bokeh.application.handlers.directory import DirectoryHandler
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from dtf_bus import defaults

APP_DIR = Path(__file__).resolve().parent.parent / "bokeh_app"
log = logging.getLogger("dtf.dashboard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtf-dashboard", description="Serve dtf's live dashboard.")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=defaults.DASHBOARD_PORT, help="0 picks a free port")
    parser.add_argument("--broker", default="", help="the broker's endpoint (shown on the page)")
    parser.add_argument("--http", required=True, help="the broker's HTTP API (history, and the events endpoint)")
    parser.add_argument("--events", default=None, help="the broker's PUB endpoint (default: asked of --http)")
    parser.add_argument("--api-key-file", help="a file holding a read key for --http (else $DTF_API_KEY)")
    parser.add_argument("--ready-file", help="write the dashboard's URL here as JSON once serving")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (APP_DIR / "main.py").exists():
        print(f"dtf-dashboard: the Bokeh app is missing: {APP_DIR}/main.py", file=sys.stderr)
        return 2
    app_args = ["--broker", args.broker, "--http", args.http] + (["--events", args.events] if args.events else [])
    app_args += ["--api-key-file", args.api_key_file] if args.api_key_file else []
    try:
        sockets = tornado.netutil.bind_sockets(args.port, args.address)
    except OSError as exc:
        print(f"dtf-dashboard: cannot listen on {args.address}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sockets[0].getsockname()[1]
    url = f"http://{args.address}:{port}/"
    application = Application(DirectoryHandler(filename=str(APP_DIR), argv=app_args))
    origins = sorted({f"{args.address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})
    loop = IOLoop.current()
    tornado_app = BokehTornado({"/": application}, extra_websocket_origins=origins, absolute_url=url)
    http_server = HTTPServer(tornado_app)
    http_server.add_sockets(sockets)
    server = BaseServer(loop, tornado_app, http_server)
    server.start()

    def stop(*_: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        tmp.replace(args.ready_file)
    log.info("dashboard at %s (broker API %s)", url, args.http)
    loop.start()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
