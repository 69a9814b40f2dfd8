"""``dtf submit``, ``dtf status``, ``dtf cancel``: a job's life as a script sees it.

Also the two views of a job every command shares (:func:`summary` for ``--json``, :func:`describe`
for people) and :func:`submit`, which ``dtf up --suite`` uses too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from dtf_bus import spec
from dtf_bus.cli import history as cli_history
from dtf_bus.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CommandFailed,
    print_json,
)
from dtf_bus.cli.watch import describe_blocked, watch
from dtf_bus.client import Client, ClientError
from dtf_bus.ship import client as ship_client


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """The JSON view of a job. ``failed`` counts tasks that failed or timed out; cancelled ones
    (by a user, or a failed dependency) are counted apart, since nothing in them went wrong."""
    counts = status["counts"]
    return {
        "job_id": status["job_id"],
        "name": status["name"],
        "submitter": status.get("submitter"),
        "meta": status.get("meta") or {},
        "total": status["total"],
        "succeeded": status["succeeded"],
        "failed": counts.get("failed", 0) + counts.get("timed_out", 0),
        "cancelled": counts.get("cancelled", 0),
        "done": status["done"],
        "counts": counts,
        "blocked": status["blocked"],
    }


def describe(status: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["counts"].items()))
    who = f", by {status['submitter']}" if status.get("submitter") else ""
    lines = [f"job {status['job_id']} ({status['name']}{who}): {status['total']} task(s): {counts}"]
    lines.extend(describe_blocked(status["blocked"]))
    return "\n".join(lines)


def submit(
    client: Client, tasks: list[dict[str, Any]], name: str, command: str, meta: dict[str, Any]
) -> tuple[str, list[str]]:
    """Submit, with the run's git facts and labels (``meta``), and print the broker's warnings (a
    plugin or capability no worker offers): a job that may never run says so at once. Returns the
    job id and the warnings."""
    reply = client.submit_job(tasks, name=name, meta=meta)
    job_id, warnings = reply["job_id"], [str(w) for w in reply.get("warnings") or []]
    for warning in warnings:
        print(f"dtf {command}: warning: {warning}", file=sys.stderr)
    return job_id, warnings


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    name, tasks = spec.load(args.spec)
    if args.placement_timeout is not None:
        if not args.placement_timeout > 0:
            raise spec.SpecError("--placement-timeout must be a positive number of seconds")
        for task in tasks:
            if task.get("placement_timeout") is None:
                task["placement_timeout"] = args.placement_timeout
    # The git facts of the code that runs: the shipped directory's, else the current one's (labels
    # checked before anything is uploaded).
    meta = cli_history.run_meta(args.label, args.ship or ".")
    ship_client.for_submit(client, tasks, args)  # --ship DIR: the tasks run in its packed tree
    job_id, warnings = submit(client, tasks, name, "submit", meta)
    extra = {"warnings": warnings} if warnings else {}
    if not args.wait:
        if args.json:
            print_json({"job_id": job_id, "total": len(tasks), **extra})
        else:
            print(f"submitted job {job_id} ({len(tasks)} task(s))")
        return EXIT_OK
    try:  # the job exists from here: a Ctrl-C even during the next line detaches from it
        if not args.json:
            print(f"submitted job {job_id} ({len(tasks)} task(s)); waiting...", file=sys.stderr)
        status = watch(client, job_id, timeout=args.timeout)
    except KeyboardInterrupt:
        # Detach, not cancel: the job is the broker's, and the user may only want the prompt back.
        raise CommandFailed(
            EXIT_INTERRUPTED, f"detached: job {job_id} keeps running; dtf cancel {job_id}", job_id=job_id, **extra
        ) from None
    except TimeoutError as exc:
        last = _last_status(client, job_id)
        raise CommandFailed(
            EXIT_TIMEOUT,
            f"dtf submit: {exc}; it keeps running (dtf status {job_id}; dtf cancel {job_id})",
            job_id=job_id,
            timed_out=True,
            **extra,
            **({"status": summary(last)} if last else {}),
        ) from None
    assert status is not None  # watch() returns None only when stopped, and nothing stops it here
    if args.json:
        print_json({**summary(status), **extra})
    else:
        print(describe(status))
    return EXIT_OK if status["succeeded"] == status["total"] else EXIT_FAILED


def _last_status(client: Client, job_id: str) -> dict[str, Any] | None:
    """The job's status for a timeout's report; None if the broker cannot say right now."""
    try:
        return client.status(job_id)
    except ClientError:
        return None


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status(args.job)
    if args.json:
        print_json(summary(status))
    else:
        print(describe(status))
    return EXIT_OK


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    reply = client.cancel(args.job)
    print(f"job {reply['job_id']}: {reply['cancelled']} task(s) cancelled")
    return EXIT_OK


def add_submit_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("submit", help="submit a TOML/JSON spec of [[tasks]]"))
    p.add_argument("spec")
    p.add_argument("--wait", action="store_true", help="wait until every task is final")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    p.add_argument(
        "--placement-timeout",
        type=float,
        default=None,
        metavar="S",
        help="fail tasks no live worker can take within S seconds (spec field placement_timeout)",
    )
    ship_client.add_submit_options(p)
    cli_history.label_option(p)
    p.set_defaults(func=cmd_submit)


def add_status_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("status", help="a job's progress and why tasks wait"))
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def add_cancel_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("cancel", help="cancel a job's unfinished tasks"))
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)
