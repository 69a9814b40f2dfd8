"""Config files (TOML), the one merge of every command's settings, and ``KEY=VALUE`` declarations.

A config file may hold ``[broker]``, ``[worker]``, ``[capabilities]``, ``[plugins]`` and
``[resources]`` tables. The broker, the worker and ``dtf`` all settle a setting the same way,
in :func:`merge`: a flag, else the environment, else the config file, else the default from
:mod:`dtf_bus.defaults`. A value that is given counts even when it is 0, ``""`` or false (so
``--heartbeat-interval 0`` is refused everywhere instead of meaning the default in one place),
and a key the command does not know is an error that names it, never silently ignored.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every table a dtf config file may hold: one file may serve the broker and a worker alike.
SECTIONS = ("broker", "worker", "capabilities", "plugins", "resources")


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the file and key."""


def load(path: str | Path | None) -> dict[str, Any]:
    """The file's tables; a key outside them or a table dtf does not know is a ConfigError."""
    if path is None:
        return {}
    path = Path(path)
    try:
        with path.open("rb") as fh:
            loaded = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    known = ", ".join(f"[{name}]" for name in SECTIONS)
    for key, value in loaded.items():
        if not isinstance(value, dict):
            raise ConfigError(f"unknown key {key!r} in {path}, outside any table; known tables: {known}")
        if key not in SECTIONS:
            raise ConfigError(f"unknown table [{key}] in {path}; known: {known}")
    return loaded


@dataclass(frozen=True, slots=True)
class Option:
    """One setting of a command: ``name`` is its key in the command's config table, ``env`` the
    variable that may give it, ``flag`` its argparse dest when that is not ``name``."""

    name: str
    env: str | None = None
    flag: str | None = None

    @property
    def dest(self) -> str:
        return self.flag or self.name


@dataclass(frozen=True, slots=True)
class Settings:
    """What :func:`merge` settled: each given value and where it came from (for messages)."""

    values: dict[str, Any]
    origins: dict[str, str]
    known: frozenset[str]

    def get(self, name: str, default: Any = None) -> Any:
        """The value from a flag, the environment or the file, else ``default`` (the defaults layer)."""
        if name not in self.known:
            raise KeyError(f"no option {name!r}")  # a typo in code, not a user's mistake
        return self.values.get(name, default)

    def origin(self, name: str) -> str:
        """``--slots``, ``$DTF_BROKER``, ``slots in [worker] of FILE`` or ``default``."""
        return self.origins.get(name, "default")


def check_keys(table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse a config key nobody reads (``slot = 4`` for ``slots``), naming it and the known ones."""
    names = sorted(known)
    for key in table:
        if key not in names:
            raise ConfigError(f"unknown key {key!r} in {where}; known: {', '.join(names)}")


def merge(
    options: Iterable[Option],
    flags: argparse.Namespace | Mapping[str, Any],
    environ: Mapping[str, str],
    table: Mapping[str, Any],
    where: str = "the config file",
) -> Settings:
    """Flags > environment > file; the caller's default (``Settings.get``) comes last.

    A flag counts unless it is None (argparse's "not given"), so 0, ``""`` and False are values.
    A file value counts when its key is present. An environment variable counts when it is set
    and not empty, as ``DTF_BROKER= dtf-worker`` means "unset" to a shell user; its value is text.
    ``where`` names the table for messages, e.g. ``[worker] of worker.toml``.
    """
    options = list(options)
    check_keys(table, (o.name for o in options), where)
    given = vars(flags) if isinstance(flags, argparse.Namespace) else flags
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for option in options:
        if given.get(option.dest) is not None:
            values[option.name] = given[option.dest]
            origins[option.name] = "--" + option.dest.replace("_", "-")
        elif option.env and environ.get(option.env):
            values[option.name] = environ[option.env]
            origins[option.name] = f"${option.env}"
        elif option.name in table:
            values[option.name] = table[option.name]
            origins[option.name] = f"{option.name} in {where}"
    return Settings(values, origins, frozenset(o.name for o in options))


def table_label(path: str | Path | None, name: str) -> str:
    """How messages name a config table: ``[worker] of /etc/dtf/worker.toml``."""
    return f"[{name}] of {path}"


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config: [{name}] must be a table")
    return value


def parse_value(text: str) -> Any:
    """Command-line values are text; read numbers and booleans as such."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: list[str] | None, flag: str) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out.append((key.strip(), parse_value(value.strip())))
    return out


def heartbeat(interval: Any, liveness: Any) -> tuple[float, int]:
    """Validate heartbeat settings from whichever layer supplied them."""
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise ConfigError(f"heartbeat interval must be a positive number of seconds, got {interval!r}")
    if isinstance(liveness, bool) or not isinstance(liveness, int) or liveness < 1:
        raise ConfigError(f"heartbeat liveness must be an integer >= 1, got {liveness!r}")
    return float(interval), liveness


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def prefetch(value: Any) -> int | None:
    """``auto`` (or None) sizes prefetch per worker; otherwise a fixed integer >= 0."""
    if value is None or value == "auto":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"prefetch must be auto or an integer >= 0, got {value!r}")
    return value


# ZeroMQ's transports. An endpoint without one ("127.0.0.1:5555") makes connect() raise deep in
# a command, or (in a worker's reconnect loop) makes it retry forever in silence.
ENDPOINT_SCHEMES = ("tcp", "ipc", "inproc", "pgm", "epgm", "ws", "wss", "tipc", "vmci", "udp")


def endpoint(value: str, flag: str = "--broker") -> str:
    """A ZeroMQ endpoint as the user gave it, or a ConfigError saying how to write one.

    Checked before anything connects, in ``dtf`` and ``dtf-worker`` alike, so a missing
    ``tcp://`` is one line and exit 2 instead of a traceback or a hang.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not rest:
        hint = f"; did you mean tcp://{value}?" if value and "://" not in value else ""
        raise ConfigError(f"{flag} {value!r}: an endpoint needs a transport, e.g. tcp://HOST:PORT{hint}")
    if scheme not in ENDPOINT_SCHEMES:
        raise ConfigError(f"{flag} {value!r}: unknown transport {scheme!r} (use one of {', '.join(ENDPOINT_SCHEMES)})")
    return value
