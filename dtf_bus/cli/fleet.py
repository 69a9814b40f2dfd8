"""``dtf workers`` and ``dtf drain``: the fleet as the broker sees it, and taking a worker out of it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dtf_bus.cli.output import EXIT_OK, print_json, print_table
from dtf_bus.client import Client
from dtf_bus.worker import hardware


def cmd_workers(client: Client, args: argparse.Namespace) -> int:
    workers = client.workers()
    if args.json:
        print_json(workers)
        return EXIT_OK
    if not workers:
        print("no workers registered")
        return EXIT_OK
    rows = [("WORKER", "STATE", "SLOTS", "RUNNING", "DONE", "HARDWARE", "RESOURCES", "DETAILS", "PLUGINS")]
    for w in workers:
        free = w.get("resources_free") or {}
        rows.append(
            (
                w["worker_id"],
                w["state"],
                str(w["slots"]),
                str(w["running"]),
                str(w["completed"]),
                ",".join(w["hardware"]),
                # free/total of each consumable resource, e.g. gpus 3/4
                ",".join(
                    f"{name} {free.get(name, total)}/{total}" for name, total in (w.get("resources") or {}).items()
                )
                or "-",
                hardware.describe(w["capabilities"]),
                ",".join(w["plugins"]),
            )
        )
    print_table(rows)
    return EXIT_OK


def cmd_drain(client: Client, args: argparse.Namespace) -> int:
    reply = client.drain(args.worker)
    print(f"worker {reply['worker_id']} draining: finishing {reply['running']} task(s), then exiting")
    return EXIT_OK


def add_workers_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("workers", help="registered workers"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)


def add_drain_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("drain", help="let a worker finish its tasks, take no new ones, and exit"))
    p.add_argument("worker")
    p.set_defaults(func=cmd_drain)
