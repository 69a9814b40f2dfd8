"""The HTTP API and WebSocket, served by tornado inside the broker process (``dtf-broker --http``).

Tornado runs its own IOLoop on a thread of its own, so a slow HTTP client never delays the
broker loop. Handlers never touch broker state: they read the snapshot the
:class:`~dtf_bus.monitor.Monitor` swaps in every tick, history through a DuckDB cursor of their
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
over from the broker thread through a bounded buffer and one ``add_callback`` per batch.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import duckdb
import tornado.netutil
import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from dtf_bus import apikeys, defaults, score, security, spec
from dtf_bus.client import BrokerUnreachable, Client, ClientError
from dtf_bus.hooks import BrokerHook
from dtf_bus.monitor import SYSTEM_METRICS, WORKER_METRICS, Monitor

if TYPE_CHECKING:
    from dtf_bus.broker import Broker

log = logging.getLogger("dtf.api")

CHANNELS = ("system_metrics", "workers", "tasks", "anomalies")
MAX_HISTORY_POINTS = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, name: str) -> float:
    """``500ms``, ``1s``, ``5m``, ``2h``, ``1d`` or plain seconds, as seconds > 0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", text or "")
    if not match:
        raise ValueError(f"{name}: expected a duration like 500ms, 1s, 5m, 2h or 1d, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if value <= 0:
        raise ValueError(f"{name}: must be greater than zero, got {text!r}")
    return value


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1; port 0 picks a free one)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--http: expected HOST:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--http: port must be 0-65535, got {number}")
    return host or defaults.HTTP_HOST, number


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Only failures reach the broker's log; a dashboard polling every second would drown it."""
    status = handler.get_status()
    if status >= 500:
        log.warning("%d %s %s", status, handler.request.method, handler.request.uri)
    elif status >= 400:
        log.info("%d %s %s", status, handler.request.method, handler.request.uri)


class ApiError(tornado.web.HTTPError):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, reason=message.splitlines()[0][:200] if message else None)
        self.message = message
        self.headers = headers or {}  # sent with the error (tornado clears headers set before it)


def _envelope_error(status: int, message: str) -> str:
    return json.dumps({"ok": False, "error": {"status": status, "message": message}, "ts": time.time()})


class Handler(tornado.web.RequestHandler):
    def initialize(self, api: HttpApi) -> None:
        self.api = api
        self.monitor = api.monitor

    def prepare(self) -> None:
        self.api.authorize(self, "read" if self.request.method in ("GET", "HEAD") else "admin")

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def reply(self, data: Any, status: int = 200, **meta: Any) -> None:
        self.set_status(status)
        self.finish(json.dumps({"ok": True, "data": data, "meta": meta, "ts": time.time()}, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or self._reason
        self.set_header("Content-Type", "application/json; charset=utf-8")
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        self.finish(_envelope_error(status_code, message))

    def number(self, name: str, default: float | None, minimum: float = 0) -> float | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(400, f"{name}: expected a number, got {raw!r}") from None
        if value < minimum:
            raise ApiError(400, f"{name}: must be at least {minimum:g}, got {raw!r}")
        return value

    def duration(self, name: str, default: str) -> float:
        try:
            return parse_duration(self.get_query_argument(name, default), name)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def query(self, sql: str, params: list[Any]) -> list[tuple]:
        """Read the results store on this thread's own cursor."""
        cursor = self.monitor.store.cursor()
        try:
            return cursor.execute(sql, params).fetchall()
        except duckdb.CatalogException as exc:
            raise ApiError(503, f"results store not ready: {exc}") from None
        finally:
            cursor.close()


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
        offset = int(self.number("offset", 0) or 0)
        limit = self.number("limit", None, minimum=1)
        page = rows[offset : offset + int(limit)] if limit else rows[offset:]
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


class TasksHandler(Handler):
    def get(self) -> None:
        where, params = [], []
        for arg, column in (("state", "state"), ("job", "job_id"), ("worker", "worker_id")):
            value = self.get_query_argument(arg, None)
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        limit = int(self.number("limit", 100, minimum=1))
        offset = int(self.number("offset", 0) or 0)
        sql = _TASK_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY submitted_at DESC, task_id LIMIT ? OFFSET ?"
        rows = self.query(sql, [*params, limit, offset])
        tasks = [_overlay(dict(zip(TASK_COLUMNS, r, strict=True)), self.monitor.task(r[0])) for r in rows]
        self.reply(tasks, limit=limit, offset=offset)


class TaskHandler(Handler):
    def get(self, task_id: str) -> None:
        live = self.monitor.task(task_id)
        rows = self.query(
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
                params=json.loads(r[12]) if r[12] else None,
                requires=json.loads(r[13]) if r[13] else None,
            )
        else:
            task = {c: live.get(c) for c in TASK_COLUMNS}
            task["attempts"] = live["attempt"]
        _overlay(task, live)
        attempts = self.query(
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
    def get(self, worker_id: str | None = None) -> None:
        known = WORKER_METRICS if worker_id else SYSTEM_METRICS
        names = [m.strip() for m in self.get_query_argument("metrics", ",".join(known[:3])).split(",") if m.strip()]
        if not names:
            raise ApiError(400, "metrics: name at least one metric")
        interval = self.duration("interval", "1s")
        duration = self.duration("duration", "5m")
        if duration / interval > MAX_HISTORY_POINTS:
            raise ApiError(400, f"duration/interval asks for over {MAX_HISTORY_POINTS} points; widen the interval")
        end = self.number("end", None)
        try:
            series = self.monitor.history(names, interval, duration, worker_id=worker_id, end=end)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except duckdb.CatalogException as exc:
            raise ApiError(503, f"results store not ready: {exc}") from None
        self.reply(
            {"interval": interval, "duration": duration, "series": series},
            worker_id=worker_id,
            retention=self.monitor.retention,
        )


class AnomaliesHandler(Handler):
    def get(self) -> None:
        limit = int(self.number("limit", 100, minimum=1))
        found = self.monitor.anomalies(since=self.number("since", None))
        for field in ("type", "severity", "subject"):
            value = self.get_query_argument(field, None)
            if value:
                found = [a for a in found if a[field] == value]
        self.reply(list(reversed(found[-limit:])), total=len(found))


class JobsHandler(Handler):
    async def post(self) -> None:
        body = self.request.body
        kind = self.request.headers.get("Content-Type", "")
        try:
            doc = tomllib.loads(body.decode()) if "toml" in kind else json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid {'TOML' if 'toml' in kind else 'JSON'}: {exc}") from None
        if isinstance(doc, list):
            doc = {"tasks": doc}
        if not isinstance(doc, dict) or "tasks" not in doc:
            raise ApiError(400, 'spec: expected {"name": ..., "tasks": [...]} or a list of tasks')
        name = doc.get("name", "api")
        if not isinstance(name, str):
            raise ApiError(400, "spec: 'name' must be a string")
        try:
            tasks = spec.validate(doc["tasks"])
        except spec.SpecError as exc:
            raise ApiError(400, f"invalid spec: {exc}") from None
        job_id = await self.api.call(lambda client: client.submit(tasks, name=name))
        self.set_header("Location", f"/api/jobs/{job_id}")
        self.reply({"job_id": job_id, "total": len(tasks)}, status=201)


class JobHandler(Handler):
    async def get(self, job_id: str) -> None:
        self.reply(await self.api.call(lambda client: client.status(job_id)))


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
        self.pending = 0

    def prepare(self) -> None:
        self.api.authorize(self, "read", self.get_query_argument("api_key", None))

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
        """Write unless this client is too far behind (then it misses messages, never stalls us)."""
        if self.pending >= defaults.WEBSOCKET_QUEUE:
            return
        text = message if isinstance(message, str) else json.dumps(message, default=str)
        try:
            future = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return
        self.pending += 1
        future.add_done_callback(self._written)

    def _written(self, future: Any) -> None:
        self.pending -= 1


ROUTES: list[tuple[str, type]] = [
    ("/api/status", StatusHandler),
    ("/api/workers", WorkersHandler),
    ("/api/workers/performance", PerformanceHandler),
    ("/api/tasks", TasksHandler),
    ("/api/tasks/([^/]+)", TaskHandler),
    ("/api/jobs", JobsHandler),
    ("/api/jobs/([^/]+)", JobHandler),
    ("/api/metrics/system", SystemMetricsHandler),
    ("/api/metrics/workers", WorkerMetricsHandler),
    ("/api/metrics/load_balancer", LoadBalancerHandler),
    ("/api/metrics/history/system", HistoryHandler),
    ("/api/metrics/history/workers/([^/]+)", HistoryHandler),
    ("/api/anomalies", AnomaliesHandler),
    ("/metrics", PrometheusHandler),
    ("/ws", WebSocket),
    ("/", IndexHandler),
    ("/api", IndexHandler),
]


class NotFound(Handler):
    def prepare(self) -> None:
        raise ApiError(404, f"no such endpoint {self.request.path!r} (GET / lists them)")


class HttpApi(BrokerHook):
    """The tornado server and its thread; a broker hook so that it stops with the broker."""

    def __init__(
        self,
        monitor: Monitor,
        host: str,
        port: int,
        broker_endpoint: str,
        api_keys: apikeys.ApiKeys | None = None,
    ) -> None:
        self.api_keys = api_keys  # None: no keys asked (the API then stays on loopback)
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
        self._local = threading.local()
        self._loop: IOLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Bind now (a busy port fails here, in the caller), then serve on a thread."""
        sockets = tornado.netutil.bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        self.monitor.listeners.append(self.deliver)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sockets),), name="dtf-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"HTTP API did not start: {self._error}")
        log.info("HTTP API on %s (WebSocket %s/ws)", self.url, self.url.replace("http", "ws", 1))

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
            server = HTTPServer(app, max_body_size=MAX_BODY_BYTES)
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

    def on_stop(self, broker: Broker) -> None:
        self.close()

    def close(self) -> None:
        if self.deliver in self.monitor.listeners:
            self.monitor.listeners.remove(self.deliver)
        if self._loop is not None and self._stopped is not None:
            self._loop.add_callback(self._stopped.set)
        if self._thread is not None:
            self._thread.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def authorize(self, handler: tornado.web.RequestHandler, needed: str, query_key: str | None = None) -> None:
        """Refuse a request without a key of role ``needed`` (dtf_bus.apikeys): 401, or 403."""
        if self.api_keys is None:
            return
        refusal = self.api_keys.check(apikeys.presented_key(handler.request.headers, query_key), needed)
        if refusal is not None:
            status, message = refusal
            raise ApiError(status, message, {"WWW-Authenticate": 'Bearer realm="dtf"'} if status == 401 else None)

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
    broker: Broker,
    http: str | None = None,
    retention: float = defaults.METRICS_RETENTION,
    api_keys: str | None = None,
) -> HttpApi | None:
    """Add monitoring to ``broker`` and, given ``HOST:PORT``, the HTTP API (returned); with
    ``api_keys`` (a file of dtf_bus.apikeys) every request needs a key."""
    if retention <= 0:
        raise ValueError(f"--metrics-retention must be greater than zero, got {retention:g}")
    monitor = Monitor(retention=retention)
    monitor.attach(broker)
    broker.hooks.append(monitor)
    if not http:
        return None
    host, port = parse_listen(http)
    keys = apikeys.ApiKeys(api_keys) if api_keys else None
    if keys is None:
        where = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        security.warn_if_exposed([where], "the HTTP API", "Use --api-keys FILE (dtf keys api-key create)")
    api = HttpApi(monitor, host, port, broker.endpoint, keys)
    api.start()
    broker.hooks.append(api)
    return api
