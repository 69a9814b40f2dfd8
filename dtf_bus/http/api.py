"""The HTTP API and WebSocket, served by tornado inside the broker process (``dtf-broker --http``).

Tornado runs its own IOLoop on a thread of its own, so a slow HTTP client never delays the
broker loop. Handlers never touch broker state: they read the snapshot the
:class:`~dtf_bus.monitor.monitor.Monitor` swaps in every tick, history through a DuckDB cursor of their
own (the broker process is the file's only writer, so other processes read history here), and
they submit jobs through a :class:`~dtf_bus.client.Client` owned by one executor thread, as any
other client would (ZeroMQ sockets are not thread-safe: one per thread).

Handlers by concept: :mod:`~dtf_bus.http.metrics` (status, workers, metrics, anomalies,
Prometheus), :mod:`~dtf_bus.http.tasks`, :mod:`~dtf_bus.http.jobs` (history of runs),
:mod:`~dtf_bus.http.websocket`; this module serves them and guards every request.

Every JSON answer has one envelope: ``{"ok": true, "data": ..., "meta": {...}, "ts": ...}`` or
``{"ok": false, "error": {"status": 400, "message": "..."}, "ts": ...}``.

WebSocket ``/ws``: send ``{"action": "subscribe", "channel": C}`` with C one of
``system_metrics``, ``workers``, ``tasks``, ``anomalies`` (``unsubscribe`` undoes it); you get
``{"channel": C, "event": "subscribed"}``, the current value where there is one, and then
``{"channel": C, "data": {"timestamp": ..., ...}}`` as things change (``metrics`` for the
metric channels, ``event`` for tasks, ``anomaly`` for anomalies). The monitor hands changes
over from the broker thread through a bounded buffer and one ``add_callback`` per batch; a client
whose unsent messages pass ``WEBSOCKET_MAX_PENDING_BYTES`` is cut off (close 1008).

Who may ask (:mod:`dtf_bus.http.auth`): every request needs the broker's token (``<db>.api-token``)
or an ``--api-keys`` key, names this server in its Host header, and, when it changes state or
opens a WebSocket, comes from no other Origin; bodies are JSON or TOML. ``/healthz`` alone stays
open (it says only ``ok``), for probes. Query strings are logged with credentials masked.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import tornado.netutil
import tornado.web
from prometheus_client import CollectorRegistry
from tornado.ioloop import IOLoop

from dtf_bus import defaults
from dtf_bus.broker.hooks import BrokerHook, BrokerView
from dtf_bus.client import BrokerUnreachable, Client, ClientError
from dtf_bus.http import auth as webauth
from dtf_bus.http import jobs as api_jobs
from dtf_bus.http import metrics as api_metrics
from dtf_bus.http import server as httpserver
from dtf_bus.http import tasks as api_tasks
from dtf_bus.http.handler import ApiError, Handler, parse_duration  # noqa: F401 (parse_duration: its old home)
from dtf_bus.http.websocket import CHANNELS, WebSocket
from dtf_bus.monitor import gauges as queue_gauges
from dtf_bus.monitor.monitor import Monitor
from dtf_bus.security import apikeys

log = logging.getLogger("dtf.api")

MAX_BODY_BYTES = 16 * 1024 * 1024


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1; port 0 picks a free one)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--http: expected HOST:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--http: port must be 0-65535, got {number}")
    host = host.removeprefix("[").removesuffix("]")
    return host or defaults.HTTP_HOST, number


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Only failures reach the broker's log (a dashboard polling every second would drown it),
    with credentials in the query string masked."""
    status = handler.get_status()
    if status >= 400:
        request = handler.request
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%d %s %s (%s)",
            status,
            request.method,
            webauth.redact_uri(request.uri or ""),
            request.remote_ip,
        )


class HealthHandler(tornado.web.RequestHandler):
    """Open to probes (Kubernetes sends no credentials); says nothing but that the API answers."""

    def initialize(self, api: HttpApi) -> None:
        pass

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish("ok\n")


class IndexHandler(Handler):
    def get(self) -> None:
        self.reply({"endpoints": [spec_[0] for spec_ in ROUTES], "websocket": "/ws", "channels": list(CHANNELS)})


ROUTES: list[tuple[str, type]] = [
    *api_metrics.ROUTES[:3],  # /api/status, /api/workers, /api/workers/performance
    *api_tasks.ROUTES,  # /api/tasks[/ID]
    *api_jobs.ROUTES,  # /api/jobs[/ID], /api/compare, /api/flaky, /api/tests/history, /api/benchmarks
    *api_metrics.ROUTES[3:],  # /api/metrics/..., /api/anomalies, /metrics
    ("/ws", WebSocket),
    ("/healthz", HealthHandler),
    ("/", IndexHandler),
    ("/api", IndexHandler),
]


class NotFound(Handler):
    def prepare(self) -> None:
        super().prepare()  # who may not use the API learns nothing of it, not even what is missing
        raise ApiError(404, f"no such endpoint {self.request.path!r} (GET / lists them)")


@dataclass
class HttpOptions:
    """How the API is served and guarded (dtf-broker's ``--http-*`` flags)."""

    token_file: Path  # the generated token, made on first start (webauth.load_or_create_token)
    api_keys: str | None = None  # --api-keys FILE: named keys with roles, beside the token
    allow_hosts: tuple[str, ...] = ()  # Host names served beyond loopback and the bound address
    cert: str | None = None  # --http-cert / --http-key: HTTPS
    key: str | None = None
    max_connections: int = defaults.HTTP_MAX_CONNECTIONS
    ws_max_pending: int = defaults.WEBSOCKET_MAX_PENDING_BYTES


class HttpApi(BrokerHook):
    """The tornado server and its thread; a broker hook so that it stops with the broker."""

    def __init__(
        self,
        monitor: Monitor,
        host: str,
        port: int,
        broker_endpoint: str,
        options: HttpOptions,
    ) -> None:
        self.options = options
        self.token = webauth.load_or_create_token(options.token_file)
        self.token_file = Path(options.token_file)
        self.api_keys = apikeys.ApiKeys(options.api_keys) if options.api_keys else None
        self.allowed_hosts = webauth.allowed_hosts(options.allow_hosts, host)
        self.ssl_context = httpserver.tls_context(options.cert, options.key)
        if options.ws_max_pending < 1024:
            raise ValueError(f"--ws-max-pending-bytes must be at least 1024, got {options.ws_max_pending}")
        self.ws_max_pending = options.ws_max_pending
        self.ws_max_clients = defaults.WEBSOCKET_MAX_CLIENTS
        self.monitor = monitor
        self.host = host
        self.port = port
        self.broker_endpoint = broker_endpoint
        self.clients: set[WebSocket] = set()
        self.prometheus = CollectorRegistry(auto_describe=False)
        self.prometheus.register(api_metrics.SnapshotCollector(monitor))
        self._wanted: frozenset[str] = frozenset()  # channels some client wants; read on the broker thread
        self._outbox: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=defaults.WEBSOCKET_QUEUE)
        self._flush_scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dtf-api-client")
        self._readers = ThreadPoolExecutor(max_workers=defaults.HTTP_READERS, thread_name_prefix="dtf-api-read")
        self._local = threading.local()
        self._loop: IOLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    @property
    def open_url(self) -> str:
        """The ready-to-open URL: a browser that opens it keeps the token as a cookie."""
        return f"{self.url}/api?token={self.token}"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Bind now (a busy port fails here, in the caller), then serve on a thread."""
        sockets = tornado.netutil.bind_sockets(self.port, self.host, backlog=defaults.HTTP_LISTEN_BACKLOG)
        self.port = sockets[0].getsockname()[1]
        self.monitor.listeners.append(self.deliver)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sockets),), name="dtf-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"HTTP API did not start: {self._error}")
        log.info(
            "HTTP API on %s (WebSocket %s/ws); its token is in %s: open %s/api?token=TOKEN",
            self.url,
            self.url.replace("http", "ws", 1),
            self.token_file,
            self.url,
        )

    async def _serve(self, sockets: list) -> None:
        try:
            self._loop = IOLoop.current()
            self._stopped = asyncio.Event()
            app = tornado.web.Application(
                [(path, handler, {"api": self}) for path, handler in ROUTES],
                default_handler_class=NotFound,
                default_handler_args={"api": self},
                websocket_ping_interval=10,
                log_function=_log_request,
            )
            server = httpserver.GuardedHTTPServer(
                app,
                max_connections=self.options.max_connections,
                ssl_context=self.ssl_context,
                max_body_size=MAX_BODY_BYTES,
            )
            server.add_sockets(sockets)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stopped.wait()
        server.stop()
        for client in list(self.clients):
            client.close(1001, "broker stopping")
        await server.close_all_connections()

    def on_stop(self, broker: BrokerView) -> None:
        self.close()

    def close(self) -> None:
        if self.deliver in self.monitor.listeners:
            self.monitor.listeners.remove(self.deliver)
        if self._loop is not None and self._stopped is not None:
            self._loop.add_callback(self._stopped.set)
        if self._thread is not None:
            self._thread.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)

    def guard(self, handler: tornado.web.RequestHandler, needed: str) -> str:
        """Refuse a request (webauth's checks) unless it may do what needs role ``needed``;
        returns who it is (``api:token``, ``api:<key id>``), which a submitted job records.
        A browser that brought the token in the query string gets it back as a cookie."""
        request = handler.request
        try:
            webauth.check_host(request, self.allowed_hosts)
            webauth.check_origin(request)
        except webauth.Refused as exc:
            raise ApiError(exc.status, exc.message) from None
        key, where = webauth.presented_credential(request, self.port)
        if webauth.matches(key, self.token):
            who, role = "api:token", "admin"
        else:
            found = self.api_keys.identify(key) if self.api_keys is not None else None
            if found is None:
                why = "unknown API token or key" if key else "missing API token"
                raise ApiError(
                    401,
                    f"{why}: send 'Authorization: Bearer TOKEN' or open {self.url}/api?token=TOKEN "
                    f"(the token is in {self.token_file} on the broker's machine)",
                    {"WWW-Authenticate": 'Bearer realm="dtf"'},
                )
            who, role = f"api:{found[0]}", found[1]
        if not apikeys.ApiKeys.allows(role, needed):
            raise ApiError(403, f"this needs an {needed} key; the key sent is a {role} key")
        try:
            webauth.check_body_type(request)
        except webauth.Refused as exc:
            raise ApiError(exc.status, exc.message) from None
        if where == "query" and who == "api:token" and request.method == "GET":
            handler.set_cookie(
                webauth.cookie_name(self.port),
                self.token,
                httponly=True,
                samesite="Strict",
                secure=self.ssl_context is not None,
                path="/",
            )
        return who

    # ------------------------------------------------------ client requests

    async def call(self, fn: Any) -> Any:
        """Run ``fn(client)`` on the executor thread that owns this API's broker client."""

        def run() -> Any:
            client = getattr(self._local, "client", None)
            if client is None:
                client = self._local.client = Client(self.broker_endpoint)
            return fn(client)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except BrokerUnreachable as exc:
            raise ApiError(503, str(exc)) from None
        except ClientError as exc:
            raise ApiError(404 if str(exc).startswith("unknown job") else 400, str(exc)) from None

    async def read(self, fn: Callable[[], Any]) -> Any:
        """Run a DuckDB read on the reader pool; a store not yet created is a 503."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, fn)
        except duckdb.CatalogException as exc:
            raise ApiError(503, f"results store not ready: {exc}") from None

    # ---------------------------------------------------------- WebSocket

    def resubscribe(self) -> None:
        """Recompute which channels anyone wants (IOLoop thread); the broker thread reads it."""
        self._wanted = frozenset(c for client in self.clients for c in client.channels)

    def deliver(self, channel: str, data: dict[str, Any]) -> None:
        """Monitor listener, on the broker thread: buffer, and wake the IOLoop once per batch."""
        if channel not in self._wanted or self._loop is None:
            return
        self._outbox.append((channel, data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.add_callback(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._outbox:
            channel, data = self._outbox.popleft()
            text = json.dumps({"channel": channel, "data": data}, default=str)
            for client in list(self.clients):
                if channel in client.channels:
                    client.send(text)


def install(
    broker: BrokerView,
    monitor: Monitor,
    http: str | None = None,
    options: HttpOptions | None = None,
) -> HttpApi | None:
    """Given ``HOST:PORT``, serve the HTTP API over ``monitor`` (returned), guarded by the token
    in ``options.token_file`` (made on first start) and any ``--api-keys``. The monitor itself
    is wired by :mod:`dtf_bus.broker.app`."""
    if not http:
        return None
    host, port = parse_listen(http)
    options = options or HttpOptions(token_file=webauth.token_path(broker.store.path))
    api = HttpApi(monitor, host, port, broker.endpoint, options)
    api.prometheus.register(queue_gauges.QueueGauges(broker.scheduler.queue))  # read per scrape, off the loop
    if api.ssl_context is None and host not in webauth.LOOPBACK_HOSTS:
        log.warning(
            "SECURITY: the HTTP API on %s is served without TLS: its token and keys cross the network in "
            "clear. Use --http-cert FILE --http-key FILE, or bind to 127.0.0.1.",
            api.url,
        )
    api.start()
    broker.hooks.append(api)
    return api
