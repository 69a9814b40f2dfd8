"""The ``dtf`` command: submit, status, workers, results, cancel, up, pytest.

Exit codes are a contract for scripts: 0 everything succeeded, 1 some task failed, 2 a usage,
spec or request error, 3 the broker is unreachable, 4 ``--wait --timeout`` ran out (the job keeps
running), 130 interrupted (Ctrl-C; ``submit --wait`` detaches and says how to cancel). With
``--json`` stdout is always one JSON object, errors included (``{"error": ...}``), and the
one-line message still goes to stderr. ``dtf pytest ARGS...`` is ``pytest --dtf ARGS...`` (see
:mod:`dtf_bus.pytest_dist.plan`) and uses pytest's own codes, keeping 3 for an unreachable broker.

A wait never looks like a silent hang: tasks the broker cannot place are reported on stderr once
their reasons have held for ``defaults.BLOCKED_REPORT_AFTER`` seconds, and again whenever they change.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dtf_bus import config, defaults, logs, spec
from dtf_bus import profiles as worker_profiles
from dtf_bus.cli import history as cli_history
from dtf_bus.cli import keys as keys_cli
from dtf_bus.cli import ping as ping_cli
from dtf_bus.client import CLIENT_OPTIONS, BrokerUnreachable, Client, ClientError, default_endpoint
from dtf_bus.pytest_dist import junit
from dtf_bus.pytest_dist import plan as pytest_dist
from dtf_bus.security import curve as security
from dtf_bus.ship import client as ship_client
from dtf_bus.ship.archive import ShipError
from dtf_bus.worker import hardware

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command

# Seconds the broker's reasons for not placing tasks must hold before a wait reports them: long
# enough that a worker still registering is not reported, short enough that nobody waits blind.
# A wait asks the broker for news this often (a long poll: it answers at once when tasks finish).
WATCH_POLL = 1.0

PROFILES = {
    "cpu": ["cpu-small"],
    "mixed": ["cpu-small", "cpu-large", "cuda", "browser"],
}


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


class CommandFailed(Exception):
    """A command's end other than success, with its exit code and what ``--json`` adds."""

    def __init__(self, code: int, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def _summary(status: dict[str, Any]) -> dict[str, Any]:
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


def _describe(status: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["counts"].items()))
    who = f", by {status['submitter']}" if status.get("submitter") else ""
    lines = [f"job {status['job_id']} ({status['name']}{who}): {status['total']} task(s): {counts}"]
    lines.extend(_describe_blocked(status["blocked"]))
    return "\n".join(lines)


def _describe_blocked(blocked: list[dict[str, Any]]) -> list[str]:
    lines = []
    for block in blocked:
        names = block["tasks"]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"  {len(names)} task(s) cannot be placed ({shown}):")
        lines.extend(f"    - {reason}" for reason in block["reasons"])
    return lines


def _is_dependency_wait(block: dict[str, Any]) -> bool:
    return all(reason.startswith("waiting for dependencies") for reason in block["reasons"])


class BlockedReporter:
    """When a wait should show the broker's reasons for not placing tasks.

    Once the reasons have held for ``after`` seconds, and again each time they change; when they
    clear, the clock starts over. Waiting for a dependency is not reported: it ends by itself,
    and a dependency that cannot be placed is reported under its own name. Pure (the caller
    passes the clock), so its timing is unit-tested without a broker.
    """

    def __init__(self, after: float = defaults.BLOCKED_REPORT_AFTER) -> None:
        self.after = after
        self._current: frozenset[tuple[str, ...]] = frozenset()
        self._since = 0.0
        self._reported: frozenset[tuple[str, ...]] = frozenset()

    def update(self, blocked: list[dict[str, Any]], now: float) -> list[dict[str, Any]] | None:
        """The blocks to report now, or None."""
        blocks = [b for b in blocked if not _is_dependency_wait(b)]
        key = frozenset(tuple(b["reasons"]) for b in blocks)
        if not key:
            self._current = self._reported = frozenset()
            return None
        if key != self._current:
            self._current, self._since = key, now
        if key == self._reported:
            return None
        if not self._reported and now - self._since < self.after:
            return None
        self._reported = key
        return blocks


def _report_blocked(blocks: list[dict[str, Any]], job_id: str, waited: float) -> None:
    print(f"job {job_id}: still waiting after {waited:.0f}s; the broker cannot place:", file=sys.stderr)
    for line in _describe_blocked(blocks):
        print(line, file=sys.stderr)
    print(f"  (dtf status {job_id} for details; dtf cancel {job_id} to give up)", file=sys.stderr, flush=True)


def watch(
    client: Client,
    job_id: str,
    timeout: float | None = None,
    stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    reporter: BlockedReporter | None = None,
) -> dict[str, Any] | None:
    """Wait for a job to finish and return its final status; None once ``stop()`` is true.

    A long poll (``follow``) about once a second brings the counts and the blocked reasons with
    it, so unplaceable work is reported while we wait. A broker that stops answering is given
    ``CLIENT_RECONNECT_PATIENCE`` seconds to come back (a restart keeps the job) before
    BrokerUnreachable. ``timeout`` raises TimeoutError; the job keeps running.
    """
    reporter = reporter or BlockedReporter()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    since = 0
    unreachable_since: float | None = None
    while not stop():
        wait = WATCH_POLL
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"job {job_id} not finished within {timeout:g}s")
        try:
            news = client.follow(job_id, since=since, wait=wait, status=True)
        except BrokerUnreachable:
            now = time.monotonic()
            if unreachable_since is None:
                unreachable_since = now
                print(f"broker at {client.endpoint} not answering; still waiting for job {job_id}", file=sys.stderr)
            elif now - unreachable_since > defaults.CLIENT_RECONNECT_PATIENCE:
                raise
            continue
        unreachable_since = None
        since = news["next"]
        if news["done"]:
            return client.status(job_id)
        if on_progress is not None:
            on_progress(news)
        now = time.monotonic()
        blocks = reporter.update(news.get("blocked") or [], now)
        if blocks:
            _report_blocked(blocks, job_id, now - started)
    return None


def _submit(
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
    job_id, warnings = _submit(client, tasks, name, "submit", meta)
    extra = {"warnings": warnings} if warnings else {}
    if not args.wait:
        if args.json:
            _print_json({"job_id": job_id, "total": len(tasks), **extra})
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
            **({"status": _summary(last)} if last else {}),
        ) from None
    assert status is not None  # watch() returns None only when stopped, and nothing stops it here
    if args.json:
        _print_json({**_summary(status), **extra})
    else:
        print(_describe(status))
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
        _print_json(_summary(status))
    else:
        print(_describe(status))
    return EXIT_OK


def cmd_workers(client: Client, args: argparse.Namespace) -> int:
    workers = client.workers()
    if args.json:
        _print_json(workers)
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
    _print_table(rows)
    return EXIT_OK


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
        _print_json(results)
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
        _print_table(rows)
    return EXIT_OK


def _csv_cell(task: dict[str, Any], column: str) -> Any:
    if column == "result":
        return json.dumps(task[column])
    if column in TIMESTAMP_COLUMNS:
        return iso_time(task[column])
    return task[column]


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    reply = client.cancel(args.job)
    print(f"job {reply['job_id']}: {reply['cancelled']} task(s) cancelled")
    return EXIT_OK


def cmd_drain(client: Client, args: argparse.Namespace) -> int:
    reply = client.drain(args.worker)
    print(f"worker {reply['worker_id']} draining: finishing {reply['running']} task(s), then exiting")
    return EXIT_OK


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def up_endpoints(bind: str | None, metrics_bind: str | None) -> tuple[str, str]:
    """Where ``dtf up``'s broker listens: ``--bind``, else $DTF_BROKER when it is a tcp
    endpoint (so the other commands find the broker with no flag), else the default; the events
    socket on the next port unless ``--metrics-bind`` says otherwise. Raises ConfigError."""
    if bind is None:
        env = os.environ.get(defaults.BROKER_ENV)
        if env:
            config.endpoint(env, f"${defaults.BROKER_ENV}")
        bind = env if env and env.startswith("tcp://") else defaults.BROKER_ENDPOINT
    config.endpoint(bind, "--bind")
    if metrics_bind is None:
        host, _, port = bind.rpartition(":")
        metrics_bind = f"{host}:{int(port) + 1 if port.isdigit() and int(port) else 0}"
    config.endpoint(metrics_bind, "--metrics-bind")
    return bind, metrics_bind


def cmd_up(args: argparse.Namespace) -> int:
    """Bring up a broker and a fleet of workers, optionally run a suite, stop on Ctrl-C.

    Everything started is stopped by pid on the way out, and the way out cannot be cut short:
    SIGINT and SIGTERM are ignored while stopping, so a second Ctrl-C leaves no broker, worker
    or task behind. Interrupted before the suite finished, it exits 130.
    """
    from dtf_bus.testing.cluster import ClusterError, LocalCluster

    profiles = PROFILES[args.profile]
    configs = [worker_profiles.worker_config(p) for p in profiles]  # ConfigError if dtf_configs is missing: exit 2
    missing = [str(c) for c in configs if not c.exists()]
    if missing:
        print(f"dtf up: worker profile not found: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    bind, metrics_bind = up_endpoints(args.bind, args.metrics_bind)
    suite = None
    if args.suite:
        suite = spec.load(args.suite)
        cli_history.labels_of(args.label)  # a bad label fails before anything starts
    cluster = LocalCluster(
        args.workdir,
        db=args.db,
        bind=bind,
        metrics_bind=metrics_bind,
        strategy=args.strategy,
        http=args.http,
    )
    stopping = False

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C raises KeyboardInterrupt even if we were started with SIGINT ignored (as a
    # background job is), so that it never stops the children and leaves us waiting.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = EXIT_INTERRUPTED  # until the suite (if any) has finished
    try:
        try:
            cluster.start_broker()
        except ClusterError as exc:
            print(f"dtf up: {exc}", file=sys.stderr)
            return EXIT_USAGE
        ids = []
        for i in range(args.workers):
            profile = profiles[i % len(profiles)]
            worker_id = f"{profile}-{i + 1}"
            cluster.start_worker(worker_id, config=configs[i % len(configs)])
            ids.append(worker_id)
        try:
            cluster.wait_for_workers(ids, timeout=30)
        except TimeoutError as exc:
            print(f"dtf up: {exc}; see {cluster.workdir / 'logs'}", file=sys.stderr)
            return EXIT_FAILED
        print(f"broker   {cluster.endpoint}  (events on {cluster.metrics_endpoint})")
        print(f"workers  {', '.join(ids)}")
        print(f"results  {cluster.db}")
        print(f"logs     {cluster.workdir / 'logs'}")
        print(f"try      dtf workers --broker {cluster.endpoint}")
        # Ready-to-open URLs, as Jupyter prints them: the token is the API's admin key (never logged).
        print(f"api      {cluster.http_url}/api?token={cluster.api_token}  (Prometheus /metrics, WebSocket /ws)")
        print(f"token    {cluster.api_token_file}  (send 'Authorization: Bearer TOKEN' from scripts)")
        if args.dashboard or args.open_browser:
            try:
                url = cluster.start_dashboard(port=args.dashboard_port)
            except ClusterError as exc:
                print(f"dtf up: the dashboard did not start: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"dashboard {url}", flush=True)
            if args.open_browser:
                import webbrowser

                webbrowser.open(url)
        if suite is None:
            code = EXIT_OK
        else:
            name, tasks = suite
            with cluster.client() as client:
                job_id, _ = _submit(client, tasks, name, "up", cli_history.run_meta(args.label))
                print(f"suite    {name}: job {job_id}, {len(tasks)} task(s)", flush=True)
                status = watch(client, job_id, stop=lambda: stopping, on_progress=_progress_printer())
                if status is not None:
                    print(_describe(status))
                    code = EXIT_OK if status["succeeded"] == status["total"] else EXIT_FAILED
        if suite is None or not args.exit_when_done:
            print("running; press Ctrl-C to stop everything", flush=True)
            while not stopping:
                signal.pause()  # SIGINT raises KeyboardInterrupt; SIGTERM sets `stopping`
        return code
    except KeyboardInterrupt:
        return code
    finally:
        # Nothing may interrupt the stop: an interrupted stop is what orphans processes.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping broker and workers...", file=sys.stderr, flush=True)
        cluster.stop()


def _progress_printer() -> Callable[[dict[str, Any]], None]:
    """A ``watch`` callback printing the job's counts whenever they change."""
    last = None

    def show(news: dict[str, Any]) -> None:
        nonlocal last
        line = ", ".join(f"{n} {s}" for s, n in sorted((news.get("counts") or {}).items()))
        if line and line != last:
            print(f"  progress: {line}", flush=True)
            last = line

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtf", description="Distributed testing framework client.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_broker(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--broker", default=None, help=f"broker endpoint (default $DTF_BROKER or {default_endpoint()})")
        p.add_argument("--timeout-connect", type=float, default=5.0, help=argparse.SUPPRESS)
        p.add_argument("--curve-secret", metavar="FILE", help="this client's CURVE keypair (default $DTF_CURVE_SECRET)")
        p.add_argument("--broker-key", metavar="FILE", help="the broker's CURVE public key (default $DTF_BROKER_KEY)")
        return p

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

    p = with_broker(sub.add_parser("status", help="a job's progress and why tasks wait"))
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = with_broker(sub.add_parser("workers", help="registered workers"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)

    p = with_broker(sub.add_parser("results", help="a job's per-task results"))
    p.add_argument("job")
    p.add_argument("--format", choices=("json", "csv", "table", "junit"), default="json")
    p.set_defaults(func=cmd_results)

    # Listed for `dtf --help` only: main() hands `dtf pytest ...` to pytest before parsing.
    sub.add_parser(
        "pytest",
        add_help=False,
        help="run a pytest suite across the fleet: pytest --dtf ARGS... (--broker EP anywhere)",
    )
    keys_cli.add_parser(sub)
    ping_cli.add_parser(sub, with_broker)

    p = with_broker(sub.add_parser("cancel", help="cancel a job's unfinished tasks"))
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = with_broker(sub.add_parser("drain", help="let a worker finish its tasks, take no new ones, and exit"))
    p.add_argument("worker")
    p.set_defaults(func=cmd_drain)

    p = sub.add_parser("up", help="run a local broker and worker fleet (and a suite)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--profile", choices=sorted(PROFILES), default="mixed")
    p.add_argument("--suite", help="spec file to run once the fleet is up")
    p.add_argument("--exit-when-done", action="store_true", help="stop everything once the suite finished")
    p.add_argument("--db", default="dtf.duckdb")
    p.add_argument("--workdir", default=".dtf-up", help="logs and state of the processes started")
    p.add_argument(
        "--bind",
        default=None,
        help=f"the broker's endpoint (default ${defaults.BROKER_ENV} if tcp://, else {defaults.BROKER_ENDPOINT})",
    )
    p.add_argument("--metrics-bind", default=None, help="the events endpoint (default: the next port)")
    p.add_argument("--strategy", default=None)
    p.add_argument(
        "--http",
        default=f"{defaults.HTTP_HOST}:{defaults.HTTP_PORT}",
        metavar="HOST:PORT",
        help="the broker's HTTP API (port 0: any)",
    )
    p.add_argument("--dashboard", action="store_true", help="serve the live Bokeh dashboard too")
    p.add_argument("--dashboard-port", type=int, default=defaults.DASHBOARD_PORT, help="the dashboard's port (0: any)")
    p.add_argument("--open-browser", action="store_true", help="open the dashboard in a browser (implies --dashboard)")
    cli_history.label_option(p, "a label stored on the suite's job, for dtf jobs/compare --label (repeatable)")
    p.set_defaults(func=None)
    cli_history.add_parsers(sub, with_broker)
    return parser


PYTEST_USAGE_ERROR = 4  # pytest's own code for a usage error: `dtf pytest` keeps pytest's codes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pytest"]:  # pytest's own arguments: argparse must not see them
        endpoint = pytest_dist.shorthand_args(argv[1:])[0].partition("=")[2] or default_endpoint()
        try:
            config.endpoint(endpoint)
        except config.ConfigError as exc:
            print(f"dtf pytest: {exc}", file=sys.stderr)
            return PYTEST_USAGE_ERROR
        return pytest_dist.main(argv[1:])
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
        return cmd_up(args)
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
        _print_json({"error": message, "exit_code": code, **data})
    return code
