"""A long-lived pytest session on a worker, driven over a private pipe (stdlib + pytest only).

Started by :mod:`dtf_plugins.pytest_session` as ``PYTHON pytest_session_runner.py CMD_FD OUT_FD
CONF_JSON PYTEST_ARGS...`` with the task's interpreter, which may not have dtf installed: this
file imports nothing but the standard library and pytest. It runs a real ``pytest.main`` in the
suite's rootdir (its cwd), collects once, answers with the collection, then serves commands
until told to stop, the way pytest-xdist's ``remote.py`` serves its controller:

- ``{"cmd": "run", "nodeids": [...]}``: runs each item through
  ``item.ihook.pytest_runtest_protocol`` and answers one line per finished test (its serialised
  reports and a results-store row), then ``{"t": "done"}``;
- ``{"cmd": "shutdown"}`` (or EOF on the command pipe): tears everything down and exits.

The channel is two inherited pipe descriptors carrying JSON lines, never stdout/stderr, so
whatever the tests print (``-s``, a C library writing to fd 1) cannot corrupt it. One write per
finished test, not per report: the executor wakes once per test.

Fixture scopes across batches: inside a batch the next node id is ``nextitem``; for a batch's
last item the item that follows it in collection order is a guess. When the next batch starts
elsewhere, the session first tears down to that item (``SetupState.teardown_exact``) and
reports a teardown error, if any, as a teardown report of the previous item.

A session must never outlive its worker: if the command pipe reaches EOF while a test runs,
the whole process group is killed after a short grace.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

import pytest

# Seconds a batch may keep running after the worker vanished (EOF on the command pipe) before
# the session kills its own process group: nobody is left to report to.
ORPHAN_GRACE = 5.0


def _json_default(value: Any) -> str:
    """user_properties and marker kwargs can hold anything; the channel carries their repr."""
    return repr(value)


class Channel:
    """Writes JSON lines to the executor; thread-safe because warnings may come from any thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=_json_default, separators=(",", ":")) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            try:
                while view and not self.broken:
                    written = os.write(self.fd, view)
                    view = view[written:]
            except OSError:  # the worker is gone: nobody to report to, but fixtures still get torn down
                self.broken = True


def parse_marker_lines(lines: list[str]) -> dict[str, dict[str, Any]]:
    """The ``dtf_markers`` ini option: ``gpu = hardware=cuda min_memory_gb=16`` per line.

    Requirements after the marker name are ``K=V`` separated by spaces or commas; numbers
    become numbers so ``min_memory_gb`` compares as the broker expects.
    """
    mapping: dict[str, dict[str, Any]] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=len(line))
        name, rest = line[:cut], line[cut + 1 :]
        requires: dict[str, Any] = {}
        for pair in rest.replace(",", " ").split():
            key, eq, value = pair.partition("=")
            if not eq:
                continue
            requires[key.strip()] = _number_or_text(value.strip())
        if name.strip():
            mapping[name.strip()] = requires
    return mapping


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _short_message(report: Any) -> str:
    """The one line a results row keeps: the crash line of a failure, the reason of a skip."""
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = report.longreprtext.strip()
    return text.splitlines()[-1] if text else ""


def make_row(nodeid: str, reports: list[Any], details_chars: int | None = None) -> dict[str, Any]:
    """One results-store row from a test's reports, with pytest's outcome vocabulary.

    The outcome is the first that decides it: an error in setup, the call's result (xfailed /
    xpassed when the test was expected to fail), then an error in teardown of a test that
    otherwise did not fail. ``details`` keeps the last ``details_chars`` of the traceback (the
    report beside the row has all of it).
    """
    outcome, phase, message, details = "passed", "call", "", ""
    duration = 0.0
    for rep in reports:
        duration += rep.duration
        wasxfail = getattr(rep, "wasxfail", None)
        if rep.when == "setup":
            if rep.failed:
                outcome, phase = "error", "setup"
            elif rep.skipped:
                outcome, phase = ("xfailed" if wasxfail is not None else "skipped"), "setup"
        elif rep.when == "call":
            if wasxfail is not None:
                outcome = "xfailed" if rep.skipped else "xpassed" if rep.passed else "failed"
            else:
                outcome = "failed" if rep.failed else "skipped" if rep.skipped else "passed"
            phase = "call"
        elif rep.when == "teardown" and rep.failed and outcome not in ("failed", "error"):
            outcome, phase = "error", "teardown"
        else:
            continue
        if rep.failed:
            message, details = _short_message(rep), rep.longreprtext
        elif rep.skipped or wasxfail is not None:
            message = str(wasxfail) if wasxfail else _short_message(rep)
    return {
        "nodeid": nodeid,
        "outcome": outcome,
        "phase": phase,
        "duration": duration,
        "message": message,
        "details": details[-details_chars:] if details_chars and details else details,
    }


def _group(item: Any) -> str | None:
    names = set()
    for mark in item.iter_markers("xdist_group"):
        names.add(str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")))
    return "_".join(sorted(names)) if names else None


def _scope(item: Any) -> str:
    """loadscope's unit: the innermost class, else the module (else the item's parent)."""
    node = item.getparent(pytest.Class) or item.getparent(pytest.Module) or item.parent or item
    return node.nodeid


class SessionServer:
    """The pytest plugin that turns one pytest session into a command server."""

    def __init__(self, channel: Channel, commands: queue.Queue, conf: dict[str, Any]) -> None:
        self.channel = channel
        self.commands = commands
        self.conf = conf
        self.pending: list[dict[str, Any]] = []  # reports not yet sent, in hook order
        self.current: list[Any] = []  # TestReports of the test running now
        self.collect_errors: list[str] = []
        self.deselected: list[str] = []  # by -k/-m (or a plugin): the controller shows "N deselected"
        self.busy = False
        self.config: Any = None
        self.row: dict[str, Any] | None = None  # the results row of the test that just finished
        self.details_chars: int | None = conf.get("details_chars")

    # ------------------------------------------------------------ configuration

    def pytest_addoption(self, parser: Any) -> None:
        with contextlib.suppress(ValueError):  # dtf's controller plugin is loaded too and declared it
            parser.addini("dtf_markers", "marker name = requirements (K=V ...), one per line", type="linelist")

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: Any) -> None:
        self.config = config
        # An `-n auto` in the suite's addopts must not fork xdist workers inside a worker.
        if getattr(config.option, "numprocesses", None):
            config.option.numprocesses = None
        if getattr(config.option, "dist", "no") != "no":
            config.option.dist = "no"
        mapping = parse_marker_lines(config.getini("dtf_markers") or [])
        mapping.update(self.conf.get("marker_requires") or {})
        self.marker_requires = mapping
        config.addinivalue_line(
            "markers", "dtf(requires, resources): run only on dtf workers that match, holding these resources"
        )
        for name in mapping:
            config.addinivalue_line("markers", f"{name}: routed by dtf_markers to workers with {mapping[name]}")

    # ------------------------------------------------------------ collection

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:  # passed ones are many and say nothing (as xdist)
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            self.pending.append({"kind": "collect", "data": data})
            self.collect_errors.append(report.nodeid or str(report.fspath))

    def _requires(self, item: Any) -> dict[str, Any]:
        requires: dict[str, Any] = {}
        for name, mapped in self.marker_requires.items():
            if item.get_closest_marker(name) is not None:
                requires.update(mapped)
        for mark in reversed(list(item.iter_markers("dtf"))):  # the closest mark wins
            wanted = mark.kwargs.get("requires", mark.args[0] if mark.args else None)
            if isinstance(wanted, dict):
                requires.update(wanted)
            # Consumable resources (dtf(resources={"gpus": 1})) travel with the requirements, so
            # planning groups by them too; the controller makes them the task's own field.
            if isinstance(mark.kwargs.get("resources"), dict):
                requires["resources"] = mark.kwargs["resources"]
        return requires

    def pytest_deselected(self, items: Any) -> None:
        self.deselected.extend(item.nodeid for item in items)

    def pytest_collection_finish(self, session: Any) -> None:
        items = [
            {
                "nodeid": item.nodeid,
                "location": list(item.location),
                "requires": self._requires(item),
                "group": _group(item),
                "scope": _scope(item),
            }
            for item in session.items
        ]
        self._flush(
            "collected",
            items=items,
            errors=self.collect_errors,
            deselected=self.deselected,
            continue_on_collection_errors=bool(self.config.option.continue_on_collection_errors),
            info={
                "pid": os.getpid(),
                "python": sys.executable,
                "python_version": sys.version.split()[0],
                "pytest": pytest.__version__,
                "rootdir": str(self.config.rootpath),
            },
        )

    # ------------------------------------------------------------ running

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.current = []
        self.pending.append({"kind": "start", "data": {"nodeid": nodeid, "location": location}})

    def pytest_runtest_logreport(self, report: Any) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.pending.append({"kind": "test", "data": data})
        self.current.append(report)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.pending.append({"kind": "finish", "data": {"nodeid": nodeid, "location": location}})
        # Sent once the protocol returns: the warnings plugin records a test's warnings after this.
        self.row = make_row(nodeid, self.current, self.details_chars)
        self.current = []

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        category = warning_message.category
        self.pending.append(
            {
                "kind": "warning",
                "data": {
                    "message": str(warning_message.message),
                    "category": category.__name__ if category else None,
                    "filename": warning_message.filename,
                    "lineno": warning_message.lineno,
                    "nodeid": nodeid,
                    "when": when,
                    "location": location,
                },
            }
        )

    def _flush(self, kind: str, **fields: Any) -> None:
        reports, self.pending = self.pending, []
        self.channel.send({"t": kind, "reports": reports, **fields})

    def _teardown_to(self, previous: Any, nextitem: Any) -> list[dict[str, Any]]:
        """Tear down what ``nextitem`` does not share with ``previous``; an error in it becomes a
        teardown report of ``previous`` (its fixtures are the ones that failed to finish)."""
        session = previous.session
        call = pytest.CallInfo.from_call(lambda: session._setupstate.teardown_exact(nextitem), when="teardown")
        if call.excinfo is None:
            return []
        report = previous.ihook.pytest_runtest_makereport(item=previous, call=call)
        self.current = []
        previous.ihook.pytest_runtest_logreport(report=report)
        return [make_row(previous.nodeid, self.current, self.details_chars)]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: Any) -> bool:
        items = session.items
        index = {item.nodeid: i for i, item in enumerate(items)}
        previous: Any = None  # the last item run, and the nextitem it was given
        guessed: Any = None
        while True:
            command = self.commands.get()
            if command is None or command.get("cmd") == "shutdown":
                break
            if command.get("cmd") != "run":
                self._flush("error", message=f"unknown command {command.get('cmd')!r}")
                continue
            batch = [items[index[nodeid]] for nodeid in command["nodeids"] if nodeid in index]
            missing = [nodeid for nodeid in command["nodeids"] if nodeid not in index]
            self.busy = True
            try:
                if previous is not None and guessed is not None and batch and batch[0] is not guessed:
                    rows = self._teardown_to(previous, batch[0])
                    if rows or self.pending:
                        self._flush("extra", rows=rows)
                for i, item in enumerate(batch):
                    if i + 1 < len(batch):
                        nextitem = batch[i + 1]
                    else:
                        following = index[item.nodeid] + 1
                        nextitem = items[following] if following < len(items) else None
                    self.row = None
                    item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                    self._flush("test", nodeid=item.nodeid, row=self.row)
                    previous, guessed = item, nextitem
            finally:
                self.busy = False
            self._flush("done", missing=missing)
        if previous is not None and guessed is not None:
            rows = self._teardown_to(previous, None)
            self._flush("extra", rows=rows)
        self.channel.send({"t": "bye"})
        return True


def _read_commands(fd: int, commands: queue.Queue, server: SessionServer) -> None:
    """Feeds the command queue; on EOF (the worker is gone) makes sure the session ends."""
    with os.fdopen(fd, "rb", buffering=1 << 16) as pipe:
        for line in pipe:
            try:
                commands.put(json.loads(line))
            except ValueError:
                continue
    commands.put(None)
    deadline = time.monotonic() + ORPHAN_GRACE
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not server.busy:
            return  # the main thread takes the None and exits cleanly
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        sys.stderr.write("usage: pytest_session_runner.py CMD_FD OUT_FD CONF_JSON [PYTEST_ARGS...]\n")
        return 4
    cmd_fd, out_fd, conf = int(argv[1]), int(argv[2]), json.loads(argv[3])
    # The test code's own children must not hold the channel (an EOF would never come).
    os.set_inheritable(cmd_fd, False)
    os.set_inheritable(out_fd, False)
    # As `python -m pytest` does: the rootdir, not this script's folder, is importable.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.getcwd())
    channel = Channel(out_fd)
    commands: queue.Queue = queue.Queue()
    server = SessionServer(channel, commands, conf)
    threading.Thread(target=_read_commands, args=(cmd_fd, commands, server), daemon=True).start()
    code = pytest.main(list(argv[4:]), plugins=[server])
    channel.send({"t": "exit", "code": int(code)})
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
