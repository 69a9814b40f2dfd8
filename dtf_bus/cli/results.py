"""``dtf results``: a job's per-task results as JSON, CSV, a table or JUnit XML.

The exports say what happened in the terms spreadsheets and CI read: attempts that ran (not the
broker's attempt counter), ISO 8601 timestamps in UTC, the result as JSON in one CSV cell.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dtf_bus.cli.output import EXIT_OK, print_json, print_table
from dtf_bus.client import Client
from dtf_bus.pytest_dist import junit

RESULT_COLUMNS = ("task_id", "name", "state", "worker_id", "attempts", "started_at", "ended_at", "error", "result")
TIMESTAMP_COLUMNS = ("started_at", "ended_at")


def attempts_made(task: dict[str, Any]) -> int:
    """Attempts that were handed to a worker. The broker's ``attempts`` is the number of the
    current attempt, which starts at 1 before anything ran (and grows on requeue before the
    next assignment); its history lists the attempts that happened."""
    history = task.get("history")
    if isinstance(history, list):
        return len({a.get("attempt") for a in history if isinstance(a, dict)})
    return task["attempts"]


def iso_time(epoch: float | None) -> str:
    """Epoch seconds as ISO 8601 in UTC (what spreadsheets and pandas read); empty for None."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")


def cmd_results(client: Client, args: argparse.Namespace) -> int:
    results = [{**r, "attempts": attempts_made(r)} for r in client.results(args.job)]
    if args.format == "junit":
        sys.stdout.write(junit.to_xml(client.status(args.job)["name"], results))
    elif args.format == "json":
        print_json(results)
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(RESULT_COLUMNS)
        for r in results:
            writer.writerow([_csv_cell(r, c) for c in RESULT_COLUMNS])
        sys.stdout.write(buf.getvalue())
    else:
        rows = [("TASK", "NAME", "STATE", "WORKER", "ATTEMPTS", "SECONDS", "ERROR")]
        for r in results:
            took = f"{r['ended_at'] - r['started_at']:.3f}" if r["started_at"] and r["ended_at"] else ""
            rows.append(
                (
                    r["task_id"],
                    r["name"],
                    r["state"],
                    r["worker_id"] or "",
                    str(r["attempts"]),
                    took,
                    (r["error"] or "").splitlines()[0] if r["error"] else "",
                )
            )
        print_table(rows)
    return EXIT_OK


def _csv_cell(task: dict[str, Any], column: str) -> Any:
    if column == "result":
        return json.dumps(task[column])
    if column in TIMESTAMP_COLUMNS:
        return iso_time(task[column])
    return task[column]


def add_parser(sub: argparse._SubParsersAction, with_broker: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_broker(sub.add_parser("results", help="a job's per-task results"))
    p.add_argument("job")
    p.add_argument("--format", choices=("json", "csv", "table", "junit"), default="json")
    p.set_defaults(func=cmd_results)
