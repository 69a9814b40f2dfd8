"""``pytest --dtf``: run a pytest suite across a dtf fleet and look exactly like pytest.

Registered as the ``pytest11`` entry point ``dtf``, so it loads in every pytest run. Without
``--dtf`` it only declares its options, its ini key and the ``dtf`` marker (so a suite using
the marker passes ``--strict-markers`` locally too) and costs nothing else: no dtf module beyond
``defaults`` is imported.

With ``--dtf`` it is the controller of docs/pytest-dist.md, modelled on pytest-xdist's
``DSession``: ``pytest_collection`` returns True (the controller loads the rootdir's conftest.py
as pytest always does, but never imports a test module), ``pytest_runtestloop`` submits a
``collect`` task to the fleet, plans the test tasks from what a worker session collected
(:mod:`dtf_bus.pytest_dist.plan`), follows the job with :meth:`Client.follow` and replays every
worker report through pytest's own hooks. The terminal, ``--junitxml``, ``--durations``, ``-x``,
``-ra`` and any conftest or reporting plugin on this side therefore behave as in a local run.

``--dtf`` takes its endpoint only as ``--dtf=EP`` (as pytest-cov's ``--cov``): ``pytest --dtf
tests/`` is the default endpoint and the path ``tests/``.
"""

from __future__ import annotations

import copy
import logging
import os
import shlex
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from dtf_bus import defaults

if TYPE_CHECKING:
    from dtf_bus.client import Client
    from dtf_bus.pytest_dist.plan import Unit

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 3  # dtf's code for an unreachable broker (pytest's own 3 is an internal error)
PLUGIN_NAME = "pytest-session"
MARKER_LINE = (
    "dtf(requires={...}, resources={...}): under pytest --dtf, run this test only on dtf workers "
    "meeting these requirements (hardware any-of, min_memory_gb, or any capability), holding these "
    "consumable resources (e.g. resources={'gpus': 1}: a GPU of its own) while it runs"
)


# ----------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dtf", "distributed testing over a dtf fleet")
    group.addoption(
        "--dtf",
        nargs="?",
        const="",
        default=None,
        metavar="EP",
        help="run the tests on the dtf fleet at EP (only as --dtf=EP; default $DTF_BROKER, else "
        f"{defaults.BROKER_ENDPOINT})",
    )
    group.addoption(
        "--dtf-requires",
        action="append",
        default=[],
        metavar="K=V",
        help="worker requirement for every test, e.g. hardware=cuda (repeatable; hardware accumulates any-of)",
    )
    group.addoption(
        "--dtf-dist",
        choices=("load", "loadfile", "loadscope", "loadgroup"),
        default="load",
        help="scheduling units, as xdist's --dist: load (default), loadfile, loadscope, loadgroup",
    )
    group.addoption("--dtf-label", action="append", default=[], metavar="K=V", help="a label stored on the run's job")
    group.addoption("--dtf-max-workers", type=int, default=None, metavar="N", help="use at most N sessions at once")
    group.addoption("--dtf-python", default=None, metavar="PATH", help="the interpreter the workers run pytest with")
    group.addoption(
        "--dtf-reruns", type=int, default=0, metavar="N", help="rerun a failed test up to N times (passing: flaky)"
    )
    group.addoption(
        "--dtf-placement-timeout",
        type=float,
        default=defaults.PYTEST_PLACEMENT_TIMEOUT,
        metavar="S",
        help="seconds a test waits for a live worker that can run it (default %(default)s)",
    )
    group.addoption(
        "--dtf-curve-secret", default=None, metavar="FILE", help="CURVE keypair (default $DTF_CURVE_SECRET)"
    )
    group.addoption(
        "--dtf-broker-key", default=None, metavar="FILE", help="the broker's CURVE public key (default $DTF_BROKER_KEY)"
    )
    group.addoption(
        "--dtf-connect-timeout",
        type=float,
        default=defaults.CLIENT_TIMEOUT,
        metavar="S",
        help="seconds the broker has to answer (default %(default)s)",
    )
    group.addoption("--dtf-ship", action="store_true", help="ship the project (rootdir's git checkout) to the workers")
    group.addoption("--dtf-ship-requirements", metavar="FILE", help="with --dtf-ship: tests run in a venv of FILE")
    group.addoption(
        "--dtf-ship-max-bytes", type=int, default=defaults.SHIP_MAX_BYTES, metavar="N", help="ship at most N bytes"
    )
    parser.addini(
        "dtf_markers",
        "dtf: marker name = worker requirements (K=V ...), one per line, e.g. 'gpu = hardware=cuda'",
        type="linelist",
        default=[],
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """A bare ``--dtf`` never takes the next token as its endpoint: it becomes ``--dtf=``, and the
    early parse is redone so the initial conftests are those of the paths the user gave."""
    if "--dtf" not in args:
        return
    args[:] = ["--dtf=" if a == "--dtf" else a for a in args]
    known = early_config.known_args_namespace
    reparsed = parser.parse_known_args(args, namespace=copy.copy(early_config.option))
    if reparsed.confcutdir is None:
        reparsed.confcutdir = known.confcutdir
    early_config.known_args_namespace = reparsed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Turns on the controller: checks the options, reaches the broker, registers the plugin.
    An unreachable broker is one line and exit 3, before any session output."""
    endpoint = config.getoption("dtf", None)
    if endpoint is None:
        return None
    option = config.option
    if option.help or option.version or option.markers or option.showfixtures or option.show_fixtures_per_test:
        return None
    from dtf_bus import config as dtf_config
    from dtf_bus.client import BrokerUnreachable, Client, ClientError, default_endpoint
    from dtf_bus.pytest_dist import plan as pytest_dist
    from dtf_bus.security import curve as security
    from dtf_bus.ship import client as ship_client

    try:
        endpoint = dtf_config.endpoint(endpoint or default_endpoint(), "--dtf")
        settings = Settings.from_config(config)
        curve = security.resolve_client_curve(option.dtf_curve_secret, option.dtf_broker_key)
    except (pytest_dist.PlanError, security.SecurityError, dtf_config.ConfigError) as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return pytest.ExitCode.USAGE_ERROR
    client = Client(endpoint, timeout=option.dtf_connect_timeout, curve=curve)
    try:
        workers = client.workers()
        settings.ship = ship_client.for_pytest(client, config.rootpath, option)  # --dtf-ship: packed, uploaded
    except BrokerUnreachable as exc:
        client.close()
        sys.stderr.write(f"dtf: {exc}\n")
        return EXIT_UNREACHABLE
    except ClientError as exc:
        client.close()
        sys.stderr.write(f"ERROR: dtf: {exc}\n")
        return pytest.ExitCode.USAGE_ERROR
    client.timeout = max(client.timeout, defaults.CLIENT_TIMEOUT)
    config.pluginmanager.register(Controller(config, client, settings, workers), "dtf-controller")
    return None


@dataclass
class Settings:
    """The run's dtf options, checked once."""

    requires: dict[str, Any]
    dist: str
    max_workers: int | None
    python: str | None
    reruns: int
    placement_timeout: float
    marker_requires: dict[str, dict[str, Any]]
    args: list[str] = field(default_factory=list)
    ship: Any = None  # dtf_bus.ship.client.Shipped with --dtf-ship
    labels: dict[str, str] = field(default_factory=dict)  # --dtf-label, stored on the job with its git facts

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        from dtf_bus.pytest_dist import plan as pytest_dist

        option = config.option
        if getattr(option, "numprocesses", None):
            raise pytest_dist.PlanError("--dtf and -n (pytest-xdist) cannot be used together")
        if option.dtf_max_workers is not None and option.dtf_max_workers < 1:
            raise pytest_dist.PlanError("--dtf-max-workers must be at least 1")
        if option.dtf_reruns < 0:
            raise pytest_dist.PlanError("--dtf-reruns must be >= 0")
        if not option.dtf_placement_timeout >= 0:
            raise pytest_dist.PlanError("--dtf-placement-timeout must be >= 0 seconds")
        return cls(
            requires=pytest_dist.parse_requires(option.dtf_requires),
            dist=option.dtf_dist,
            max_workers=option.dtf_max_workers,
            python=option.dtf_python,
            reruns=option.dtf_reruns,
            placement_timeout=option.dtf_placement_timeout,
            marker_requires=pytest_dist.parse_marker_map(config.getini("dtf_markers")),
            args=session_args_of(config),
            labels=pytest_dist.parse_labels(option.dtf_label),
        )


def session_args_of(config: pytest.Config) -> list[str]:
    """The user's arguments (``PYTEST_ADDOPTS`` first, as pytest reads them) as worker sessions
    get them; ini ``addopts`` are left out, the sessions read the same ini file."""
    from dtf_bus.pytest_dist import plan as pytest_dist

    options: dict[str, pytest_dist.Option] = {}
    for group in getattr(config._parser, "_groups", []):  # no public API lists the options
        for opt in group.options:
            nargs = opt.attrs().get("nargs")
            if nargs is None and opt.attrs().get("action") in (
                "store_true",
                "store_false",
                "store_const",
                "count",
                "append_const",
            ):
                nargs = 0  # pytest 8 keeps addoption's keywords, not argparse's action
            for name in opt.names():
                options[name] = pytest_dist.Option(opt.dest, nargs)
    args = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + list(config.invocation_params.args)
    return pytest_dist.session_args(args, options, str(config.invocation_params.dir), str(config.rootpath))


# ---------------------------------------------------------------- replay bits


class _Stop(Exception):
    """-x / --maxfail / a plugin's shouldstop: the fleet is cancelled and the loop ends."""


class DtfReason:
    """The longrepr of a report the controller makes (a test no worker could run): a terminal
    section, a ``reprcrash`` for the short summary line and JUnit's message, a string elsewhere."""

    def __init__(self, message: str, path: str = "", lineno: int | None = None) -> None:
        self.message = message
        self.reprcrash = SimpleNamespace(message=message.splitlines()[0] if message else "", path=path, lineno=lineno)

    def toterminal(self, tw: Any) -> None:
        for line in self.message.splitlines():
            tw.line(line, red=True)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class RemoteItem:
    """A test collected on a worker, where a hook wants an item (``pytest_deselected``)."""

    nodeid: str
    location: tuple[str, int | None, str]


_CATEGORIES: dict[str, type[Warning]] = {}


def warning_category(name: str | None) -> type[Warning]:
    """A worker's warning class by name: builtin or pytest's, else a stand-in of that name (so the
    warnings summary prints the name the worker saw)."""
    if not name:
        return UserWarning
    import builtins

    found = getattr(builtins, name, None) or getattr(pytest, name, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    return _CATEGORIES.setdefault(name, type(name, (UserWarning,), {"__module__": "builtins"}))


def _location(value: Any, nodeid: str) -> tuple[str, int | None, str]:
    if isinstance(value, list | tuple) and len(value) == 3:
        return (str(value[0]), value[1] if isinstance(value[1], int) else None, str(value[2]))
    path, _, rest = nodeid.partition("::")
    return (path, None, rest or path)


# --------------------------------------------------------------- controller


class Controller:
    """The controlling side of a distributed run (pytest-xdist's DSession, over dtf)."""

    def __init__(
        self, config: pytest.Config, client: Client, settings: Settings, workers: list[dict[str, Any]]
    ) -> None:
        self.config = config
        self.client = client
        self.settings = settings
        self.workers = workers
        self.rootdir = str(config.rootpath)
        self.session_key = uuid.uuid4().hex
        self.job: str | None = None
        self.closed = False
        self.cursor = 0
        self.progress_cursor = 0
        # What running tasks already streamed (their tests' reports, and events of no test of
        # theirs), so the task's final result replays only the rest.
        self.streamed: dict[str, set[str]] = {}
        self.streamed_loose: dict[str, set[tuple[str, str, str]]] = {}
        self.next_status = 0.0
        self.units: dict[str, Unit] = {}  # submitted, not yet final
        self.backlog: list[Unit] = []  # planned, held back by --dtf-max-workers
        self.planned = 0
        self.tasks_submitted = 0
        self.workers_used: set[str] = set()
        self.locations: dict[str, tuple[str, int | None, str]] = {}
        self.costs: dict[str, float] = {}
        self.reruns: dict[str, int] = {}
        self.blocked_since: dict[str, float] = {}
        self.abandoned = 0
        self.digest: str | None = None
        self.collected_count = 0
        self.collect_worker = ""
        self.mismatches: list[str] = []
        self.collect_errors_seen: set[str] = set()
        self.session: pytest.Session | None = None
        self.stopping = False

    @property
    def terminal(self) -> Any:
        """pytest's terminal reporter (registered after this plugin, absent with -p no:terminal)."""
        return self.config.pluginmanager.get_plugin("terminalreporter")

    # ------------------------------------------------------------ hooks

    def pytest_report_header(self, config: pytest.Config) -> str:
        live = [w for w in self.workers if w.get("state") in ("idle", "busy")]
        able = [w for w in live if PLUGIN_NAME in w.get("plugins", [])]
        slots = sum(int(w.get("slots") or 1) for w in able)
        shipped = f"\ndtf: {self.settings.ship.describe()}" if self.settings.ship is not None else ""
        return f"dtf: {self.client.endpoint}: {len(able)} worker(s) with {PLUGIN_NAME}, {slots} slot(s){shipped}"

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        return True  # the workers collect; this side never imports a test module

    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        from dtf_bus.client import BrokerUnreachable, ClientError

        self.session = session
        try:
            self._run(session)
        except _Stop:
            self._cancel()
            if session.shouldfail:
                raise session.Failed(session.shouldfail) from None
            raise session.Interrupted(session.shouldstop) from None
        except KeyboardInterrupt:
            self._cancel()
            raise
        except BrokerUnreachable as exc:
            pytest.exit(f"dtf: {exc}", returncode=EXIT_UNREACHABLE)
        except ClientError as exc:
            self._cancel()
            pytest.exit(f"dtf: {exc}", returncode=pytest.ExitCode.INTERRUPTED)
        finally:
            self._close_job()
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, tuple[str, dict]] | None:
        if report.outcome == "rerun":  # as pytest-rerunfailures shows it
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.mismatches:
            terminalreporter.write_sep("=", "dtf: sessions collected different tests", red=True)
            for line in self.mismatches:
                terminalreporter.write_line(line)
            terminalreporter.write_line(
                "The suite differs between machines (checkout, installed packages or plugins); "
                "node ids must match for a run to be trusted."
            )
        if self.job and self.config.option.verbose >= 0:
            on = ", ".join(sorted(self.workers_used)) or "no worker"
            terminalreporter.write_line(f"dtf: job {self.job}: {self.tasks_submitted} task(s) on {on}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.client.close()

    # ------------------------------------------------------------ the run

    def _run(self, session: pytest.Session) -> None:
        from dtf_bus.pytest_dist import plan as pytest_dist

        option = self.config.option
        lf = bool(getattr(option, "lf", False))  # absent under -p no:cacheprovider
        ff = bool(getattr(option, "failedfirst", False))
        history = self._history()  # durations order the run even without --lf/--ff
        # One collection per session the fleet can run at once, as xdist's workers each collect:
        # the first to finish plans the run, the others start their sessions meanwhile (instead
        # of when their first tests arrive) and must find the same tests.
        collects = min(self._sessions(), defaults.PYTEST_PARALLEL_COLLECTS) if not option.collectonly else 1
        warm = [self._collect_unit(index) for index in range(1, collects)]
        self.job = self._submit([self._collect_unit(), *warm], first=True)
        items = self._await_collection(session)
        if option.collectonly:
            self._show_collection(items)
            return
        nodeids = [item["nodeid"] for item in items]
        order, deselected, status = pytest_dist.select_last_failed(
            nodeids,
            self._last_failed(history),
            lf=lf,
            ff=ff,
            no_failures=getattr(option, "last_failed_no_failures", "all") or "all",
        )
        if status and self.terminal is not None and option.verbose >= 0:
            self.terminal.write_line(status)
        if deselected:
            self.config.hook.pytest_deselected(items=[RemoteItem(n, self.locations[n]) for n in deselected])
        session.testscollected = len(order)
        if not order:
            return
        self.costs = pytest_dist.estimate_costs(order, history.get("durations") or {})
        by_id = {item["nodeid"]: item for item in items}
        first: set[str] = set()
        if ff and not lf:
            failed = set(self._last_failed(history))
            first = {n for n in order if n in failed or n.split("::", 1)[0] in failed}
        units = self._plan([by_id[n] for n in order if n in first], boost=True)
        units += self._plan([by_id[n] for n in order if n not in first], boost=False)
        self._launch(units)
        self._follow_to_end()

    def _plan(self, items: list[dict[str, Any]], boost: bool) -> list[Unit]:
        from dtf_bus.pytest_dist import plan as pytest_dist

        if not items:
            return []
        units = pytest_dist.plan_units(items, self.settings.dist, self.costs, self._sessions(), self.settings.requires)
        for unit in units:
            unit.name = f"{self.planned:05d} {unit.label}"[: defaults.PYTEST_TASK_NAME_CHARS]
            unit.first = boost
            self.planned += 1
        return units

    def _sessions(self) -> int:
        """Sessions the fleet can run at once (its pytest-session slots), the chunking's divisor."""
        slots = sum(
            int(w.get("slots") or 1)
            for w in self.workers
            if w.get("state") in ("idle", "busy") and PLUGIN_NAME in w.get("plugins", [])
        )
        if self.settings.max_workers:
            slots = min(slots, self.settings.max_workers) if slots else self.settings.max_workers
        return max(1, slots)

    def _launch(self, units: list[Unit]) -> None:
        units.sort(key=lambda u: -u.priority)
        if self.settings.max_workers:
            self.backlog = units
            self._submit_backlog()
        else:
            self._submit(units)
        self._maybe_close()

    def _submit_backlog(self) -> None:
        room = (self.settings.max_workers or 0) - len(self.units)
        if room > 0 and self.backlog:
            batch, self.backlog = self.backlog[:room], self.backlog[room:]
            self._submit(batch)
            self._maybe_close()

    def _maybe_close(self) -> None:
        """The job is closed as soon as nothing more can join it: then it is done once its
        tasks are final, and follow() says so. Reruns keep it open to the end."""
        if not self.closed and not self.backlog and not self.settings.reruns:
            self._close_job()

    def _follow_to_end(self) -> None:
        while self.units or self.backlog:
            reply = self._follow()
            for entry in reply.get("progress") or []:
                self._on_progress(entry)
            for task in reply["tasks"]:
                self._on_task(task)
            self._check_placement(reply)
            self._submit_backlog()
            if reply.get("done") and self.units:
                for name in list(self.units):
                    self._give_up(self.units.pop(name), "the job ended (cancelled outside this run?)")
        if self.abandoned:
            self._cancel()  # what no worker could run is still queued

    # ------------------------------------------------------------ broker calls

    def _collect_unit(self, index: int = 0) -> Unit:
        """The collection (index 0), or a warm-up one that starts another session meanwhile."""
        from dtf_bus.pytest_dist.plan import COLLECT_TASK, Unit

        name = f"{COLLECT_TASK} {index}" if index else COLLECT_TASK
        return Unit(name=name, nodeids=[], requires=dict(self.settings.requires), cost=0.0, first=True)

    def _task(self, unit: Unit) -> dict[str, Any]:
        from dtf_bus.pytest_dist.plan import COLLECT_TASK

        params: dict[str, Any] = {
            "session": self.session_key,
            "mode": "collect" if unit.name.startswith(COLLECT_TASK) else "run",
            "rootdir": self.rootdir,
            "args": self.settings.args,
            "marker_requires": self.settings.marker_requires,
        }
        if self.settings.python:
            params["python"] = self.settings.python
        if self.settings.ship is not None:
            params["ship"] = self.settings.ship.params
        if params["mode"] == "run":
            params["nodeids"] = unit.nodeids
        if unit.rerun:
            params["rerun"] = True
        task: dict[str, Any] = {
            "name": unit.name,
            "plugin": PLUGIN_NAME,
            "params": params,
            "priority": unit.priority,
            "retries": 0,
        }
        requires = dict(unit.requires)
        resources = requires.pop("resources", None)  # from dtf(resources=...): the task's own field
        if requires:
            task["requires"] = requires
        if resources:
            task["resources"] = resources
        return task

    def _submit(self, units: list[Unit], first: bool = False) -> str:
        from dtf_bus.pytest_dist import plan as pytest_dist

        name = "pytest " + " ".join(self.settings.args)
        step = defaults.PYTEST_SUBMIT_BATCH
        for start in range(0, len(units), step):
            batch = units[start : start + step]
            meta = None if self.job else pytest_dist.run_meta(self.rootdir, self.settings.labels)
            self.job = self.client.submit(
                [self._task(u) for u in batch], name=name[:200], job_id=self.job, keep_open=True, meta=meta
            )
            for unit in batch:
                self.units[unit.name] = unit
            self.tasks_submitted += len(batch)
        assert self.job is not None
        return self.job

    def _follow(self) -> dict[str, Any]:
        now = time.monotonic()
        want_status = now >= self.next_status
        assert self.job is not None
        reply = self.client.follow(
            self.job,
            self.cursor,
            wait=defaults.PYTEST_FOLLOW_WAIT,
            status=want_status,
            progress_since=self.progress_cursor,
        )
        self.cursor = reply.get("next", self.cursor)
        self.progress_cursor = reply.get("progress_next", self.progress_cursor)
        if want_status:
            self.next_status = time.monotonic() + defaults.PYTEST_FOLLOW_WAIT
        return reply

    def _history(self) -> dict[str, Any]:
        from dtf_bus.client import BrokerUnreachable, ClientError

        try:
            return self.client.test_history(self.rootdir) or {}
        except BrokerUnreachable:
            raise
        except ClientError as exc:  # a broker without history still runs the suite
            log.warning("dtf: no test history from the broker (%s); scheduling without it", exc)
            return {}

    def _last_failed(self, history: dict[str, Any]) -> list[str]:
        """DuckDB's last failures for this rootdir; the local cache only when DuckDB has never
        seen the suite (a fleet's history is what every machine agrees on)."""
        if history.get("durations") or history.get("last_failed"):
            return list(history.get("last_failed") or [])
        cache = getattr(self.config, "cache", None)
        return list((cache.get("cache/lastfailed", {}) if cache is not None else {}) or {})

    def _close_job(self) -> None:
        if self.job and not self.closed:
            self.closed = True
            try:
                self.client.close_job(self.job)
            except Exception as exc:  # the run's outcome stands; a stale open job only costs memory
                log.warning("dtf: could not close job %s: %s", self.job, exc)

    def _cancel(self) -> None:
        if self.job:
            try:
                self.client.cancel(self.job)
            except Exception as exc:
                log.warning("dtf: could not cancel job %s: %s", self.job, exc)

    # ------------------------------------------------------------ collection

    def _await_collection(self, session: pytest.Session) -> list[dict[str, Any]]:
        from dtf_bus.pytest_dist.plan import COLLECT_TASK

        early: list[dict[str, Any]] = []
        while True:
            reply = self._follow()
            task = next((t for t in reply["tasks"] if t["name"] == COLLECT_TASK), None)
            if task is not None:
                self.units.pop(COLLECT_TASK, None)
                items = self._on_collected(session, task)
                for other in early + [t for t in reply["tasks"] if t is not task]:  # warm-ups done meanwhile
                    self._on_task(other)
                return items
            early += reply["tasks"]  # warm-up collections that beat the first: compared once it is in
            self._check_placement(reply)
            if COLLECT_TASK not in self.units:  # given up: no worker can collect
                raise session.Interrupted(self._collection_error_text(session))
            if reply.get("done"):
                self._collect_error("", "dtf: the job ended before the suite was collected")
                raise session.Interrupted(self._collection_error_text(session))

    def _on_collected(self, session: pytest.Session, task: dict[str, Any]) -> list[dict[str, Any]]:
        result = task.get("result") if isinstance(task.get("result"), dict) else {}
        if task.get("worker_id"):
            self.workers_used.add(task["worker_id"])
            self.collect_worker = task["worker_id"]
        errors_before = len(self.collect_errors_seen)
        for entry in result.get("reports") or []:
            if entry.get("kind") == "collect":
                self._replay_collect(entry.get("data") or {})
            elif entry.get("kind") == "warning":
                self._replay_warning(entry.get("data") or {})
        if task.get("state") != "succeeded" and len(self.collect_errors_seen) == errors_before:
            self._collect_error(
                "",
                f"dtf: the suite could not be collected on {task.get('worker_id') or 'a worker'}: "
                f"{task.get('error') or task.get('state')}",
            )
        collected = result.get("collected") or {}
        items = [i for i in collected.get("items") or [] if isinstance(i, dict) and i.get("nodeid")]
        self.digest = collected.get("digest")
        self.collected_count = int(collected.get("count") or len(items))
        for item in items:
            self.locations[item["nodeid"]] = _location(item.get("location"), item["nodeid"])
        deselected = [str(n) for n in collected.get("deselected") or []]
        if deselected:  # by -k/-m on the worker: the summary says "N deselected", as locally
            self.config.hook.pytest_deselected(items=[RemoteItem(n, _location(None, n)) for n in deselected])
        if session.testsfailed and not self.config.option.continue_on_collection_errors:
            raise session.Interrupted(self._collection_error_text(session))
        return items

    @staticmethod
    def _collection_error_text(session: pytest.Session) -> str:
        n = session.testsfailed
        return f"{n} error{'s' if n != 1 else ''} during collection"

    def _collect_error(self, nodeid: str, message: str) -> None:
        report = pytest.CollectReport(nodeid, "failed", DtfReason(message), [])
        self.collect_errors_seen.add(message)
        self.config.hook.pytest_collectreport(report=report)

    def _replay_collect(self, data: dict[str, Any]) -> None:
        report = self._report(data)
        if report is None:
            return
        key = str(report.longrepr)
        if key in self.collect_errors_seen:  # every session reports the same broken module
            return
        self.collect_errors_seen.add(key)
        self.config.hook.pytest_collectreport(report=report)

    def _show_collection(self, items: list[dict[str, Any]]) -> None:
        """``--collect-only``: the node ids, as ``pytest --co -q`` prints them."""
        if self.terminal is None:
            return
        for item in items:
            self.terminal.write_line(item["nodeid"])
        if hasattr(self.terminal, "_numcollected"):
            self.terminal._numcollected = len(items)  # the summary line counts from it

    # ------------------------------------------------------------ results

    def _on_task(self, task: dict[str, Any]) -> None:
        from dtf_bus.pytest_dist import plan as pytest_dist

        unit = self.units.pop(task.get("name", ""), None)
        if unit is None:
            return
        self.blocked_since.pop(unit.name, None)
        if task.get("worker_id"):
            self.workers_used.add(task["worker_id"])
        result = task.get("result") if isinstance(task.get("result"), dict) else {}
        self._check_digest(task, result)
        if unit.name.startswith(pytest_dist.COLLECT_TASK):
            return  # a warm-up collection: only its digest matters (its errors were the first's)
        self._replay_unit(unit, task, result)

    def _check_digest(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        collected = result.get("collected") or {}
        digest = collected.get("digest")
        if not digest or not self.digest or digest == self.digest:
            return
        worker = task.get("worker_id") or "?"
        line = (
            f"{worker} collected {collected.get('count')} tests (digest {digest[:12]}), "
            f"{self.collect_worker or 'the collecting worker'} collected {self.collected_count} "
            f"(digest {self.digest[:12]})"
        )
        items = collected.get("items")
        if isinstance(items, list):  # a collection answer lists its tests: say which differ, as xdist does
            theirs = {i.get("nodeid") for i in items if isinstance(i, dict)}
            ours = set(self.locations)
            for label, ids in (("missing there", ours - theirs), (f"only on {worker}", theirs - ours)):
                if ids:
                    shown = sorted(str(n) for n in ids)
                    more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
                    line += f"; {label}: {', '.join(shown[:10])}{more}"
        if line not in self.mismatches:
            self.mismatches.append(line)
            assert self.session is not None
            self.session.testsfailed += 1  # a run over differing suites is not a pass

    def _on_progress(self, entry: dict[str, Any]) -> None:
        """A running task's finished test, shown now rather than when its whole batch ends."""
        unit = self.units.get(entry.get("name") or "")
        reports = (entry.get("data") or {}).get("reports")
        if unit is not None and isinstance(reports, list):
            self._replay_reports(unit, reports)

    def _replay_reports(self, unit: Unit, reports: list[Any]) -> set[str]:
        """Replays what was not streamed before; returns the unit's tests that ran to their end."""
        streamed = self.streamed.setdefault(unit.name, set())
        loose_seen = self.streamed_loose.setdefault(unit.name, set())
        wanted = set(unit.nodeids)
        per_test: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        loose: list[tuple[str, dict[str, Any]]] = []
        for entry in reports:
            kind, data = entry.get("kind"), entry.get("data") or {}
            if kind == "collect":
                self._replay_collect(data)
                continue
            nodeid = data.get("nodeid") or ""
            if nodeid in wanted:
                if nodeid not in streamed:
                    per_test.setdefault(nodeid, []).append((kind, data))
            else:  # session warnings, or a teardown an earlier test left for this batch
                key = (str(kind), nodeid, str(data.get("when") or data.get("message") or ""))
                if key not in loose_seen:
                    loose_seen.add(key)
                    loose.append((kind, data))
        for kind, data in loose:
            self._replay_event(kind, data)
        for nodeid, events in per_test.items():
            if self._replay_test(unit, nodeid, events):
                streamed.add(nodeid)
        return streamed

    def _replay_unit(self, unit: Unit, task: dict[str, Any], result: dict[str, Any]) -> None:
        done = self._replay_reports(unit, result.get("reports") or [])
        self.streamed.pop(unit.name, None)
        self.streamed_loose.pop(unit.name, None)
        missing = [n for n in unit.nodeids if n not in done]
        if missing and not self.stopping:
            state = task.get("state")
            why = task.get("error") or (f"the task ended {state}" if state != "succeeded" else "")
            why = why or "the session returned no report for it"
            for nodeid in missing:
                self._error_test(nodeid, f"dtf: {nodeid} was not run: {why}")

    def _replay_test(self, unit: Unit, nodeid: str, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """One test's events in order; False when they stop short of its end (not run)."""
        hook = self.config.hook
        reports = []
        for kind, data in events:
            if kind == "test":
                report = self._report(data)
                if report is not None:
                    reports.append(report)
                    data["_report"] = report
        if not any(k == "finish" for k, _ in events) and not any(r.when == "teardown" for r in reports):
            return False
        failed = next((r for r in reports if r.failed), None)
        if failed is not None and self.reruns.get(nodeid, 0) < self.settings.reruns:
            location = self.locations.get(nodeid) or _location(failed.location, nodeid)
            failed.outcome = "rerun"
            hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
            hook.pytest_runtest_logreport(report=failed)
            hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
            self._rerun(unit, nodeid)
            return True
        for kind, data in events:
            self._replay_event(kind, data)
        return True

    def _replay_event(self, kind: str, data: dict[str, Any]) -> None:
        hook = self.config.hook
        nodeid = data.get("nodeid") or ""
        if kind == "start":
            hook.pytest_runtest_logstart(nodeid=nodeid, location=_location(data.get("location"), nodeid))
        elif kind == "finish":
            hook.pytest_runtest_logfinish(nodeid=nodeid, location=_location(data.get("location"), nodeid))
        elif kind == "warning":
            self._replay_warning(data)
        elif kind == "test":
            report = data.pop("_report", None) or self._report(data)
            if report is None:
                log.warning("dtf: a worker sent a report pytest cannot rebuild: %.200r", data)
                return
            hook.pytest_runtest_logreport(report=report)
            self._check_stop()

    def _report(self, data: dict[str, Any]) -> Any:
        """A worker's serialised report rebuilt by pytest. The reports travel as JSON, which has
        no tuples; pytest expects a skip's longrepr (path, lineno, reason) and the location as
        tuples (execnet, xdist's channel, keeps them), so they are restored first."""
        if isinstance(data.get("longrepr"), list) and len(data["longrepr"]) == 3:
            data = {**data, "longrepr": tuple(data["longrepr"])}
        if isinstance(data.get("location"), list):
            data = {**data, "location": tuple(data["location"])}
        return self.config.hook.pytest_report_from_serializable(config=self.config, data=data)

    def _replay_warning(self, data: dict[str, Any]) -> None:
        location = data.get("location")
        message = warnings.WarningMessage(
            str(data.get("message", "")),
            warning_category(data.get("category")),
            str(data.get("filename") or (location[0] if location else "")),
            int(data.get("lineno") or (location[1] if location and location[1] else 0)),
        )
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": message,
                "when": data.get("when") or "runtest",
                "nodeid": data.get("nodeid") or "",
                "location": tuple(location) if location else None,
            }
        )

    def _error_test(self, nodeid: str, message: str) -> None:
        """A test that never ran (no worker could take it, its task died): an error at setup
        with the reason, so it is counted, listed under ERRORS and stored in --junitxml."""
        hook = self.config.hook
        location = self.locations.get(nodeid) or _location(None, nodeid)
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        report = pytest.TestReport(
            nodeid, location, {}, "failed", DtfReason(message, location[0], location[1]), "setup"
        )
        hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
        self._check_stop()

    def _check_stop(self) -> None:
        session = self.session
        if session is not None and (session.shouldfail or session.shouldstop):
            self.stopping = True
            raise _Stop

    def _rerun(self, unit: Unit, nodeid: str) -> None:
        from dtf_bus.pytest_dist.plan import Unit

        count = self.reruns[nodeid] = self.reruns.get(nodeid, 0) + 1
        rerun = Unit(
            name=f"{self.planned:05d} rerun {count} {nodeid}"[: defaults.PYTEST_TASK_NAME_CHARS],
            nodeids=[nodeid],
            requires=unit.requires,
            cost=self.costs.get(nodeid, 0.0),
            rerun=count,
            label=nodeid,
            first=True,  # pytest-rerunfailures reruns at once: no waiting behind the whole suite
        )
        self.planned += 1
        self._submit([rerun])

    # ------------------------------------------------------------ placement

    def _check_placement(self, reply: dict[str, Any]) -> None:
        """Gives up on tasks no live worker can run: at once when the fleet has workers but none
        that match, after --dtf-placement-timeout when it has none at all (they may be starting)."""
        blocked = reply.get("blocked")
        if blocked is None:
            return
        now = time.monotonic()
        reasons_of: dict[str, list[str]] = {}
        for block in blocked:
            reasons = [str(r) for r in block.get("reasons") or []]
            if any(r.startswith("waiting for dependencies") for r in reasons):
                continue
            for name in block.get("tasks") or []:
                reasons_of[name] = reasons
        for name in list(self.blocked_since):
            if name not in reasons_of:
                del self.blocked_since[name]
        for name, reasons in reasons_of.items():
            unit = self.units.get(name)
            if unit is None:
                continue
            since = self.blocked_since.setdefault(name, now)
            empty_fleet = any("no live workers" in r for r in reasons)
            if empty_fleet and now - since < self.settings.placement_timeout:
                continue
            del self.units[name]
            self.blocked_since.pop(name, None)
            self._give_up(unit, "; ".join(reasons) or "no live worker can run it")

    def _give_up(self, unit: Unit, reason: str) -> None:
        from dtf_bus.pytest_dist.plan import COLLECT_TASK

        self.abandoned += 1
        needs = f" (requires {unit.requires})" if unit.requires else ""
        if unit.name == COLLECT_TASK:
            self._collect_error("", f"dtf: no live worker can collect the suite{needs}: {reason}")
            return
        for nodeid in unit.nodeids:
            self._error_test(nodeid, f"dtf: no live worker can run this test{needs}: {reason}")
