"""Config files (TOML) and ``KEY=VALUE`` declarations from the command line.

A config file may hold ``[broker]``, ``[worker]``, ``[capabilities]`` and ``[plugins]``
sections; command-line flags override the file, which overrides :mod:`dtf_bus.defaults`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the file and key."""


def load(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


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
