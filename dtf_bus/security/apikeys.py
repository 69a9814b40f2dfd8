"""HTTP API keys: shown once when created, stored only as a SHA-256 hash, one role each.

A key is ``dtf_<id>_<secret>``: ``id`` names it in listings and revocations, ``secret`` is
32 random bytes (URL-safe base64). Keys are random, not passwords, so one SHA-256 is the right
hash (as for GitHub tokens): no dictionary to guess from, nothing to stretch.

Roles: ``read`` reads (status, workers, metrics, history, the WebSocket), ``admin`` also
submits, cancels and drains. The file (JSON, mode 0600) is re-read when it changes, so a key
created or revoked with ``dtf keys api-key`` takes effect without restarting the broker.
Beside these keys the broker always has its generated token (:mod:`dtf_bus.http.auth`), an admin
key of its own; ``--api-keys FILE`` adds keys with names and roles that can be revoked one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from dtf_bus import defaults

ROLES = ("read", "admin")
_RANK = {"read": 1, "admin": 2}


class ApiKeyError(ValueError):
    """A key file problem a user can fix; the message names the file."""


def default_path() -> Path:
    return Path(os.environ.get(defaults.API_KEYS_ENV) or defaults.API_KEYS_FILE)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ApiKeyError(f"{path}: not a dtf API key file: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(
        isinstance(k, dict) and k.get("role") in ROLES and isinstance(k.get("sha256"), str) for k in keys
    ):
        raise ApiKeyError(f"{path}: not a dtf API key file (expected {{'keys': [{{id, role, sha256}}, ...]}})")
    return keys


def _write(path: Path, keys: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": keys}, fh, indent=1)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def create(path: str | Path, role: str, name: str = "") -> tuple[str, dict[str, Any]]:
    """Add a key; returns the key (its only appearance anywhere) and its stored record."""
    if role not in ROLES:
        raise ApiKeyError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    path = Path(path)
    keys = _read(path)
    key_id = secrets.token_hex(4)
    key = f"dtf_{key_id}_{secrets.token_urlsafe(32)}"
    record = {"id": key_id, "role": role, "name": name, "sha256": digest(key), "created_at": time.time()}
    _write(path, [*keys, record])
    return key, record


def listing(path: str | Path) -> list[dict[str, Any]]:
    """Stored records without their hashes."""
    return [{k: v for k, v in r.items() if k != "sha256"} for r in _read(Path(path))]


def revoke(path: str | Path, key_id: str) -> bool:
    path = Path(path)
    keys = _read(path)
    kept = [k for k in keys if k.get("id") != key_id]
    if len(kept) == len(keys):
        return False
    _write(path, kept)
    return True


class ApiKeys:
    """The broker's view of a key file: ``role_of(key)``, re-reading the file when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ApiKeyError(f"{self.path}: API key file not found (create keys with: dtf keys api-key create)")
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, dict[str, Any]] = {}  # sha256 -> record
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            try:
                records = {r["sha256"]: r for r in _read(self.path)} if stamp else {}
            except ApiKeyError:
                return  # keep the keys we had; a half-edited file must not lock everyone out
            self._records, self._stamp = records, stamp

    def identify(self, key: str | None) -> tuple[str, str] | None:
        """(key id, role) of a valid key, else None; the id names who submitted a job."""
        if not key:
            return None
        self._refresh()
        record = self._records.get(digest(key))
        return None if record is None else (str(record.get("id", "?")), record["role"])

    def role_of(self, key: str | None) -> str | None:
        found = self.identify(key)
        return None if found is None else found[1]

    @staticmethod
    def allows(role: str | None, needed: str) -> bool:
        return role is not None and _RANK[role] >= _RANK[needed]

    def check(self, key: str | None, needed: str) -> tuple[int, str] | None:
        """None if ``key`` may do what needs ``needed``; else (401 or 403, why) for the reply."""
        role = self.role_of(key)
        if role is None:
            why = "unknown API key" if key else "missing API key"
            return 401, f"{why}: send 'Authorization: Bearer KEY' (keys come from: dtf keys api-key create)"
        if not self.allows(role, needed):
            return 403, f"this needs an {needed} key; the key sent is a {role} key"
        return None


def presented_key(headers: Any, query_key: str | None = None) -> str | None:
    """``Authorization: Bearer KEY``, else ``X-API-Key: KEY``, else a query parameter (for
    WebSockets, which browsers open without custom headers)."""
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("X-API-Key") or query_key or None
