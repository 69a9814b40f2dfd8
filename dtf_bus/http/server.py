"""The tornado HTTPServer the API and the dashboard run on, hardened against idle and flooding clients.

Tornado's defaults suit a server behind a proxy: no cap on connections, an hour to send headers,
and an accept error (EMFILE when file descriptors run out) raised out of the accept callback,
where asyncio logs a traceback and calls it again at once while the listening socket stays
readable. 1,100 idle connections under ``ulimit -n 1024`` thus made a broker log 117,652
tracebacks in 35 s, and the descriptors it needed for its bus sockets were gone. Here:

- headers, bodies and idle keep-alive connections time out (``HTTP_IDLE_TIMEOUT``,
  ``HTTP_BODY_TIMEOUT``), headers are bounded (``HTTP_MAX_HEADER_BYTES``);
- past ``max_connections`` open connections (and never more than half the process's file
  descriptor limit, read at each accept, so ``ulimit -n`` lowers it) a new one is closed at once,
  so the process keeps the descriptors its bus sockets and database need; refusals and accept errors are logged once per
  ``SECURITY_LOG_INTERVAL`` with a count, and accepting pauses briefly after an accept error
  instead of spinning;
- ``ssl_context`` (from ``tls_context``) serves HTTPS.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import ssl
from collections.abc import Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from dtf_bus import defaults, logs

log = logging.getLogger("dtf.http")


class TlsError(ValueError):
    """The certificate or key cannot be used; the message names the file."""


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """An HTTPS server context for ``cert`` and ``key`` (PEM files), or None when neither is given."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise TlsError("--http-cert and --http-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load the TLS certificate {cert} with key {key}: {exc}") from None
    return context


class GuardedHTTPServer(HTTPServer):
    """An HTTPServer with timeouts, a connection cap and accept errors that cannot flood the log."""

    def initialize(  # tornado's HTTPServer is Configurable: construction arguments arrive here
        self,
        request_callback: Any,
        max_connections: int = defaults.HTTP_MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"--http-max-connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self._refusals = logs.RateLimited(log)
        self._accept_errors = logs.RateLimited(log, logging.ERROR)
        settings = {
            "idle_connection_timeout": defaults.HTTP_IDLE_TIMEOUT,
            "body_timeout": defaults.HTTP_BODY_TIMEOUT,
            "max_header_size": defaults.HTTP_MAX_HEADER_BYTES,
            "ssl_options": ssl_context,
            **kwargs,
        }
        super().initialize(request_callback, **settings)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def connection_cap(self) -> int:
        """``max_connections``, lowered to half the open-file limit: descriptors beyond it belong to
        the bus (a broker out of them cannot accept a worker's or a client's connection)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 2))

    def _accept_on(self, sock: socket.socket) -> Any:
        """tornado.netutil.add_accept_handler, but an accept error pauses instead of raising."""
        loop = IOLoop.current()
        state = {"removed": False, "paused": False}

        def resume() -> None:
            if not state["removed"] and state["paused"]:
                state["paused"] = False
                loop.add_handler(sock, accept, IOLoop.READ)

        def accept(fd: Any, events: int) -> None:
            cap = self.connection_cap()
            for _ in range(128):
                if state["removed"] or state["paused"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    what = "out of file descriptors" if exc.errno in (errno.EMFILE, errno.ENFILE) else exc.strerror
                    self._accept_errors("accept", "HTTP: cannot accept a connection: %s", what)
                    loop.remove_handler(sock)
                    state["paused"] = True
                    loop.call_later(defaults.HTTP_ACCEPT_PAUSE, resume)
                    return
                if len(self._connections) >= cap:
                    connection.close()
                    self._refusals(
                        "cap",
                        "HTTP: %d connections open (--http-max-connections %d, at most half of the "
                        "open-file limit); refusing more",
                        cap,
                        self.max_connections,
                    )
                    continue
                self._handle_connection(connection, address)

        def remove() -> None:
            if not state["paused"]:
                loop.remove_handler(sock)
            state["removed"] = True

        loop.add_handler(sock, accept, IOLoop.READ)
        return remove
