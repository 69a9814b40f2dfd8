"""Serve the Bokeh dashboard (``bokeh_app/``, installed as ``dtf_dashboard``) on a port of our choosing, 0 included.

``bokeh serve bokeh_app --args ...`` works too (from a checkout); this launcher exists for ``dtf up`` and the
tests, which need an ephemeral port reported back (a ready file, like the broker's) and the
WebSocket origin check to allow exactly that port on 127.0.0.1 and localhost.

The page shows what the broker's API shows, so it asks for the same thing: the key the
dashboard itself reads the API with (``--api-key-file``, which ``dtf up`` points at the broker's
``<db>.api-token``). ``http://HOST:PORT/?token=TOKEN`` lets a browser in and leaves the token as
a cookie (HttpOnly, SameSite=Strict) for the page's scripts and WebSocket. Every request, static
files and Bokeh's WebSocket included, is checked before Bokeh sees it (:class:`GuardedBokeh`):
Bokeh's own auth hooks answer a stranger with a redirect to a login page, and we want a plain
401, and a 403 for a Host header that is not ours (DNS rebinding).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import tornado.netutil
import tornado.web
from bokeh.application import Application
from bokeh.application.handlers.directory import DirectoryHandler
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.ioloop import IOLoop

from dtf_bus import defaults, logs
from dtf_bus.http import auth as webauth
from dtf_bus.http import server as httpserver

APP_PACKAGE = "dtf_dashboard"  # the repository's bokeh_app/, under the name the wheel gives it
log = logging.getLogger("dtf.dashboard")


def app_dir() -> Path | None:
    """Where the installed Bokeh app lives (a checkout's bokeh_app/ in an editable install).

    Found, not imported: Bokeh runs the directory itself, and dtf_bus must not import the app.
    """
    spec = importlib.util.find_spec(APP_PACKAGE)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


class Refusal(tornado.web.RequestHandler):
    """Answers a request the guard refused: its status and one line, no redirect."""

    def initialize(self, status: int, message: str) -> None:
        self.status, self.message = status, message

    def prepare(self) -> None:
        self.set_status(self.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if self.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="dtf"')
        self.finish(self.message + "\n")


class TokenCookie(tornado.web.OutputTransform):
    """Hands a browser that brought ``?token=`` the token back as a cookie, on Bokeh's own answer."""

    def __init__(self, request: HTTPServerRequest) -> None:
        self.cookie: str | None = getattr(request, "dtf_set_cookie", None)

    def transform_first_chunk(
        self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, HTTPHeaders, bytes]:
        if self.cookie and status_code < 400:
            headers.add("Set-Cookie", self.cookie)
        return status_code, headers, chunk


class GuardedBokeh(BokehTornado):
    """BokehTornado behind webauth's checks: Host allow-list, Origin on state changes, the token."""

    def __init__(self, *args: Any, token: str, port: int, allowed: frozenset[str], tls: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token, self.port, self.allowed, self.tls = token, port, allowed, tls
        self.add_transform(TokenCookie)

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        try:
            webauth.check_host(request, self.allowed)
            webauth.check_origin(request)
            key, where = webauth.presented_credential(request, self.port)
            if not webauth.matches(key, self.token):
                raise webauth.Refused(
                    401,
                    ("wrong token" if key else "missing token")
                    + ": open the dashboard with ?token=TOKEN (the broker's API token, in its <db>.api-token file)",
                )
        except webauth.Refused as exc:
            return self.get_handler_delegate(request, Refusal, {"status": exc.status, "message": exc.message})
        if where == "query":
            # Out of Bokeh's sight: it would copy the arguments into the session token in the page.
            for name in ("token", "api_key"):
                request.query_arguments.pop(name, None)
                request.arguments.pop(name, None)
            if request.method == "GET":
                request.dtf_set_cookie = (  # type: ignore[attr-defined]
                    f"{webauth.cookie_name(self.port)}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    + ("; Secure" if self.tls else "")
                )
        return super().find_handler(request, **kwargs)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Failures only, with credentials in the query string masked (tornado's logs the full URI)."""
    status = handler.get_status()
    if status >= 400:
        log.info("%d %s %s", status, handler.request.method, webauth.redact_uri(handler.request.uri or ""))


def _read_key(path: str | None) -> str | None:
    if path:
        return Path(path).read_text().strip() or None
    return os.environ.get(defaults.API_KEY_ENV) or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtf-dashboard", description="Serve dtf's live dashboard.")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=defaults.DASHBOARD_PORT, help="0 picks a free port")
    parser.add_argument("--broker", default="", help="the broker's endpoint (shown on the page)")
    parser.add_argument("--http", required=True, help="the broker's HTTP API (history, and the events endpoint)")
    parser.add_argument("--events", default=None, help="the broker's PUB endpoint (default: asked of --http)")
    parser.add_argument(
        "--api-key-file",
        help="the broker's API token file (<db>.api-token) or a read key (else $DTF_API_KEY); the page asks for it too",
    )
    parser.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a Host name the page answers to besides loopback and --address (repeatable)",
    )
    parser.add_argument("--ready-file", help="write the dashboard's URL here as JSON once serving")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    app = app_dir()
    if app is None or not (app / "main.py").exists():
        print(f"dtf-dashboard: the Bokeh app is missing: package {APP_PACKAGE} is not installed", file=sys.stderr)
        return 2
    app_args = ["--broker", args.broker, "--http", args.http] + (["--events", args.events] if args.events else [])
    app_args += ["--api-key-file", args.api_key_file] if args.api_key_file else []
    try:
        token = _read_key(args.api_key_file)
    except OSError as exc:
        print(f"dtf-dashboard: cannot read --api-key-file {args.api_key_file}: {exc.strerror}", file=sys.stderr)
        return 2
    if not token:
        print(
            "dtf-dashboard: no API token: pass --api-key-file (the broker's <db>.api-token) or set $DTF_API_KEY",
            file=sys.stderr,
        )
        return 2
    try:
        sockets = tornado.netutil.bind_sockets(args.port, args.address, backlog=defaults.HTTP_LISTEN_BACKLOG)
    except OSError as exc:
        print(f"dtf-dashboard: cannot listen on {args.address}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sockets[0].getsockname()[1]
    url = f"http://{args.address}:{port}/"
    application = Application(DirectoryHandler(filename=str(app), argv=app_args))
    allowed = webauth.allowed_hosts(args.allow_host, args.address)
    origins = sorted({f"{args.address}:{port}"} | {f"{name}:{port}" for name in allowed if ":" not in name})
    loop = IOLoop.current()
    tornado_app = GuardedBokeh(
        {"/": application},
        extra_websocket_origins=origins,
        absolute_url=url,
        include_headers=[],  # the session token in the page carries no header or cookie (ours included)
        include_cookies=[],
        log_function=_log_request,
        token=token,
        port=port,
        allowed=allowed,
        tls=False,
    )
    http_server = httpserver.GuardedHTTPServer(tornado_app)
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
    log.info("dashboard at %s (broker API %s); open it with ?token=<the API token>", url, args.http)
    loop.start()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
