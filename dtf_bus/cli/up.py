"""``dtf up``: a local broker and worker fleet (and a suite) in one command, stopped by pid on the way out.

Kept apart from the commands that talk to a running broker: it starts processes
(:class:`dtf_bus.testing.cluster.LocalCluster`), owns the signals while they run, and picks the
endpoints and worker profiles itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from dtf_bus import config, defaults, spec
from dtf_bus import profiles as worker_profiles
from dtf_bus.cli import history as cli_history
from dtf_bus.cli.jobs import describe, submit
from dtf_bus.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from dtf_bus.cli.watch import progress_printer, watch

PROFILES = {
    "cpu": ["cpu-small"],
    "mixed": ["cpu-small", "cpu-large", "cuda", "browser"],
}


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
                job_id, _ = submit(client, tasks, name, "up", cli_history.run_meta(args.label))
                print(f"suite    {name}: job {job_id}, {len(tasks)} task(s)", flush=True)
                status = watch(client, job_id, stop=lambda: stopping, on_progress=progress_printer())
                if status is not None:
                    print(describe(status))
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


def add_parser(sub: argparse._SubParsersAction) -> None:
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
