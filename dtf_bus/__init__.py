"""dtf: a distributed testing framework on a ZeroMQ bus with results in DuckDB."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["BrokerUnreachable", "Client", "ClientError", "__version__"]

_CLIENT_NAMES = frozenset({"BrokerUnreachable", "Client", "ClientError"})


def __getattr__(name: str) -> Any:
    """The client API on first use (PEP 562): importing any dtf_bus module, such as the pytest
    plugin that loads in every pytest run, must not pay for zmq, msgpack and CURVE."""
    if name in _CLIENT_NAMES:
        from dtf_bus import client

        return getattr(client, name)
    raise AttributeError(f"module 'dtf_bus' has no attribute {name!r}")
