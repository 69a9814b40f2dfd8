"""dtf: a distributed testing framework on a ZeroMQ bus with results in DuckDB."""

from dtf_bus.client import BrokerUnreachable, Client, ClientError

__version__ = "0.1.0"
__all__ = ["BrokerUnreachable", "Client", "ClientError", "__version__"]
