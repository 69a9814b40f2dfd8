"""WebSocket ``/ws``: subscribe to the monitor's channels and get their changes pushed.

Send ``{"action": "subscribe", "channel": C}`` with C one of ``system_metrics``, ``workers``,
``tasks``, ``anomalies`` (``unsubscribe`` undoes it); you get ``{"channel": C, "event":
"subscribed"}``, the current value where there is one, and then ``{"channel": C, "data":
{"timestamp": ..., ...}}`` as things change. The API (:class:`dtf_bus.http.api.HttpApi`) hands
changes over from the broker thread; a client whose unsent messages pass
``WEBSOCKET_MAX_PENDING_BYTES`` is cut off (close 1008).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.websocket
from tornado.ioloop import IOLoop

from dtf_bus.http import auth as webauth
from dtf_bus.http.handler import ApiError, Handler

log = logging.getLogger("dtf.api")

CHANNELS = ("system_metrics", "workers", "tasks", "anomalies")


class WebSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, api: Any) -> None:
        """``api``: the :class:`dtf_bus.http.api.HttpApi` serving this connection."""
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
