"""``dtf-worker``: arguments, config and environment into a :class:`~dtf_bus.worker.worker.Worker`.

Apart from the worker itself so that what is configurable, and how it is checked, reads in one
place. ``prepare`` lets a caller touch the built worker before it runs (the tests' fault
injection, :mod:`dtf_bus.testing.faults`) without the production worker knowing about it.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable

from dtf_bus import config, defaults, logs
from dtf_bus.plugins import PluginError, is_secret_variable, load_executors
from dtf_bus.resources import ResourceError, check, worker_totals
from dtf_bus.security import curve as security
from dtf_bus.ship.worker import Shipping
from dtf_bus.worker import hardware
from dtf_bus.worker.options import WORKER_OPTIONS
from dtf_bus.worker.worker import Worker

log = logging.getLogger("dtf.worker")


def main(argv: list[str] | None = None, prepare: Callable[[Worker], None] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtf-worker", description="Run a dtf worker.")
    parser.add_argument(
        "--broker", help=f"broker endpoint (default ${defaults.BROKER_ENV} or {defaults.BROKER_ENDPOINT})"
    )
    parser.add_argument("--id", help="stable worker id (default HOST-PID)")
    parser.add_argument("--config", help="TOML config with [worker], [capabilities], [plugins]")
    parser.add_argument("--slots", type=int, help="tasks run at once (default 1)")
    parser.add_argument("--capability", action="append", metavar="K=V", help="declare a capability (repeatable)")
    parser.add_argument(
        "--resource",
        action="append",
        metavar="NAME=N",
        help="declare a consumable resource, e.g. licenses=2; gpus=N replaces the detected GPUs (repeatable)",
    )
    parser.add_argument("--plugin", action="append", metavar="NAME", help="load only these plugins (repeatable)")
    parser.add_argument("--heartbeat-interval", type=float)
    parser.add_argument("--heartbeat-liveness", type=int)
    parser.add_argument("--curve-secret", metavar="FILE", help="this worker's keypair (default $DTF_CURVE_SECRET)")
    parser.add_argument("--broker-key", metavar="FILE", help="the broker's public key (default $DTF_BROKER_KEY)")
    parser.add_argument("--alive-file", metavar="FILE", help="touch FILE while alive (dtf ping --alive-file FILE)")
    parser.add_argument("--ship-cache", metavar="DIR", help="shipped trees and venvs (default ~/.cache/dtf/ship)")
    parser.add_argument("--ship-cache-bytes", type=int, metavar="N", help="the ship cache's bound (LRU beyond it)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)

    try:
        cfg = config.load(args.config)
        wcfg = config.section(cfg, "worker")
        settings = config.merge(WORKER_OPTIONS, args, os.environ, wcfg, config.table_label(args.config, "worker"))
        declared = list(config.section(cfg, "capabilities").items())
        declared += config.parse_assignments(args.capability, "--capability")
        extra_plugins = config.section(cfg, "plugins")
        executors = load_executors(extra_plugins, settings.get("plugins"))
        interval, liveness = config.heartbeat(
            settings.get("heartbeat_interval", defaults.HEARTBEAT_INTERVAL),
            settings.get("heartbeat_liveness", defaults.HEARTBEAT_LIVENESS),
        )
        curve = security.resolve_client_curve(settings.get("curve_secret"), settings.get("broker_key"))
        declared_resources = check(
            {**config.section(cfg, "resources"), **dict(config.parse_assignments(args.resource, "--resource"))},
            "resources",
            allow_zero=True,
        )
    except (config.ConfigError, PluginError, security.SecurityError, ResourceError) as exc:
        print(f"dtf-worker: {exc}", file=sys.stderr)
        return 2
    # The keys are read: tasks (in-process executors included) must not find where they live.
    for name in [name for name in os.environ if is_secret_variable(name)]:
        del os.environ[name]
    slots = settings.get("slots", defaults.WORKER_SLOTS)
    if not isinstance(slots, int) or slots < 1:
        print(f"dtf-worker: slots must be a positive integer, got {slots!r}", file=sys.stderr)
        return 2
    if not executors:
        print("dtf-worker: no executor plugins could be loaded", file=sys.stderr)
        return 2
    broker = settings.get("broker", defaults.BROKER_ENDPOINT)
    try:
        config.endpoint(broker, settings.origin("broker"))
    except config.ConfigError as exc:
        print(f"dtf-worker: {exc}", file=sys.stderr)
        return 2
    capabilities = hardware.merge(hardware.detect(), declared)
    totals, devices = worker_totals(declared_resources, os.environ, int(capabilities.get("gpu_count") or 0))
    worker_id = settings.get("id", f"{socket.gethostname()}-{os.getpid()}")
    if not isinstance(worker_id, str) or not worker_id:
        print(f"dtf-worker: {settings.origin('id')}: the worker id must be a non-empty string", file=sys.stderr)
        return 2
    cache_bytes = settings.get("ship_cache_bytes", defaults.SHIP_CACHE_BYTES)
    if not isinstance(cache_bytes, int) or cache_bytes < 1:
        print(f"dtf-worker: ship_cache_bytes must be a positive integer, got {cache_bytes!r}", file=sys.stderr)
        return 2
    worker = Worker(
        broker=broker,
        worker_id=worker_id,
        executors=executors,
        capabilities=capabilities,
        resources=totals,
        devices=devices,
        slots=slots,
        heartbeat_interval=interval,
        heartbeat_liveness=liveness,
        curve=curve,
        alive_file=settings.get("alive_file"),
        shipping=Shipping.for_worker(broker, worker_id, curve, settings.get("ship_cache"), cache_bytes),
    )
    worker.install_signal_handlers()
    if prepare is not None:
        prepare(worker)
    log.info("worker %s connecting to %s with plugins %s", worker.worker_id, broker, ", ".join(sorted(executors)))
    worker.run()
    return 0
