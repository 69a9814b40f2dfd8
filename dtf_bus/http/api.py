"""The HTTP API and WebSocket, served by tornado inside the broker process (``dtf-broker --http``).

Tornado runs its own IOLoop on a thread of its own, so a slow HTTP client never delays the
broker loop. Handlers never touch broker state: they read the snapshot the
:class:`~dtf_bus.monitor.monitor.Monitor` swaps in every tick, history through a DuckDB cursor of their
own (the broker process is the file's only writer, so other processes read history here), and
they submit jobs through a :class:`~dtf_bus.client.Client` owned by one executor thread, as any
other client would (ZeroMQ sockets are not thread-safe: one per thread).

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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import tornado.netutil
import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.ioloop import IOLoop

from dtf_bus import defaults, spec
from dtf_bus.broker.hooks import BrokerHook, BrokerView
from dtf_bus.client import BrokerUnreachable, Client, ClientError
from dtf_bus.http import auth as webauth
from dtf_bus.http import jobs as api_jobs
from dtf_bus.http import server as httpserver
from dtf_bus.http.handler import ApiError, Handler, parse_duration  # noqa: F401 (parse_duration: its old home)
from dtf_bus.monitor import gauges as queue_gauges
from dtf_bus.monitor import score
from dtf_bus.monitor.monitor import SYSTEM_METRICS, WORKER_METRICS, Monitor
from dtf_bus.security import apikeys

log = logging.getLogger("dtf.api")

CHANNELS = ("system_metrics", "workers", "tasks", "anomalies")
MAX_HISTORY_POINTS = 10_000
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


class StatusHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        system = snap["system"]
        self.reply(
            {
                **self.monitor.info,
                "http": self.api.url,
                "uptime_s": round(time.time() - self.monitor.started_at, 3),
                "workers": system.get("workers_total", 0),
                "queued": system.get("queued", 0),
                "running": system.get("running", 0),
                # Queued work no live worker can run, per requirement, with the broker's reasons.
                "blocked": system.get("blocked_reasons", []),
                "anomalies": self.monitor.anomaly_count,
                "metrics_at": snap["ts"],
                "system": system,
            }
        )


class WorkersHandler(Handler):
    def get(self) -> None:
        rows = sorted(self.monitor.snapshot["workers"].values(), key=lambda w: w["worker_id"])
        status = self.get_query_argument("status", None)
        if status:
            rows = [w for w in rows if w["status"] == status]
        offset, limit = self.page(None)
        page = rows[offset : offset + limit] if limit else rows[offset:]
        self.reply(page, total=len(rows), offset=offset, limit=limit)


class PerformanceHandler(Handler):
    def get(self) -> None:
        workers = [
            {
                "worker_id": w["worker_id"],
                "score": w["score"],
                "reliability": w["reliability"],
                "speed": w["speed"],
                "availability": w["availability"],
                "completed": w["completed"],
                "failed": w["failed"],
                "duration_mean": w["duration_mean"],
            }
            for w in self.monitor.snapshot["workers"].values()
        ]
        workers.sort(key=lambda w: (-w["score"], w["worker_id"]))
        self.reply({"formula": score.FORMULA, "weights": score.WEIGHTS, "workers": workers})


TASK_COLUMNS = (
    "task_id",
    "job_id",
    "name",
    "plugin",
    "state",
    "worker_id",
    "attempts",
    "submitted_at",
    "started_at",
    "ended_at",
    "error",
)
_TASK_SELECT = (
    "SELECT task_id, job_id, name, plugin, state, worker_id, attempts, epoch(submitted_at), epoch(started_at), "
    "epoch(ended_at), error FROM tasks"
)


def _overlay(row: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The store lags the broker by up to one flush; the monitor's live view is fresher."""
    if live is not None:
        row.update(
            state=live["state"],
            worker_id=live["worker_id"],
            attempts=live["attempt"],
            started_at=live["started_at"],
            ended_at=live["ended_at"],
            error=live["error"],
        )
    return row


def _served_params(params: Any) -> Any:
    """What the API shows of a task's params: ``env`` names with their values as ``***`` (the
    store keeps them so already; this holds for rows written before it did)."""
    return spec.redact_env(params) if isinstance(params, dict) else params


class TasksHandler(Handler):
    async def get(self) -> None:
        where, params = [], []
        for arg, column in (("state", "state"), ("job", "job_id"), ("worker", "worker_id")):
            value = self.get_query_argument(arg, None)
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        offset, limit = self.page(100)
        sql = _TASK_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY submitted_at DESC, task_id LIMIT ? OFFSET ?"
        rows = await self.query(sql, [*params, limit, offset])
        tasks = [_overlay(dict(zip(TASK_COLUMNS, r, strict=True)), self.monitor.task(r[0])) for r in rows]
        self.reply(tasks, limit=limit, offset=offset)


class TaskHandler(Handler):
    async def get(self, task_id: str) -> None:
        live = self.monitor.task(task_id)
        rows = await self.query(
            "SELECT task_id, job_id, name, plugin, state, worker_id, attempts, epoch(submitted_at), "
            "epoch(started_at), epoch(ended_at), error, result, params, requires FROM tasks WHERE task_id = ?",
            [task_id],
        )
        if not rows and live is None:
            raise ApiError(404, f"unknown task {task_id!r}")
        if rows:
            r = rows[0]
            task = dict(zip(TASK_COLUMNS, r[:11], strict=True))
            task.update(
                result=json.loads(r[11]) if r[11] else None,
                params=_served_params(json.loads(r[12]) if r[12] else None),
                requires=json.loads(r[13]) if r[13] else None,
            )
        else:
            task = {c: live.get(c) for c in TASK_COLUMNS}
            task["attempts"] = live["attempt"]
        _overlay(task, live)
        attempts = await self.query(
            "SELECT attempt, worker_id, epoch(assigned_at), epoch(started_at), epoch(ended_at), outcome, stale, error "
            "FROM attempts WHERE task_id = ? ORDER BY attempt",
            [task_id],
        )
        task["history"] = [
            dict(
                zip(
                    ("attempt", "worker_id", "assigned_at", "started_at", "ended_at", "outcome", "stale", "error"),
                    a,
                    strict=True,
                )
            )
            for a in attempts
        ]
        self.reply(task, live=live is not None)


class SystemMetricsHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["system"], metrics_at=snap["ts"])


class WorkerMetricsHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["workers"], metrics_at=snap["ts"])


class LoadBalancerHandler(Handler):
    def get(self) -> None:
        snap = self.monitor.snapshot
        self.reply(snap["load_balancer"], metrics_at=snap["ts"])


class HistoryHandler(Handler):
    async def get(self, worker_id: str | None = None) -> None:
        known = WORKER_METRICS if worker_id else SYSTEM_METRICS
        names = [m.strip() for m in self.get_query_argument("metrics", ",".join(known[:3])).split(",") if m.strip()]
        if not names:
            raise ApiError(400, "metrics: name at least one metric")
        interval = self.duration("interval", "1s")
        duration = self.duration("duration", "5m")
        if duration / interval > MAX_HISTORY_POINTS:
            raise ApiError(400, f"duration/interval asks for over {MAX_HISTORY_POINTS} points; widen the interval")
        end = self.number("end", None, maximum=1e12)
        try:
            series = await self.api.read(lambda: self.monitor.history(names, interval, duration, worker_id, end))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self.reply(
            {"interval": interval, "duration": duration, "series": series},
            worker_id=worker_id,
            retention=self.monitor.retention,
        )


class AnomaliesHandler(Handler):
    def get(self) -> None:
        _, limit = self.page(100)
        found = self.monitor.anomalies(since=self.number("since", None, maximum=1e12))
        for field in ("type", "severity", "subject"):
            value = self.get_query_argument(field, None)
            if value:
                found = [a for a in found if a[field] == value]
        self.reply(list(reversed(found[-limit:])), total=len(found))


class PrometheusHandler(Handler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.api.prometheus))


class SnapshotCollector:
    """Prometheus view of the monitor's latest snapshot (gauges, plus counters for totals)."""

    COUNTERS = ("succeeded", "failed", "timed_out", "cancelled")

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self):
        snap = self.monitor.snapshot
        system = snap["system"]
        tasks = CounterMetricFamily("dtf_tasks_finished", "Tasks that reached a final state", labels=["state"])
        for state in self.COUNTERS:
            tasks.add_metric([state], system.get(state, 0) or 0)
        yield tasks
        yield CounterMetricFamily("dtf_anomalies", "Anomalies raised", value=system.get("anomalies_total", 0))
        for name in SYSTEM_METRICS:
            value = system.get(name)
            if name not in self.COUNTERS and value is not None:
                yield GaugeMetricFamily(f"dtf_{name}", f"dtf system metric {name}", value=value)
        per_worker = {
            m: GaugeMetricFamily(f"dtf_worker_{m}", f"per-worker {m}", labels=["worker_id"])
            for m in (
                *WORKER_METRICS,
                "reliability",
                "speed",
                "availability",
            )
        }
        for worker_id, row in snap["workers"].items():
            for m, family in per_worker.items():
                if row.get(m) is not None:
                    family.add_metric([worker_id], row[m])
        yield from per_worker.values()


class WebSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, api: HttpApi) -> None:
        self.api = api
        self.channels: set[str] = set()
        self.pending_bytes = 0  # written to tornado, not yet on the socket
        self.cut_off = False

    def prepare(self) -> None:
        self.api.guard(self, "read")
        if len(self.api.clients) >= self.api.ws_max_clients:
            raise ApiError(503, f"{self.api.ws_max_clients} WebSocket clients already connected; try again later")

    def check_origin(self, origin: str) -> bool:
        """Same origin only (tornado's default compares hosts; this also compares scheme and port)."""
        return webauth.origin_ok(self.request, origin)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        Handler.write_error(self, status_code, **kwargs)  # type: ignore[arg-type]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        Handler.log_exception(self, typ, value, tb)  # type: ignore[arg-type]

    def open(self) -> None:
        self.api.clients.add(self)

    def on_close(self) -> None:
        self.api.clients.discard(self)
        self.api.resubscribe()

    def on_message(self, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            action, channel = request["action"], request["channel"]
        except (ValueError, TypeError, KeyError):
            self.send({"error": 'expected {"action": "subscribe", "channel": ...}'})
            return
        if channel not in CHANNELS:
            self.send({"error": f"unknown channel {channel!r} (channels: {', '.join(CHANNELS)})"})
            return
        if action == "subscribe":
            self.channels.add(channel)
            self.api.resubscribe()
            self.send({"channel": channel, "event": "subscribed"})
            snap = self.api.monitor.snapshot
            if channel == "system_metrics" and snap["system"]:
                self.send({"channel": channel, "data": {"timestamp": snap["ts"], "metrics": snap["system"]}})
            elif channel == "workers" and snap["workers"]:
                self.send({"channel": channel, "data": {"timestamp": snap["ts"], "metrics": snap["workers"]}})
        elif action == "unsubscribe":
            self.channels.discard(channel)
            self.api.resubscribe()
            self.send({"channel": channel, "event": "unsubscribed"})
        else:
            self.send({"error": f"unknown action {action!r} (subscribe, unsubscribe)"})

    def send(self, message: dict[str, Any] | str) -> None:
        """Write, or cut this client off once its unsent bytes pass the cap: a reader that stalls
        (pongs or not) must not grow our memory, and a client that misses messages silently
        would show a wrong picture. Close 1008 tells it why."""
        if self.cut_off:
            return
        text = message if isinstance(message, str) else json.dumps(message, default=str)
        size = len(text)
        if self.pending_bytes + size > self.api.ws_max_pending:
            self.cut_off = True
            log.warning(
                "WebSocket client %s cut off: %d bytes unsent (cap %d)",
                self.request.remote_ip,
                self.pending_bytes,
                self.api.ws_max_pending,
            )
            self.close(1008, "too slow: messages unread past the byte cap")
            # The close frame queues behind what the client did not read; drop the connection
            # if it does not read it within tornado's close timeout either.
            IOLoop.current().call_later(5.0, self._abort)
            return
        try:
            future = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return
        self.pending_bytes += size
        future.add_done_callback(lambda done, n=size: self._written(done, n))

    def _written(self, future: Any, size: int) -> None:
        self.pending_bytes -= size
        if not future.cancelled():
            future.exception()  # retrieved: a cut-off client's unsent writes fail quietly, not as tracebacks

    def _abort(self) -> None:
        if self.ws_connection is not None:
            self.ws_connection.abort()


ROUTES: list[tuple[str, type]] = [
    ("/api/status", StatusHandler),
    ("/api/workers", WorkersHandler),
    ("/api/workers/performance", PerformanceHandler),
    ("/api/tasks", TasksHandler),
    ("/api/tasks/([^/]+)", TaskHandler),
    *api_jobs.ROUTES,  # /api/jobs[/ID], /api/compare, /api/flaky, /api/tests/history, /api/benchmarks
    ("/api/metrics/system", SystemMetricsHandler),
    ("/api/metrics/workers", WorkerMetricsHandler),
    ("/api/metrics/load_balancer", LoadBalancerHandler),
    ("/api/metrics/history/system", HistoryHandler),
    ("/api/metrics/history/workers/([^/]+)", HistoryHandler),
    ("/api/anomalies", AnomaliesHandler),
    ("/metrics", PrometheusHandler),
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
        self.prometheus.register(SnapshotCollector(monitor))
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
