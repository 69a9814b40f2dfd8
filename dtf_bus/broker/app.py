"""The ``dtf-broker`` command: flags and config file in, a running :class:`~dtf_bus.broker.server.Broker` out.

Flags override the config file's ``[broker]`` table, which overrides :mod:`dtf_bus.defaults`
(:func:`dtf_bus.config.merge`; the broker reads no environment variables). Every mistake a user
can make here, an unknown ``[broker]`` key included, ends in one line on stderr and exit code 2.

:func:`wire` is the one place that puts the broker's extensions together: result rows (a
Broker's default hook), monitoring, and the HTTP API; a program embedding a Broker calls it too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import zmq

from dtf_bus import balancer, config, defaults, logs
from dtf_bus.broker.server import Broker
from dtf_bus.http import auth as webauth
from dtf_bus.monitor.monitor import Monitor
from dtf_bus.security import curve as security
from dtf_bus.store import db as store

# The [broker] keys: each is also a flag (its dest), and the flag wins.
BROKER_OPTIONS = tuple(
    config.Option(name)
    for name in (
        "bind", "metrics_bind", "db", "db_memory_limit", "strategy", "heartbeat_interval", "heartbeat_liveness",
        "dead_liveness", "max_lost_workers", "prefetch", "steal", "curve_secret", "authorized_keys", "api_keys",
        "insecure", "max_live_tasks", "submitter_quota", "finished_job_ttl", "http", "http_token_file",
        "http_allow_host", "http_cert", "http_key", "http_max_connections", "ws_max_pending_bytes",
        "metrics_retention", "ship_store_bytes",
    )
)  # fmt: skip


def wire(
    broker: Broker, http: str | None = None, retention: float = defaults.METRICS_RETENTION, options: Any = None
) -> Any:
    """Add monitoring to ``broker`` and, given ``HOST:PORT``, the HTTP API over it (returned,
    else None); ``options``: its dtf_bus.http.api.HttpOptions. Raises ValueError for a bad value."""
    if retention <= 0:
        raise ValueError(f"--metrics-retention must be greater than zero, got {retention:g}")
    monitor = Monitor(retention=retention)
    monitor.attach(broker)
    broker.hooks.append(monitor)
    if not http:
        return None
    from dtf_bus.http import api  # tornado and prometheus only load where the HTTP API is served

    return api.install(broker, monitor, http, options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtf-broker", description="Run the dtf broker.")
    parser.add_argument("--bind", help=f"ROUTER endpoint (default {defaults.BROKER_ENDPOINT})")
    parser.add_argument("--metrics-bind", help=f"PUB endpoint (default {defaults.METRICS_ENDPOINT})")
    parser.add_argument("--db", help=f"DuckDB file for results (default {defaults.DB_PATH})")
    parser.add_argument(
        "--db-memory-limit",
        metavar="SIZE",
        help=f"DuckDB buffer pool, e.g. 512MB or 2GB; spills to disk past it (default {defaults.STORE_MEMORY_LIMIT})",
    )
    parser.add_argument("--config", help="TOML config file with a [broker] section")
    parser.add_argument("--strategy", help=f"placement strategy (default {defaults.STRATEGY})")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats")
    parser.add_argument(
        "--heartbeat-liveness", type=int, help="silent intervals before a worker is missing (its tasks requeued)"
    )
    parser.add_argument("--dead-liveness", type=int, help="silent intervals before a missing worker is removed")
    parser.add_argument("--max-lost-workers", type=int, help="workers a task may lose before it fails as poison")
    parser.add_argument(
        "--prefetch", help="tasks a worker may hold beyond its slots: N, or auto (default: sized by task durations)"
    )
    parser.add_argument("--no-steal", dest="steal", action="store_false", default=None, help="turn work stealing off")
    parser.add_argument("--curve-secret", metavar="FILE", help="the broker's keypair (.key_secret): CURVE on")
    parser.add_argument("--authorized-keys", metavar="DIR", help="public keys (*.key) admitted; re-read on change")
    parser.add_argument("--api-keys", metavar="FILE", help="HTTP API keys (dtf keys api-key create): keys required")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="without CURVE, listen beyond loopback anyway (whoever reaches the port can run commands on workers)",
    )
    parser.add_argument(
        "--max-live-tasks", type=int, help=f"unfinished tasks held at most (default {defaults.MAX_LIVE_TASKS})"
    )
    parser.add_argument(
        "--submitter-quota", type=int, help=f"unfinished tasks per submitter (default {defaults.SUBMITTER_QUOTA})"
    )
    parser.add_argument(
        "--finished-job-ttl",
        type=float,
        help=f"seconds a finished job stays in memory, then served from DuckDB (default {defaults.FINISHED_JOB_TTL:g})",
    )
    parser.add_argument("--ready-file", help="write the bound endpoints here as JSON once listening")
    parser.add_argument("--http", metavar="HOST:PORT", help="serve the HTTP API and WebSocket here (port 0: any)")
    parser.add_argument(
        "--http-token-file",
        metavar="FILE",
        help=f"the API's token, made (0600) on first start (default: the database path + {defaults.API_TOKEN_SUFFIX})",
    )
    parser.add_argument(
        "--http-allow-host",
        metavar="NAME",
        action="append",
        help="a Host name the API answers to besides loopback and the bound address (repeatable; * for any)",
    )
    parser.add_argument("--http-cert", metavar="FILE", help="serve the API over HTTPS with this PEM certificate")
    parser.add_argument("--http-key", metavar="FILE", help="the PEM private key of --http-cert")
    parser.add_argument(
        "--http-max-connections",
        type=int,
        help=f"open HTTP connections at most; more are closed at once (default {defaults.HTTP_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--ws-max-pending-bytes",
        type=int,
        help=f"a WebSocket client with more unsent bytes is cut off (default {defaults.WEBSOCKET_MAX_PENDING_BYTES})",
    )
    parser.add_argument("--metrics-retention", type=float, help="seconds of metrics history kept in the database")
    parser.add_argument(
        "--ship-store-bytes",
        type=int,
        help=f"bytes of shipped code kept beside the database (default {defaults.SHIP_STORE_BYTES})",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)

    def pick(name: str, default: Any) -> Any:
        return settings.get(name, default)

    try:
        cfg = config.section(config.load(args.config), "broker")
        settings = config.merge(BROKER_OPTIONS, args, {}, cfg, config.table_label(args.config, "broker"))
        interval, liveness = config.heartbeat(
            pick("heartbeat_interval", defaults.HEARTBEAT_INTERVAL),
            pick("heartbeat_liveness", defaults.HEARTBEAT_LIVENESS),
        )
        dead_liveness = config.positive_int(pick("dead_liveness", defaults.DEAD_LIVENESS), "dead_liveness")
        max_lost = config.positive_int(pick("max_lost_workers", defaults.MAX_LOST_WORKERS), "max_lost_workers")
        prefetch = config.prefetch(pick("prefetch", defaults.PREFETCH))
        max_live = config.positive_int(pick("max_live_tasks", defaults.MAX_LIVE_TASKS), "max_live_tasks")
        quota = config.positive_int(pick("submitter_quota", defaults.SUBMITTER_QUOTA), "submitter_quota")
        ttl = pick("finished_job_ttl", defaults.FINISHED_JOB_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            raise config.ConfigError(f"finished_job_ttl must be a number of seconds >= 0, got {ttl!r}")
        ship_store_bytes = config.positive_int(pick("ship_store_bytes", defaults.SHIP_STORE_BYTES), "ship_store_bytes")
        db_memory_limit = str(pick("db_memory_limit", defaults.STORE_MEMORY_LIMIT))
        if not store.valid_memory_limit(db_memory_limit):
            raise config.ConfigError(f"db_memory_limit must be a size such as 512MB or 2GB, got {db_memory_limit!r}")
    except config.ConfigError as exc:
        print(f"dtf-broker: {exc}", file=sys.stderr)
        return 2
    try:
        broker = Broker(
            bind=pick("bind", defaults.BROKER_ENDPOINT),
            metrics_bind=pick("metrics_bind", defaults.METRICS_ENDPOINT),
            db=pick("db", defaults.DB_PATH),
            strategy=pick("strategy", defaults.STRATEGY),
            heartbeat_interval=interval,
            heartbeat_liveness=liveness,
            dead_liveness=dead_liveness,
            max_lost_workers=max_lost,
            curve_secret=pick("curve_secret", None),
            authorized_keys=pick("authorized_keys", None),
            prefetch=prefetch,
            steal=bool(pick("steal", True)),
            insecure=bool(pick("insecure", False)),
            max_live_tasks=max_live,
            submitter_quota=quota,
            finished_job_ttl=float(ttl),
            db_memory_limit=db_memory_limit,
            ship_store_bytes=ship_store_bytes,
        )
    except (balancer.UnknownStrategy, security.SecurityError) as exc:
        print(f"dtf-broker: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"dtf-broker: cannot bind: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # duckdb raises IOException for a locked or unwritable file
        print(f"dtf-broker: cannot open results database: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, broker.stop)
    signal.signal(signal.SIGINT, broker.stop)
    if broker.guard is not None:
        signal.signal(signal.SIGHUP, broker.guard.request_reload)
        security.set_default_client_curve(broker.guard.client_curve())  # the HTTP API's own client
    from dtf_bus.http import api  # tornado and prometheus only load in the broker process

    try:
        http = wire(
            broker,
            pick("http", None),
            pick("metrics_retention", defaults.METRICS_RETENTION),
            api.HttpOptions(
                token_file=Path(pick("http_token_file", None) or webauth.token_path(pick("db", defaults.DB_PATH))),
                api_keys=pick("api_keys", None),
                allow_hosts=tuple(pick("http_allow_host", None) or ()),
                cert=pick("http_cert", None),
                key=pick("http_key", None),
                max_connections=pick("http_max_connections", defaults.HTTP_MAX_CONNECTIONS),
                ws_max_pending=pick("ws_max_pending_bytes", defaults.WEBSOCKET_MAX_PENDING_BYTES),
            ),
        )
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"dtf-broker: cannot serve the HTTP API: {exc}", file=sys.stderr)
        broker.close()
        return 2
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "endpoint": broker.endpoint,
                    "metrics_endpoint": broker.metrics_endpoint,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "http": http.url if http else None,
                    "http_token_file": str(http.token_file) if http else None,
                }
            )
        )
        tmp.replace(args.ready_file)
    if http is not None and sys.stderr.isatty():  # a terminal, as Jupyter does; never into a log file
        print(f"dtf-broker: open {http.open_url}", file=sys.stderr, flush=True)
    broker.serve()
    return 0
