"""CURVE key files: ``NAME.key`` (a public key) and ``NAME.key_secret`` (a keypair), zmq's format.

``dtf keys generate`` writes a keypair, ``dtf keys authorize KEY DIR --role ROLE`` admits a public
key with its role in the certificate's metadata (:mod:`dtf_bus.security.roles`). Key files are
written atomically, a secret one 0600 from its first byte, in 0700 directories; an
authorized-keys directory others may write to is refused. Reading a file checks it holds a real
CURVE key, and every problem a user can fix is a :class:`SecurityError` naming the file.
Kept apart from :mod:`dtf_bus.security.curve` (sockets, the broker's authenticator and key
policy): this is files on disk only, and needs no zmq socket.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from dtf_bus.security import roles

KEY_CHARS = 40  # a CURVE key in z85


class SecurityError(ValueError):
    """A key or key-directory problem a user can fix; the message names the file."""


@dataclass(frozen=True, slots=True)
class Keypair:
    public: bytes  # z85
    secret: bytes  # z85


def _private_dir(directory: Path) -> Path:
    """Create ``directory`` 0700, or refuse an existing one others may write to (they could
    swap a key file under us)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    writable_by_others(directory, "key directory")
    return directory


def writable_by_others(directory: Path, what: str) -> None:
    """Refuse a directory that a group or other users may write to: whoever can write into an
    authorized-keys directory can admit themselves."""
    try:
        mode = directory.stat().st_mode
    except OSError as exc:
        raise SecurityError(f"{directory}: {what} not readable: {exc.strerror}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SecurityError(
            f"{directory}: {what} is writable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod go-w {directory}"
        )


def _write_cert(path: Path, public: bytes, secret: bytes | None = None, role: str | None = None) -> None:
    """Write a zmq certificate file atomically; a secret one is 0600 from its first byte (an
    os.open mode, never a chmod after the fact), so no reader can race it."""
    lines = [
        "#   dtf CURVE certificate (zmq format): "
        + ("keep private, this node's --curve-secret" if secret else "public key"),
        "metadata",
        *([f'    role = "{role}"'] if role else []),
        "curve",
        f'    public-key = "{public.decode()}"',
        *([f'    secret-key = "{secret.decode()}"'] if secret else []),
    ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate(directory: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (keypair, mode 0600) into ``directory``
    (created 0700)."""
    if not name or "/" in name or name.startswith("."):
        raise SecurityError(f"key name {name!r}: must be a plain file name")
    directory = _private_dir(Path(directory))
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not overwrite:
        for path in (public, secret):
            if path.exists():
                raise SecurityError(f"{path}: already exists; refusing to overwrite a key")
    public_key, secret_key = zmq.curve_keypair()
    _write_cert(secret, public_key, secret_key)
    _write_cert(public, public_key)
    return public, secret


def authorize(public_key_file: str | Path, directory: str | Path, role: str) -> Path:
    """Admit a public key with a role (the broker picks it up within a second)."""
    if role not in roles.ROLES:
        raise SecurityError(f"role must be one of {', '.join(roles.ROLES)}, got {role!r}")
    public = load_public(public_key_file)  # refuse to authorize something that is not a key
    target = _private_dir(Path(directory)) / Path(public_key_file).name
    _write_cert(target, public, role=role)
    return target


_ROLE_LINE = re.compile(r'^\s+role\s*=\s*"?([A-Za-z_]+)"?\s*$', re.MULTILINE)


def role_in(path: str | Path) -> str | None:
    """The ``role`` in a certificate's metadata section (written by :func:`authorize`), or None."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    match = _ROLE_LINE.search(text.split("\ncurve", 1)[0])
    return match.group(1) if match and match.group(1) in roles.ROLES else None


def _read(path: str | Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise SecurityError(f"{path}: key file not found") from None
    except ValueError as exc:
        raise SecurityError(f"{path}: not a zmq certificate: {exc}") from None
    for what, key in (("public", public), ("secret", secret)):
        if key is not None and len(key) != KEY_CHARS:
            raise SecurityError(f"{path}: the {what} key is not a {KEY_CHARS}-character z85 CURVE key")
    return public, secret


def load_keypair(path: str | Path) -> Keypair:
    """A ``*.key_secret`` file: this node's own keypair."""
    public, secret = _read(path)
    if secret is None:
        raise SecurityError(f"{path}: holds no secret key (pass the .key_secret file, not the .key)")
    return Keypair(public, secret)


def load_public(path: str | Path) -> bytes:
    """Any certificate file's public key (the broker's ``.key`` for a client)."""
    return _read(path)[0]
