"""``dtf ping``: a health check for containers, unit files and scripts.

    dtf ping [--broker EP] [--timeout S]        0 when the broker answers, 3 when it does not
    dtf ping --alive-file FILE [--max-age S]    0 when the worker touching FILE is alive, 1 when not

The first asks the broker's ROUTER (with CURVE keys from flags or the environment, like every
``dtf`` command), so it proves the broker's loop answers, not just that its port is open. The
second reads a local file only (see :mod:`dtf_bus.worker.liveness`): a worker's liveness must not
depend on the broker being up.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from dtf_bus import defaults, protocol
from dtf_bus.client import BrokerUnreachable, Client
from dtf_bus.security import curve as security
from dtf_bus.worker import liveness

EXIT_OK, EXIT_NOT_ALIVE = 0, 1


def add_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], object]) -> None:
    p = sub.add_parser("ping", help="health check: does the broker answer (or is a worker's loop alive)")
    with_broker(p)
    p.add_argument(
        "--timeout", type=float, default=defaults.PING_TIMEOUT, help="seconds to wait for the answer (default 5)"
    )
    p.add_argument("--alive-file", metavar="FILE", help="check a worker's --alive-file instead of the broker")
    p.add_argument(
        "--max-age",
        type=float,
        default=defaults.ALIVE_FILE_MAX_AGE,
        help=f"seconds the alive file may be old (default {defaults.ALIVE_FILE_MAX_AGE:g})",
    )
    p.set_defaults(func=cmd_ping)


def check_alive(args: argparse.Namespace) -> int:
    """``--alive-file``: no broker involved."""
    reason = liveness.problem(args.alive_file, args.max_age)
    if reason is not None:
        print(f"dtf ping: {reason}", file=sys.stderr)
        return EXIT_NOT_ALIVE
    print(f"worker alive ({args.alive_file} is fresh)")
    return EXIT_OK


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        info = client.request(protocol.PING, {}, timeout=args.timeout)
    except BrokerUnreachable as exc:
        curve = security.resolve_client_curve(args.curve_secret, args.broker_key) is not None
        hint = " (CURVE: is this key authorized, and --broker-key the broker's public key?)" if curve else ""
        raise BrokerUnreachable(f"{exc}{hint}") from None
    elapsed = (time.monotonic() - started) * 1000
    print(f"broker at {client.endpoint} answered in {elapsed:.1f} ms ({info.get('workers', 0)} workers)")
    return EXIT_OK
