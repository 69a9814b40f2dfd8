"""Who may use the HTTP API and the dashboard: the generated token, Host allow-list, Origin check.

Any web page a local user opens can send requests to ``127.0.0.1``; a page on a rebinding name
(``attacker.example`` resolving to 127.0.0.1) can even read the answers. So, whenever the API or
the dashboard is served:

- a **token** is required. It is generated at first start into a 0600 file beside the DuckDB
  file (``<db>.api-token``) and reused later; ``dtf up`` prints ``http://HOST:PORT/api?token=...``
  as Jupyter does. A browser that opens that URL gets the token back as a cookie (HttpOnly,
  SameSite=Strict), so its later requests and WebSockets need no query string; scripts send
  ``Authorization: Bearer TOKEN``. The token acts as an admin key beside ``--api-keys`` roles.
- the **Host** header must name this server: loopback names and configured ones only, so a
  rebinding name gets 403 (never a redirect);
- a state-changing request or a WebSocket upgrade from another **Origin** gets 403;
- request bodies must say ``application/json`` or ``application/toml`` (415 otherwise), which a
  cross-site HTML form or a ``text/plain`` "simple request" cannot.

The checks are plain functions of a tornado request so that the API (``dtf_bus.http.api``) and the
dashboard (``dtf_bus.dashboard``) share them.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from tornado.httputil import HTTPServerRequest, split_host_and_port

from dtf_bus import defaults

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_TYPES = frozenset({"application/json", "application/toml"})
# Query parameters whose values are credentials: never logged.
SECRET_PARAMS = frozenset({"token", "api_key", "apikey", "key", "access_token", "bokeh-token"})


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and what to do."""


class Refused(Exception):
    """A request refused before it reaches a handler: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ the token


def token_path(db: str | Path) -> Path:
    """Where the API token of the broker on ``db`` lives: beside it, ``<db>.api-token``."""
    db = Path(db)
    return db.with_name(db.name + defaults.API_TOKEN_SUFFIX)


def load_or_create_token(path: str | Path) -> str:
    """The token in ``path``; made first if there is none (0600 from the start, whole or absent).

    The token is written to a private temporary file and linked into place, so no reader ever
    sees the file empty or readable by others, and two brokers starting at once agree on one.
    """
    path = Path(path)
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        try:
            os.link(tmp, path)  # atomic, and fails if another process made one meanwhile
        except FileExistsError:
            return read_token(path)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def read_token(path: str | Path) -> str:
    """The token in ``path``, refused if others could read it (it grants admin)."""
    path = Path(path)
    st = path.stat()  # FileNotFoundError is the caller's to handle
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"{path}: the API token file is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "chmod 600 it, or delete it to make a new token"
        )
    token = path.read_text().strip()
    if len(token) < 16 or not re.fullmatch(r"[A-Za-z0-9_\-.~]+", token):
        raise TokenFileError(f"{path}: not an API token file (delete it to make a new token)")
    return token


def matches(presented: str | None, token: str) -> bool:
    return bool(presented) and hmac.compare_digest(presented.encode(), token.encode())


def cookie_name(port: int) -> str:
    """Cookies ignore ports: two servers on one host each need their own name."""
    return f"dtf-token-{port}"


def presented_credential(request: HTTPServerRequest, port: int) -> tuple[str | None, str]:
    """The token or key a request carries, and where: ``Authorization: Bearer``, ``X-API-Key``,
    ``?token=`` / ``?api_key=`` (browsers open WebSockets without headers), or our cookie."""
    auth = request.headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, "header"
    if auth[:6].lower() == "token ":  # Jupyter's form
        return auth[6:].strip() or None, "header"
    if request.headers.get("X-API-Key"):
        return request.headers["X-API-Key"].strip(), "header"
    for name in ("token", "api_key"):
        values = request.query_arguments.get(name)
        if values:
            return values[-1].decode(errors="replace").strip() or None, "query"
    morsel = request.cookies.get(cookie_name(port))
    if morsel is not None and morsel.value:
        return morsel.value, "cookie"
    return None, "none"


# ------------------------------------------------------- Host, Origin, body type


def allowed_hosts(extra: Iterable[str] = (), bind_host: str | None = None) -> frozenset[str]:
    """Loopback names, the configured ones, and the address bound to when it is a specific one."""
    names = {_bare(n) for n in extra if n}
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):
        names.add(_bare(bind_host))
    return frozenset(LOOPBACK_HOSTS | names)


def _bare(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def host_of(netloc: str) -> str:
    """``[::1]:8585`` -> ``::1``; ``Example.COM.`` -> ``example.com``."""
    host, _ = split_host_and_port(netloc.lower())
    return _bare(host)


def check_host(request: HTTPServerRequest, allowed: frozenset[str]) -> None:
    """403 unless the Host header names this server (DNS rebinding gets no answer)."""
    if "*" in allowed:
        return
    host = host_of(request.host or "")
    if host not in allowed:
        raise Refused(
            403,
            f"Host {_printable(host)!r} is not served here (allowed: {', '.join(sorted(allowed))}; "
            "add a name with --http-allow-host)",
        )


def origin_ok(request: HTTPServerRequest, origin: str | None) -> bool:
    """No Origin (a script, curl) or the same origin as the request; ``null`` and others refused."""
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "none") in ("same-origin", "none")
    parsed = urllib.parse.urlsplit(origin.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    return parsed.scheme == request.protocol and parsed.netloc.lower() == (request.host or "").lower()


def check_origin(request: HTTPServerRequest) -> None:
    """403 for a state-changing request sent by another site's page."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if not origin_ok(request, origin):
        raise Refused(403, f"cross-site request refused (Origin {_printable(origin or 'missing')!r})")


def check_body_type(request: HTTPServerRequest) -> None:
    """415 unless a body-carrying request says JSON or TOML (HTML forms and text/plain cannot)."""
    if request.method in SAFE_METHODS or request.method == "DELETE":
        return
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media not in BODY_TYPES:
        raise Refused(415, f"Content-Type must be application/json or application/toml, got {_printable(media)!r}")


# ------------------------------------------------------------------ logging


def redact_uri(uri: str) -> str:
    """``/api?token=abc&x=1`` -> ``/api?token=***&x=1``: credentials never reach a log line."""
    path, sep, query = uri.partition("?")
    if not sep:
        return _printable(path)
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    shown = "&".join(
        f"{urllib.parse.quote(k)}=" + ("***" if k.lower() in SECRET_PARAMS else urllib.parse.quote(v)) for k, v in pairs
    )
    return _printable(path) + "?" + shown


def _printable(text: str) -> str:
    """Control characters escaped, so a request cannot forge log lines; long values cut."""
    text = text[:300]
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
