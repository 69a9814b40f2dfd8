"""What every HTTP API handler shares: the guard, the JSON envelope, bounded query arguments.

Every JSON answer has one envelope: ``{"ok": true, "data": ..., "meta": {...}, "ts": ...}`` or
``{"ok": false, "error": {"status": 400, "message": "..."}, "ts": ...}``. A handler's ``prepare``
asks the API's guard (:meth:`dtf_bus.http.api.HttpApi.guard`) before anything else runs: a GET needs a
read key, anything else an admin key. DuckDB reads go through :meth:`Handler.query` (or
``self.api.read``), on the API's reader pool, never on tornado's loop.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any

import tornado.web

from dtf_bus import defaults
from dtf_bus.http import auth as webauth

log = logging.getLogger("dtf.api")

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


class ApiError(tornado.web.HTTPError):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, reason=message.splitlines()[0][:200] if message else None)
        self.message = message
        self.headers = headers or {}  # sent with the error (tornado clears headers set before it)


def envelope_error(status: int, message: str) -> str:
    return json.dumps({"ok": False, "error": {"status": status, "message": message}, "ts": time.time()})


class Handler(tornado.web.RequestHandler):
    def initialize(self, api: Any) -> None:
        """``api``: the :class:`dtf_bus.http.api.HttpApi` serving this request."""
        self.api = api
        self.monitor = api.monitor
        self.who = ""  # "api:token" or "api:<key id>", once authorised

    def prepare(self) -> None:
        self.who = self.api.guard(self, "read" if self.request.method in webauth.SAFE_METHODS else "admin")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Tornado's own logs the request's full URI (a ``?token=`` included); ours masks it."""
        if isinstance(value, tornado.web.HTTPError):
            return  # answered with its status; _log_request has the line
        log.error(
            "uncaught exception answering %s %s",
            self.request.method,
            webauth.redact_uri(self.request.uri or ""),
            exc_info=(typ, value, tb),
        )

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
        self.finish(envelope_error(status_code, message))

    def number(self, name: str, default: float | None, minimum: float = 0, maximum: float = 1e15) -> float | None:
        """A finite query number in [minimum, maximum] (``inf``, ``nan`` and ``1e300`` are 400s)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(400, f"{name}: expected a number, got {raw[:40]!r}") from None
        if not math.isfinite(value):
            raise ApiError(400, f"{name}: expected a finite number, got {raw[:40]!r}")
        if value < minimum:
            raise ApiError(400, f"{name}: must be at least {minimum:g}, got {raw[:40]!r}")
        if value > maximum:
            raise ApiError(400, f"{name}: must be at most {maximum:g}, got {raw[:40]!r}")
        return value

    def page(self, default_limit: int | None) -> tuple[int, int | None]:
        """``offset`` and ``limit`` of a listing, bounded."""
        offset = int(self.number("offset", 0, maximum=defaults.API_MAX_OFFSET) or 0)
        limit = self.number("limit", default_limit, minimum=1, maximum=defaults.API_MAX_PAGE)
        return offset, None if limit is None else int(limit)

    def duration(self, name: str, default: str) -> float:
        try:
            return parse_duration(self.get_query_argument(name, default), name)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    async def query(self, sql: str, params: list[Any]) -> list[tuple]:
        """Read the results store on the reader pool (never on the IOLoop: a slow query would
        hold up every WebSocket's delivery), on that thread's own cursor."""
        store = self.monitor.store
        return await self.api.read(lambda: store.read(lambda cursor: cursor.execute(sql, params).fetchall()))
