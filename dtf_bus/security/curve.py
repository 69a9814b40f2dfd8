"""CURVE between nodes: keypairs, the broker's authenticator, and who may speak as whom.

Encryption and authentication are ZeroMQ's CURVE mechanism with ZAP, driven through pyzmq's
:mod:`zmq.auth` (no hand-written crypto). Keys are zmq certificate files: ``NAME.key`` holds
a public key, ``NAME.key_secret`` the keypair (``dtf keys generate``).

- The broker is a CURVE *server* on its ROUTER and PUB sockets. Its :class:`KeyGuard` runs a
  ZAP authenticator that admits only the public keys found in the authorized-keys directory
  (plus the broker's own key, which its in-process HTTP API client uses), logs each refused
  peer with its address, and re-reads the directory when it changes or on SIGHUP.
- A handshake happens once per connection, so revoking a key must also cut off connections
  that are already up: the broker drops every message whose CURVE key (ZMQ's per-message
  ``User-Id`` property, set by our ZAP handler) was revoked, removes workers bound to it,
  and rebinds its PUB socket so revoked subscribers must handshake again (and fail).
- Every authorized key carries a role (worker, client, admin; :mod:`dtf_bus.security.roles`) in its
  certificate's metadata, written by ``dtf keys authorize KEY DIR --role ROLE``.
- A worker id is bound to the key that first registered it, durably (the broker stores the
  binding in DuckDB, so a restart does not open a window for an id squatter): a REGISTER
  claiming an id bound to another key is refused. The binding ends when the worker leaves
  cleanly, is removed as dead, or its key is revoked.
- Key files (generated, authorized with a role, read and checked) are
  :mod:`dtf_bus.security.keyfiles`'s.
- Workers and clients are CURVE *clients*: ``--curve-secret FILE --broker-key FILE``, from a
  config file, or from ``$DTF_CURVE_SECRET`` / ``$DTF_BROKER_KEY``.

Without CURVE, traffic is plaintext and unauthenticated, so the broker listens on loopback
only unless told ``--insecure``, and then says plainly what an open port allows
(:func:`refuse_if_exposed`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from dtf_bus import defaults, logs
from dtf_bus.security import roles
from dtf_bus.security.keyfiles import (
    KEY_CHARS,
    Keypair,
    SecurityError,
    load_keypair,
    load_public,
    role_in,
    writable_by_others,
)

log = logging.getLogger("dtf.security")

ZAP_DOMAIN = b"dtf"
# Monitor events of the broker's ROUTER that mean "a peer failed the handshake".
HANDSHAKE_FAILED_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """What a worker or client needs: its own keypair and the broker's public key."""

    keypair: Keypair
    server_public: bytes  # z85


def client_curve(curve_secret: str | Path | None, broker_key: str | Path | None) -> ClientCurve | None:
    """Both files, or neither (plaintext); one without the other is a mistake worth naming."""
    if not curve_secret and not broker_key:
        return None
    if not curve_secret or not broker_key:
        given, missing = ("--curve-secret", "--broker-key") if curve_secret else ("--broker-key", "--curve-secret")
        raise SecurityError(f"{given} needs {missing} too (CURVE needs this node's keypair and the broker's key)")
    return ClientCurve(load_keypair(curve_secret), load_public(broker_key))


_process_default: ClientCurve | None = None


def set_default_client_curve(curve: ClientCurve | None) -> None:
    """Keys for clients this process makes without naming any (the broker's own HTTP API client)."""
    global _process_default
    _process_default = curve


def resolve_client_curve(
    curve_secret: str | Path | None = None, broker_key: str | Path | None = None
) -> ClientCurve | None:
    """The given keys (flags, or what :func:`dtf_bus.config.merge` settled from flags, environment
    and config file), else the environment, else the process default."""
    secret = curve_secret or os.environ.get(defaults.CURVE_SECRET_ENV)
    server = broker_key or os.environ.get(defaults.BROKER_KEY_ENV)
    if not secret and not server:
        return _process_default
    return client_curve(secret, server)


# ------------------------------------------------------------------- sockets


def make_server(sock: zmq.Socket, keypair: Keypair) -> None:
    """Before bind: encrypt, and authenticate every peer through ZAP."""
    sock.curve_server = True
    sock.curve_publickey = keypair.public
    sock.curve_secretkey = keypair.secret
    sock.zap_domain = ZAP_DOMAIN


def make_client(sock: zmq.Socket, curve: ClientCurve) -> None:
    """Before connect: handshake as ``curve.keypair`` with the broker holding ``server_public``."""
    sock.curve_publickey = curve.keypair.public
    sock.curve_secretkey = curve.keypair.secret
    sock.curve_serverkey = curve.server_public


def is_loopback(endpoint: str) -> bool:
    """Whether a bound endpoint is reachable from this machine only."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(f"//{rest}").hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def warn_if_exposed(
    endpoints: list[str],
    what: str = "the broker",
    remedy: str = "Use --curve-secret and --authorized-keys (dtf keys generate)",
) -> None:
    """Plaintext and unauthenticated beyond this machine: say it loudly, once per endpoint."""
    for endpoint in endpoints:
        if not is_loopback(endpoint):
            log.warning(
                "SECURITY: %s listens on %s WITHOUT AUTHENTICATION: whoever can reach that port can run "
                "commands on every worker (shell tasks), read every task and result, register fake workers "
                "that take tasks and forge results, cancel jobs and drain workers. %s, or bind to 127.0.0.1.",
                what,
                endpoint,
                remedy,
            )


def refuse_if_exposed(endpoints: list[str], insecure: bool) -> None:
    """Without CURVE the bus serves loopback only, unless the operator said ``--insecure``
    (then it warns, in words that say what an open port allows)."""
    exposed = [e for e in endpoints if not is_loopback(e)]
    if not exposed:
        return
    if not insecure:
        raise SecurityError(
            f"refusing to listen on {exposed[0]} without CURVE: whoever reaches the port could run commands on "
            "every worker. Turn CURVE on (--curve-secret, --authorized-keys; dtf keys generate), bind to "
            "127.0.0.1, or pass --insecure on a network you trust completely"
        )
    warn_if_exposed(exposed)


# ------------------------------------------------------------------- broker side


class KeyAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator, plus: the broker's own key is always admitted, the key set
    is replaced atomically on reload, every refusal is logged with the peer's address, and an
    unknown key first makes it re-read the directory if that changed since it last looked, so
    a node admitted a moment ago gets in on its first try."""

    def __init__(self, context: zmq.Context, own_public: bytes, directory: Path) -> None:
        super().__init__(context, log=logging.getLogger("dtf.security.zap"))
        self.own_public = own_public
        self.directory = directory
        self._request: list[bytes] = []
        self._report = logs.RateLimited(log)
        self._signature = _key_dir_signature(directory)
        # Every key let in (z85 text), so the broker can tell a revocation even of a key it never
        # saw in its own reloads. Set operations are atomic under the GIL; the broker prunes it.
        self.admitted: set[str] = set()

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            signature = _key_dir_signature(self.directory)  # a scandir: cheap even under a flood
            if signature != self._signature:
                self._signature = signature
                try:
                    keys = zmq.auth.load_certificates(self.directory)
                except (OSError, ValueError):
                    return allowed, reason  # the broker's own reload reports a broken directory
                self.set_keys({k for k in keys if len(k) == KEY_CHARS})
                allowed, reason = await super()._authenticate_curve(domain, client_key)
        if allowed:
            self.admitted.add(z85.encode(client_key).decode())
        return allowed, reason

    def set_keys(self, keys: set[bytes]) -> None:
        # One dict assignment: the ZAP thread sees the old set or the new one, never a mix.
        self.certs[ZAP_DOMAIN.decode()] = {key: True for key in keys | {self.own_public}}

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._request = msg  # the ZAP thread handles one request at a time
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: Any = "") -> None:
        if status_code != b"200":
            msg = self._request
            address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
            mechanism = msg[5].decode(errors="replace") if len(msg) > 5 else "?"
            key = z85.encode(msg[6]).decode() if mechanism == "CURVE" and len(msg) > 6 and len(msg[6]) == 32 else "-"
            self._report(
                (address, key),
                "refused %s peer at %s with key %s: %s",
                mechanism,
                address or "?",
                key,
                status_text.decode(errors="replace"),
            )
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


def _key_dir_signature(directory: Path) -> tuple:
    try:
        entries = sorted(
            (e.name, e.stat().st_mtime_ns, e.stat().st_size)
            for e in os.scandir(directory)
            if e.name.endswith(".key") and e.is_file()
        )
    except OSError as exc:
        return ("error", str(exc))
    return tuple(entries)


class KeyGuard:
    """The broker's CURVE policy: who may connect, who was revoked, which key owns which worker id.

    Everything but the ZAP thread runs on the broker loop's thread.
    """

    def __init__(self, context: zmq.Context, curve_secret: str | Path, authorized_keys: str | Path) -> None:
        if not authorized_keys:
            raise SecurityError("--curve-secret needs --authorized-keys (the directory of admitted public keys)")
        self.keypair = load_keypair(curve_secret)
        self.directory = Path(authorized_keys)
        if not self.directory.is_dir():
            raise SecurityError(f"{self.directory}: authorized-keys directory not found")
        self.keys = self._load()  # z85 text of each admitted key -> (file name stem, role or None)
        self.authorized = set(self.keys)
        self.revoked: set[str] = set()  # keys admitted once and since removed: their messages are dropped
        self.bindings: dict[str, str] = {}  # worker id -> the key that registered it
        self._own = self.keypair.public.decode()
        self._signature = _key_dir_signature(self.directory)
        self._reload_requested = False
        self._pending_revocations: list[str] | None = None  # found by a reload outside the broker's timer
        self._cut_off = logs.RateLimited(log)
        self._handshakes = logs.RateLimited(log)
        self._refusals = logs.RateLimited(log)
        self.authenticator = KeyAuthenticator(context, self.keypair.public, self.directory)
        self.authenticator.start()
        self.authenticator.set_keys({k.encode() for k in self.authorized})
        log.info("CURVE on: %d authorized key(s) in %s", len(self.authorized), self.directory)

    def _load(self) -> dict[str, tuple[str, str | None]]:
        """Every ``*.key`` file: its key -> (name, role). A directory others may write to is refused."""
        writable_by_others(self.directory, "authorized-keys directory")
        keys: dict[str, tuple[str, str | None]] = {}
        try:
            paths = sorted(self.directory.glob("*.key"))
            for path in paths:
                keys[load_public(path).decode()] = (path.stem, role_in(path))
        except (OSError, SecurityError) as exc:
            raise SecurityError(f"{self.directory}: cannot read authorized keys: {exc}") from None
        roleless = sorted(name for name, role in keys.values() if role is None)
        if roleless:
            log.warning(
                "authorized key(s) without a role, admitted but allowed nothing: %s; authorize again with "
                "dtf keys authorize KEY DIR --role worker|client|admin",
                ", ".join(roleless),
            )
        return keys

    def identity(self, key: str | None) -> tuple[str, str | None]:
        """(name, role) of a connection's CURVE key. The broker's own key (its HTTP API's client)
        is admin. A key admitted a moment ago may be newer than our last look: look again."""
        if key == self._own:
            return "broker", roles.ADMIN
        found = self.keys.get(key or "")
        if found is None and key and _key_dir_signature(self.directory) != self._signature:
            revoked = self.reload_if_changed()
            if revoked is not None:  # the broker's next key check acts on it
                self._pending_revocations = [*(self._pending_revocations or []), *revoked]
            found = self.keys.get(key)
        return found if found is not None else ((key or "?")[:8], None)

    def secure(self, sock: zmq.Socket) -> None:
        make_server(sock, self.keypair)

    def client_curve(self) -> ClientCurve:
        """The broker's own keypair as a client of itself (always admitted)."""
        return ClientCurve(self.keypair, self.keypair.public)

    def close(self) -> None:
        self.authenticator.stop()

    # ------------------------------------------------------------ reloads

    def request_reload(self, *_: Any) -> None:
        """SIGHUP: safe from a signal handler, acted on at the next check."""
        self._reload_requested = True

    def reload_if_changed(self) -> list[str] | None:
        """Re-read the directory if it changed (or SIGHUP asked).

        Returns None when no key was revoked, else the worker ids that were bound to revoked
        keys (possibly none): the broker removes those workers and rebinds its PUB socket.
        """
        signature = _key_dir_signature(self.directory)
        if signature == self._signature and not self._reload_requested:
            pending, self._pending_revocations = self._pending_revocations, None
            return pending
        self._reload_requested = False
        self._signature = signature
        try:
            self.keys = self._load()
        except SecurityError as exc:
            log.error("keeping the previous authorized keys: %s", exc)
            return None
        keys = set(self.keys)
        removed = (self.authorized | self.authenticator.admitted) - keys - {self._own}
        added = keys - self.authorized
        self.authorized = keys
        self.authenticator.set_keys({k.encode() for k in keys})
        self.authenticator.admitted -= removed
        self.revoked = (self.revoked | removed) - keys
        log.info(
            "authorized keys reloaded from %s: %d key(s), %d added, %d revoked",
            self.directory,
            len(keys),
            len(added),
            len(removed),
        )
        pending, self._pending_revocations = self._pending_revocations, None
        if not removed:
            return pending
        workers = [w for w, k in self.bindings.items() if k in removed]
        for worker_id in workers:
            del self.bindings[worker_id]
        return [*(pending or []), *workers]

    def rebind(self, sock: zmq.Socket, endpoint: str) -> None:
        """Unbind and bind again: drops every connection accepted on ``endpoint`` (each must
        handshake anew). libzmq closes the old listener on its I/O thread, so the port may be
        busy for a moment: retry briefly."""
        sock.unbind(endpoint)
        for _ in range(defaults.REBIND_ATTEMPTS):
            try:
                sock.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE:
                    log.error("cannot rebind %s after revoking keys (%s); no events until a restart", endpoint, exc)
                    return
                time.sleep(0.01)
        log.error("cannot rebind %s after revoking keys (still in use); no events until a restart", endpoint)

    # ------------------------------------------------------------ per message

    def cut_off(self, peer: bytes, frame: zmq.Frame) -> bool:
        """Whether this message comes from a revoked key (checked only once something was revoked)."""
        key = frame.get("User-Id")
        if key not in self.revoked:
            return False
        self._cut_off(peer, "dropping messages from peer %s: its key %s was revoked", peer.hex(), key)
        return True

    def bind(self, worker_id: str, key: str | None) -> str | None:
        """Bind ``worker_id`` to ``key``; returns why not if another key holds it."""
        if not key:
            return "this connection has no CURVE key"
        owner = self.bindings.setdefault(worker_id, key)
        if owner == key:
            return None
        log.warning("refused REGISTER as worker %r from key %s: the id is bound to key %s", worker_id, key, owner)
        return f"worker id {worker_id!r} belongs to another key"

    def release(self, worker_id: str) -> bool:
        """The worker left or was removed as dead: its id is free for any authorized key.
        Returns whether it was bound (the broker then stores the release)."""
        return self.bindings.pop(worker_id, None) is not None

    def refused(self, name: str, why: str) -> None:
        """A key asked for what its role does not allow (rate-limited: a refused client retries)."""
        self._refusals(name, "refused a request from key %s: %s", name, why)

    def key_of(self, worker_id: str) -> str | None:
        return self.bindings.get(worker_id)

    def handshake_failed(self, event: dict[str, Any]) -> None:
        """A socket-monitor event: a peer without CURVE (or speaking something else) was refused.

        libzmq's monitor does not say who, so these are counted; refusals through ZAP (a wrong
        key) are logged with the address by :class:`KeyAuthenticator`."""
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # already reported by the ZAP handler, with the address
        self._handshakes(
            "handshake",
            "refused a peer on %s at the handshake (%s): no CURVE key, or not a dtf peer",
            event.get("endpoint", b"").decode(errors="replace"),
            zmq.Event(event["event"]).name,
        )
