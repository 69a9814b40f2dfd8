"""The controlling session of ``pytest --dtf``: pytest-xdist's ``DSession``, over dtf.

Registered by :mod:`dtf_bus.pytest_dist.plugin` once ``--dtf`` has reached the broker. It owns the
session's hooks and the follow loop: ``pytest_collection`` returns True (the workers collect; this
side never imports a test module), ``pytest_runtestloop`` submits a ``collect`` task, plans the
test tasks from what a worker session collected, follows the job with :meth:`Client.follow`, and
gives up on tasks no live worker can run. What goes to the fleet when is
:mod:`~dtf_bus.pytest_dist.scheduling`'s; turning worker reports into pytest's is
:mod:`~dtf_bus.pytest_dist.replay`'s.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pytest

from dtf_bus import defaults
from dtf_bus.client import BrokerUnreachable, ClientError
from dtf_bus.pytest_dist.plan import COLLECT_TASK, estimate_costs, select_last_failed
from dtf_bus.pytest_dist.replay import RemoteItem, Replay, Stop, location_of
from dtf_bus.pytest_dist.scheduling import PLUGIN_NAME, Scheduler

if TYPE_CHECKING:
    from dtf_bus.client import Client
    from dtf_bus.pytest_dist.plan import Unit
    from dtf_bus.pytest_dist.settings import Settings

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 3  # dtf's code for an unreachable broker (pytest's own 3 is an internal error)


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
        self.schedule = Scheduler(client, settings, workers, self.rootdir)
        self.replay = Replay(config, self.schedule)
        self.cursor = 0
        self.progress_cursor = 0
        self.next_status = 0.0
        self.workers_used: set[str] = set()
        self.blocked_since: dict[str, float] = {}
        self.abandoned = 0
        self.digest: str | None = None
        self.collected_count = 0
        self.collect_worker = ""
        self.mismatches: list[str] = []
        self.session: pytest.Session | None = None

    @property
    def terminal(self) -> Any:
        """pytest's terminal reporter (registered after this plugin, absent with -p no:terminal)."""
        return self.config.pluginmanager.get_plugin("terminalreporter")

    # ------------------------------------------------------------ hooks

    def pytest_report_header(self, config: pytest.Config) -> str:
        able = self.schedule.session_workers()
        slots = sum(int(w.get("slots") or 1) for w in able)
        shipped = f"\ndtf: {self.settings.ship.describe()}" if self.settings.ship is not None else ""
        return f"dtf: {self.client.endpoint}: {len(able)} worker(s) with {PLUGIN_NAME}, {slots} slot(s){shipped}"

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        return True  # the workers collect; this side never imports a test module

    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self.session = self.replay.session = session
        try:
            self._run(session)
        except Stop:
            self.schedule.cancel()
            if session.shouldfail:
                raise session.Failed(session.shouldfail) from None
            raise session.Interrupted(session.shouldstop) from None
        except KeyboardInterrupt:
            self.schedule.cancel()
            raise
        except BrokerUnreachable as exc:
            pytest.exit(f"dtf: {exc}", returncode=EXIT_UNREACHABLE)
        except ClientError as exc:
            self.schedule.cancel()
            pytest.exit(f"dtf: {exc}", returncode=pytest.ExitCode.INTERRUPTED)
        finally:
            self.schedule.close_job()
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
        job = self.schedule.job
        if job and self.config.option.verbose >= 0:
            on = ", ".join(sorted(self.workers_used)) or "no worker"
            terminalreporter.write_line(f"dtf: job {job}: {self.schedule.tasks_submitted} task(s) on {on}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.client.close()

    # ------------------------------------------------------------ the run

    def _run(self, session: pytest.Session) -> None:
        option = self.config.option
        schedule = self.schedule
        lf = bool(getattr(option, "lf", False))  # absent under -p no:cacheprovider
        ff = bool(getattr(option, "failedfirst", False))
        history = self._history()  # durations order the run even without --lf/--ff
        # One collection per session the fleet can run at once, as xdist's workers each collect:
        # the first to finish plans the run, the others start their sessions meanwhile (instead
        # of when their first tests arrive) and must find the same tests.
        collects = min(schedule.sessions(), defaults.PYTEST_PARALLEL_COLLECTS) if not option.collectonly else 1
        warm = [schedule.collect_unit(index) for index in range(1, collects)]
        schedule.submit([schedule.collect_unit(), *warm], first=True)
        items = self._await_collection(session)
        if option.collectonly:
            self._show_collection(items)
            return
        nodeids = [item["nodeid"] for item in items]
        order, deselected, status = select_last_failed(
            nodeids,
            self._last_failed(history),
            lf=lf,
            ff=ff,
            no_failures=getattr(option, "last_failed_no_failures", "all") or "all",
        )
        if status and self.terminal is not None and option.verbose >= 0:
            self.terminal.write_line(status)
        if deselected:
            locations = self.replay.locations
            self.config.hook.pytest_deselected(items=[RemoteItem(n, locations[n]) for n in deselected])
        session.testscollected = len(order)
        if not order:
            return
        schedule.costs = estimate_costs(order, history.get("durations") or {})
        by_id = {item["nodeid"]: item for item in items}
        first: set[str] = set()
        if ff and not lf:
            failed = set(self._last_failed(history))
            first = {n for n in order if n in failed or n.split("::", 1)[0] in failed}
        units = schedule.plan([by_id[n] for n in order if n in first], boost=True)
        units += schedule.plan([by_id[n] for n in order if n not in first], boost=False)
        schedule.launch(units)
        self._follow_to_end()

    def _follow_to_end(self) -> None:
        schedule = self.schedule
        while schedule.units or schedule.backlog:
            reply = self._follow()
            for entry in reply.get("progress") or []:
                self._on_progress(entry)
            for task in reply["tasks"]:
                self._on_task(task)
            self._check_placement(reply)
            schedule.submit_backlog()
            if reply.get("done") and schedule.units:
                for name in list(schedule.units):
                    self._give_up(schedule.units.pop(name), "the job ended (cancelled outside this run?)")
        if self.abandoned:
            schedule.cancel()  # what no worker could run is still queued

    # ------------------------------------------------------------ broker calls

    def _follow(self) -> dict[str, Any]:
        now = time.monotonic()
        want_status = now >= self.next_status
        assert self.schedule.job is not None
        reply = self.client.follow(
            self.schedule.job,
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

    # ------------------------------------------------------------ collection

    def _await_collection(self, session: pytest.Session) -> list[dict[str, Any]]:
        early: list[dict[str, Any]] = []
        while True:
            reply = self._follow()
            task = next((t for t in reply["tasks"] if t["name"] == COLLECT_TASK), None)
            if task is not None:
                self.schedule.units.pop(COLLECT_TASK, None)
                items = self._on_collected(session, task)
                for other in early + [t for t in reply["tasks"] if t is not task]:  # warm-ups done meanwhile
                    self._on_task(other)
                return items
            early += reply["tasks"]  # warm-up collections that beat the first: compared once it is in
            self._check_placement(reply)
            if COLLECT_TASK not in self.schedule.units:  # given up: no worker can collect
                raise session.Interrupted(self._collection_error_text(session))
            if reply.get("done"):
                self.replay.collect_error("", "dtf: the job ended before the suite was collected")
                raise session.Interrupted(self._collection_error_text(session))

    def _on_collected(self, session: pytest.Session, task: dict[str, Any]) -> list[dict[str, Any]]:
        replay = self.replay
        result = task.get("result") if isinstance(task.get("result"), dict) else {}
        if task.get("worker_id"):
            self.workers_used.add(task["worker_id"])
            self.collect_worker = task["worker_id"]
        errors_before = len(replay.collect_errors_seen)
        for entry in result.get("reports") or []:
            if entry.get("kind") == "collect":
                replay.replay_collect(entry.get("data") or {})
            elif entry.get("kind") == "warning":
                replay.replay_warning(entry.get("data") or {})
        if task.get("state") != "succeeded" and len(replay.collect_errors_seen) == errors_before:
            replay.collect_error(
                "",
                f"dtf: the suite could not be collected on {task.get('worker_id') or 'a worker'}: "
                f"{task.get('error') or task.get('state')}",
            )
        collected = result.get("collected") or {}
        items = [i for i in collected.get("items") or [] if isinstance(i, dict) and i.get("nodeid")]
        self.digest = collected.get("digest")
        self.collected_count = int(collected.get("count") or len(items))
        for item in items:
            replay.locations[item["nodeid"]] = location_of(item.get("location"), item["nodeid"])
        deselected = [str(n) for n in collected.get("deselected") or []]
        if deselected:  # by -k/-m on the worker: the summary says "N deselected", as locally
            self.config.hook.pytest_deselected(items=[RemoteItem(n, location_of(None, n)) for n in deselected])
        if session.testsfailed and not self.config.option.continue_on_collection_errors:
            raise session.Interrupted(self._collection_error_text(session))
        return items

    @staticmethod
    def _collection_error_text(session: pytest.Session) -> str:
        n = session.testsfailed
        return f"{n} error{'s' if n != 1 else ''} during collection"

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
        unit = self.schedule.units.pop(task.get("name", ""), None)
        if unit is None:
            return
        self.blocked_since.pop(unit.name, None)
        if task.get("worker_id"):
            self.workers_used.add(task["worker_id"])
        result = task.get("result") if isinstance(task.get("result"), dict) else {}
        self._check_digest(task, result)
        if unit.name.startswith(COLLECT_TASK):
            return  # a warm-up collection: only its digest matters (its errors were the first's)
        self.replay.replay_unit(unit, task, result)

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
            ours = set(self.replay.locations)
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
        unit = self.schedule.units.get(entry.get("name") or "")
        reports = (entry.get("data") or {}).get("reports")
        if unit is not None and isinstance(reports, list):
            self.replay.replay_reports(unit, reports)

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
        units = self.schedule.units
        for name, reasons in reasons_of.items():
            unit = units.get(name)
            if unit is None:
                continue
            since = self.blocked_since.setdefault(name, now)
            empty_fleet = any("no live workers" in r for r in reasons)
            if empty_fleet and now - since < self.settings.placement_timeout:
                continue
            del units[name]
            self.blocked_since.pop(name, None)
            self._give_up(unit, "; ".join(reasons) or "no live worker can run it")

    def _give_up(self, unit: Unit, reason: str) -> None:
        self.abandoned += 1
        needs = f" (requires {unit.requires})" if unit.requires else ""
        if unit.name == COLLECT_TASK:
            self.replay.collect_error("", f"dtf: no live worker can collect the suite{needs}: {reason}")
            return
        for nodeid in unit.nodeids:
            self.replay.error_test(nodeid, f"dtf: no live worker can run this test{needs}: {reason}")
