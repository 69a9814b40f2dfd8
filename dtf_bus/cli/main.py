"""The ``dtf`` command: its parser, the dispatch to each subcommand and the errors that end one.

Each group of subcommands is a module: :mod:`~dtf_bus.cli.jobs` (submit, status, cancel),
:mod:`~dtf_bus.cli.results`, :mod:`~dtf_bus.cli.fleet` (workers, drain), :mod:`~dtf_bus.cli.up`,
:mod:`~dtf_bus.cli.pytest_command`, :mod:`~dtf_bus.cli.keys`, :mod:`~dtf_bus.cli.ping` and
:mod:`~dtf_bus.cli.history` (jobs, compare, flaky, history). This one maps every error to its exit
code (the contract in :mod:`~dtf_bus.cli.output`): 0 everything succeeded, 1 some task failed, 2 a
usage, spec or request error, 3 the broker is unreachable, 4 ``--wait --timeout`` ran out (the job
keeps running), 130 interrupted (Ctrl-C; ``submit --wait`` detaches and says how to cancel). With
``--json`` stdout is always one JSON object, errors included (``{"error": ...}``), and the
one-line message still goes to stderr. ``dtf pytest ARGS...`` is ``pytest --dtf ARGS...`` and uses
pytest's own codes, keeping 3 for an unreachable broker.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from dtf_bus import config, defaults, logs, spec
from dtf_bus.cli import fleet, jobs, pytest_command, results, up
from dtf_bus.cli import history as cli_history
from dtf_bus.cli import keys as keys_cli
from dtf_bus.cli import ping as ping_cli
from dtf_bus.cli.output import (
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandFailed,
    print_json,
)
from dtf_bus.client import CLIENT_OPTIONS, BrokerUnreachable, Client, ClientError, default_endpoint
from dtf_bus.security import curve as security
from dtf_bus.ship.archive import ShipError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtf", description="Distributed testing framework client.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_broker(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--broker", default=None, help=f"broker endpoint (default $DTF_BROKER or {default_endpoint()})")
        p.add_argument("--timeout-connect", type=float, default=5.0, help=argparse.SUPPRESS)
        p.add_argument("--curve-secret", metavar="FILE", help="this client's CURVE keypair (default $DTF_CURVE_SECRET)")
        p.add_argument("--broker-key", metavar="FILE", help="the broker's CURVE public key (default $DTF_BROKER_KEY)")
        return p

    jobs.add_submit_parser(sub, with_broker)
    jobs.add_status_parser(sub, with_broker)
    fleet.add_workers_parser(sub, with_broker)
    results.add_parser(sub, with_broker)
    pytest_command.add_parser(sub)
    keys_cli.add_parser(sub)
    ping_cli.add_parser(sub, with_broker)
    jobs.add_cancel_parser(sub, with_broker)
    fleet.add_drain_parser(sub, with_broker)
    up.add_parser(sub)
    cli_history.add_parsers(sub, with_broker)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pytest"]:  # pytest's own arguments: argparse must not see them
        return pytest_command.run(argv[1:])
    logs.configure("WARNING", "%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    wants_json = bool(getattr(args, "json", False) or getattr(args, "format", None) == "json")
    try:
        return _run(args)
    except CommandFailed as exc:
        return _fail(args, wants_json, exc.code, str(exc), **exc.data)
    except KeyboardInterrupt:
        return _fail(args, wants_json, EXIT_INTERRUPTED, f"dtf {args.command}: interrupted")
    except config.ConfigError as exc:
        return _fail(args, wants_json, EXIT_USAGE, f"dtf {args.command}: {exc}")
    except security.SecurityError as exc:
        return _fail(args, wants_json, EXIT_USAGE, f"dtf {args.command}: {exc}")
    except spec.SpecError as exc:
        return _fail(args, wants_json, EXIT_USAGE, f"dtf {args.command}: invalid spec: {exc}")
    except ShipError as exc:
        return _fail(args, wants_json, EXIT_USAGE, f"dtf {args.command}: --ship: {exc}")
    except BrokerUnreachable as exc:
        return _fail(args, wants_json, EXIT_UNREACHABLE, f"dtf {args.command}: {exc}")
    except ClientError as exc:
        return _fail(args, wants_json, EXIT_USAGE, f"dtf {args.command}: {exc}")
    except TimeoutError as exc:
        return _fail(args, wants_json, EXIT_TIMEOUT, f"dtf {args.command}: {exc}")


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        if args.workers < 1:
            raise CommandFailed(EXIT_USAGE, "dtf up: --workers must be at least 1")
        return up.cmd_up(args)
    if args.command == "keys":
        return keys_cli.run(args)
    if args.command == "ping" and args.alive_file:
        return ping_cli.check_alive(args)
    # Checked before connecting: zmq would raise a bare ZMQError ("Invalid argument") instead.
    given = config.merge(CLIENT_OPTIONS, args, os.environ, {})
    endpoint = config.endpoint(given.get("broker", defaults.BROKER_ENDPOINT), given.origin("broker"))
    curve = security.resolve_client_curve(given.get("curve_secret"), given.get("broker_key"))
    # Ctrl-C interrupts even when we were started with SIGINT ignored (a background job's lot).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Client(endpoint, timeout=args.timeout_connect, curve=curve) as client:
        return args.func(client, args)


def _fail(args: argparse.Namespace, wants_json: bool, code: int, message: str, **data: Any) -> int:
    """The one-line message on stderr; with --json, also a JSON object on stdout, so a script
    parsing stdout gets JSON whatever happened."""
    print(message, file=sys.stderr, flush=True)
    if wants_json:
        print_json({"error": message, "exit_code": code, **data})
    return code
