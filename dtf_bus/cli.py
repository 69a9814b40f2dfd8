"""The ``dtf`` command: submit, status, workers, results, cancel, up, pytest.

Exit codes are a contract for scripts: 0 everything succeeded, 1 some task failed, 2 a usage,
spec or request error, 3 the broker is unreachable. ``dtf pytest ARGS...`` is ``pytest --dtf
ARGS...`` (see :mod:`dtf_bus.pytest_dist`) and uses pytest's own codes, keeping 3 for an
unreachable broker.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import signal
import sys
from pathlib import Path
from typing import Any

from dtf_bus import defaults, hardware, junit, keys_cli, logs, pytest_dist, security, spec
from dtf_bus.client import BrokerUnreachable, Client, ClientError, default_endpoint

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PROFILES = {
    "cpu": ["cpu-small"],
    "mixed": ["cpu-small", "cpu-large", "cuda", "browser"],
}


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _summary(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": status["job_id"],
        "name": status["name"],
        "submitter": status.get("submitter"),
        "total": status["total"],
        "succeeded": status["succeeded"],
        "failed": status["failed"],
        "done": status["done"],
        "counts": status["counts"],
        "blocked": status["blocked"],
    }


def _describe(status: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["counts"].items()))
    who = f", by {status['submitter']}" if status.get("submitter") else ""
    lines = [f"job {status['job_id']} ({status['name']}{who}): {status['total']} task(s): {counts}"]
    for block in status["blocked"]:
        names = block["tasks"]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"  {len(names)} task(s) cannot be placed ({shown}):")
        lines.extend(f"    - {reason}" for reason in block["reasons"])
    return "\n".join(lines)


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    name, tasks = spec.load(args.spec)
    job_id = client.submit(tasks, name=name)
    if not args.wait:
        if args.json:
            _print_json({"job_id": job_id, "total": len(tasks)})
        else:
            print(f"submitted job {job_id} ({len(tasks)} task(s))")
        return EXIT_OK
    if not args.json:
        print(f"submitted job {job_id} ({len(tasks)} task(s)); waiting...", file=sys.stderr)
    status = client.wait(job_id, timeout=args.timeout)
    if args.json:
        _print_json(_summary(status))
    else:
        print(_describe(status))
    return EXIT_OK if status["succeeded"] == status["total"] else EXIT_FAILED


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
    rows = [("WORKER", "STATE", "SLOTS", "RUNNING", "DONE", "HARDWARE", "DETAILS", "PLUGINS")]
    for w in workers:
        rows.append(
            (
                w["worker_id"],
                w["state"],
                str(w["slots"]),
                str(w["running"]),
                str(w["completed"]),
                ",".join(w["hardware"]),
                hardware.describe(w["capabilities"]),
                ",".join(w["plugins"]),
            )
        )
    _print_table(rows)
    return EXIT_OK


RESULT_COLUMNS = ("task_id", "name", "state", "worker_id", "attempts", "started_at", "ended_at", "error", "result")


def cmd_results(client: Client, args: argparse.Namespace) -> int:
    results = client.results(args.job)
    if args.format == "junit":
        sys.stdout.write(junit.to_xml(client.status(args.job)["name"], results))
    elif args.format == "json":
        _print_json(results)
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(RESULT_COLUMNS)
        for r in results:
            writer.writerow([json.dumps(r[c]) if c == "result" else r[c] for c in RESULT_COLUMNS])
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


def cmd_up(args: argparse.Namespace) -> int:
    """Bring up a broker and a fleet of workers, optionally run a suite, stop on Ctrl-C."""
    from dtf_bus.cluster import ClusterError, LocalCluster

    profiles = PROFILES[args.profile]
    configs = [CONFIGS / "workers" / f"{p}.toml" for p in profiles]
    missing = [str(c) for c in configs if not c.exists()]
    if missing:
        print(f"dtf up: worker profile not found: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    suite = None
    if args.suite:
        suite = spec.load(args.suite)
    cluster = LocalCluster(
        args.workdir,
        db=args.db,
        bind=args.bind,
        metrics_bind=args.metrics_bind,
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
        cluster.wait_for_workers(ids, timeout=30)
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
        code = EXIT_OK
        if suite is not None:
            name, tasks = suite
            with cluster.client() as client:
                job_id = client.submit(tasks, name=name)
                print(f"suite    {name}: job {job_id}, {len(tasks)} task(s)")
                status = _follow(client, job_id, lambda: stopping)
                if status is not None:
                    print(_describe(status))
                    code = EXIT_OK if status["succeeded"] == status["total"] else EXIT_FAILED
        if suite is None or not args.exit_when_done:
            print("running; press Ctrl-C to stop everything")
            while not stopping:
                signal.pause()  # SIGINT raises KeyboardInterrupt; SIGTERM sets `stopping`
        return code
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        print("stopping broker and workers...", file=sys.stderr)
        cluster.stop()


def _follow(client: Client, job_id: str, stop: Any) -> dict[str, Any] | None:
    """Print progress once a second until the job is done; None if interrupted."""
    last = None
    while not stop():
        try:
            return client.wait(job_id, timeout=1.0)
        except TimeoutError:
            status = client.status(job_id)
            line = ", ".join(f"{n} {s}" for s, n in sorted(status["counts"].items()))
            if line != last:
                print(f"  progress: {line}")
                last = line
    return None


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
    p.add_argument("--bind", default="tcp://127.0.0.1:5555")
    p.add_argument("--metrics-bind", default="tcp://127.0.0.1:5556")
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
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pytest"]:  # pytest's own arguments: argparse must not see them
        return pytest_dist.main(argv[1:])
    logs.configure("WARNING", "%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            if args.workers < 1:
                print("dtf up: --workers must be at least 1", file=sys.stderr)
                return EXIT_USAGE
            return cmd_up(args)
        if args.command == "keys":
            return keys_cli.run(args)
        curve = security.resolve_client_curve(args.curve_secret, args.broker_key)
        with Client(args.broker, timeout=args.timeout_connect, curve=curve) as client:
            return args.func(client, args)
    except security.SecurityError as exc:
        print(f"dtf {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except spec.SpecError as exc:
        print(f"dtf {args.command}: invalid spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerUnreachable as exc:
        print(f"dtf {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as exc:
        print(f"dtf {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError as exc:
        print(f"dtf {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
