"""Worker reports replayed through pytest's own hooks, as pytest-xdist's controller does.

Worker sessions serialise each report (``pytest_report_to_serializable``); here they are rebuilt
(``pytest_report_from_serializable``) and handed to ``pytest_runtest_logreport`` and friends, so
the terminal, ``--junitxml``, ``-x`` and any reporting plugin on the controller's side behave as in
a local run. Also the reports the controller makes itself, for tests that never ran. A test's
events stream in while its task runs and come again in the task's result: what was replayed once
is not replayed twice. Kept apart from the follow loop (:mod:`dtf_bus.pytest_dist.controller`)
and from scheduling, which it reaches only through :class:`Reruns`.
"""

from __future__ import annotations

import builtins
import logging
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from dtf_bus.pytest_dist.plan import Unit

log = logging.getLogger(__name__)


class Stop(Exception):
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
    found = getattr(builtins, name, None) or getattr(pytest, name, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    return _CATEGORIES.setdefault(name, type(name, (UserWarning,), {"__module__": "builtins"}))


def location_of(value: Any, nodeid: str) -> tuple[str, int | None, str]:
    if isinstance(value, list | tuple) and len(value) == 3:
        return (str(value[0]), value[1] if isinstance(value[1], int) else None, str(value[2]))
    path, _, rest = nodeid.partition("::")
    return (path, None, rest or path)


class Reruns(Protocol):
    """What replay asks of scheduling when a test failed (``--dtf-reruns``)."""

    def may_rerun(self, nodeid: str) -> bool: ...

    def rerun(self, unit: Unit, nodeid: str) -> None: ...


class Replay:
    """The reports of one run, replayed into the controller's pytest session."""

    def __init__(self, config: pytest.Config, reruns: Reruns) -> None:
        self.config = config
        self.reruns = reruns
        self.session: pytest.Session | None = None
        self.locations: dict[str, tuple[str, int | None, str]] = {}
        # What running tasks already streamed (their tests' reports, and events of no test of
        # theirs), so the task's final result replays only the rest.
        self.streamed: dict[str, set[str]] = {}
        self.streamed_loose: dict[str, set[tuple[str, str, str]]] = {}
        self.collect_errors_seen: set[str] = set()
        self.stopping = False

    def collect_error(self, nodeid: str, message: str) -> None:
        report = pytest.CollectReport(nodeid, "failed", DtfReason(message), [])
        self.collect_errors_seen.add(message)
        self.config.hook.pytest_collectreport(report=report)

    def replay_collect(self, data: dict[str, Any]) -> None:
        report = self.report(data)
        if report is None:
            return
        key = str(report.longrepr)
        if key in self.collect_errors_seen:  # every session reports the same broken module
            return
        self.collect_errors_seen.add(key)
        self.config.hook.pytest_collectreport(report=report)

    def replay_reports(self, unit: Unit, reports: list[Any]) -> set[str]:
        """Replays what was not streamed before; returns the unit's tests that ran to their end."""
        streamed = self.streamed.setdefault(unit.name, set())
        loose_seen = self.streamed_loose.setdefault(unit.name, set())
        wanted = set(unit.nodeids)
        per_test: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        loose: list[tuple[str, dict[str, Any]]] = []
        for entry in reports:
            kind, data = entry.get("kind"), entry.get("data") or {}
            if kind == "collect":
                self.replay_collect(data)
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
            self.replay_event(kind, data)
        for nodeid, events in per_test.items():
            if self._replay_test(unit, nodeid, events):
                streamed.add(nodeid)
        return streamed

    def replay_unit(self, unit: Unit, task: dict[str, Any], result: dict[str, Any]) -> None:
        done = self.replay_reports(unit, result.get("reports") or [])
        self.streamed.pop(unit.name, None)
        self.streamed_loose.pop(unit.name, None)
        missing = [n for n in unit.nodeids if n not in done]
        if missing and not self.stopping:
            state = task.get("state")
            why = task.get("error") or (f"the task ended {state}" if state != "succeeded" else "")
            why = why or "the session returned no report for it"
            for nodeid in missing:
                self.error_test(nodeid, f"dtf: {nodeid} was not run: {why}")

    def _replay_test(self, unit: Unit, nodeid: str, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """One test's events in order; False when they stop short of its end (not run)."""
        hook = self.config.hook
        reports = []
        for kind, data in events:
            if kind == "test":
                report = self.report(data)
                if report is not None:
                    reports.append(report)
                    data["_report"] = report
        if not any(k == "finish" for k, _ in events) and not any(r.when == "teardown" for r in reports):
            return False
        failed = next((r for r in reports if r.failed), None)
        if failed is not None and self.reruns.may_rerun(nodeid):
            location = self.locations.get(nodeid) or location_of(failed.location, nodeid)
            failed.outcome = "rerun"
            hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
            hook.pytest_runtest_logreport(report=failed)
            hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
            self.reruns.rerun(unit, nodeid)
            return True
        for kind, data in events:
            self.replay_event(kind, data)
        return True

    def replay_event(self, kind: str, data: dict[str, Any]) -> None:
        hook = self.config.hook
        nodeid = data.get("nodeid") or ""
        if kind == "start":
            hook.pytest_runtest_logstart(nodeid=nodeid, location=location_of(data.get("location"), nodeid))
        elif kind == "finish":
            hook.pytest_runtest_logfinish(nodeid=nodeid, location=location_of(data.get("location"), nodeid))
        elif kind == "warning":
            self.replay_warning(data)
        elif kind == "test":
            report = data.pop("_report", None) or self.report(data)
            if report is None:
                log.warning("dtf: a worker sent a report pytest cannot rebuild: %.200r", data)
                return
            hook.pytest_runtest_logreport(report=report)
            self._check_stop()

    def report(self, data: dict[str, Any]) -> Any:
        """A worker's serialised report rebuilt by pytest. The reports travel as JSON, which has
        no tuples; pytest expects a skip's longrepr (path, lineno, reason) and the location as
        tuples (execnet, xdist's channel, keeps them), so they are restored first."""
        if isinstance(data.get("longrepr"), list) and len(data["longrepr"]) == 3:
            data = {**data, "longrepr": tuple(data["longrepr"])}
        if isinstance(data.get("location"), list):
            data = {**data, "location": tuple(data["location"])}
        return self.config.hook.pytest_report_from_serializable(config=self.config, data=data)

    def replay_warning(self, data: dict[str, Any]) -> None:
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

    def error_test(self, nodeid: str, message: str) -> None:
        """A test that never ran (no worker could take it, its task died): an error at setup
        with the reason, so it is counted, listed under ERRORS and stored in --junitxml."""
        hook = self.config.hook
        location = self.locations.get(nodeid) or location_of(None, nodeid)
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
            raise Stop
