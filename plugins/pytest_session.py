"""pytest-session: run node ids in long-lived pytest sessions on the worker (docs/pytest-dist.md).

Starting pytest (interpreter, imports, conftest, collection) costs far more than most tests,
so instead of a process per task, each worker keeps a pool of live sessions, one per task
thread that needs one, keyed by (``session`` param, interpreter, rootdir, args): a task takes
an idle session of its key, or starts one, hands it its node ids and collects the reports.
Each session is :mod:`dtf_plugins.pytest_session_runner` in a subprocess of its own process group
(cancel, timeout and a crash kill the whole group) with the worker's environment less its
secrets (:func:`dtf_bus.plugins.task_environ`).

Params and result are the contract of docs/pytest-dist.md. ``mode = "collect"`` answers with
the session's collection (the session stays for the run tasks); ``mode = "run"`` runs
``nodeids`` in that order. A test that kills its session (segfault, ``os._exit``) is reported
failed ("worker crashed while running ...") and the session is restarted for the rest of the
batch. Sessions idle for ``PYTEST_SESSION_IDLE`` seconds are shut down by a reaper thread, and
all of them when the worker's interpreter exits.

The parts: :mod:`dtf_plugins.pytest_session_spec` (params and rootdir mapping),
:mod:`dtf_plugins.pytest_session_process` (one session process and its channel),
:mod:`dtf_plugins.pytest_session_pool` (sessions shared across task threads). This module is the
executor: what a collect or run task does with its session, crashes included.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dtf_bus import defaults
from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_plugins.pytest_session_pool import SessionPool
from dtf_plugins.pytest_session_process import Cancelled, Session, SessionDied
from dtf_plugins.pytest_session_spec import SessionSpec, strings

log = logging.getLogger(__name__)


def crash_report(nodeid: str, location: list[Any], when: str, reason: str, tail: str, started: float) -> dict[str, Any]:
    """A serialised TestReport (pytest_report_from_serializable rebuilds it) for a test that
    took its session down with it, as xdist's controller makes for a crashed worker."""
    now = time.time()
    text = f"worker crashed while running {nodeid} ({reason})"
    if tail.strip():
        text += "\n\nlast output of the session:\n" + tail
    return {
        "$report_type": "TestReport",
        "nodeid": nodeid,
        "location": location,
        "keywords": {},
        "outcome": "failed",
        "longrepr": text,
        "when": when,
        "user_properties": [],
        "sections": [],
        "duration": max(now - started, 0.0),
        "start": started,
        "stop": now,
    }


class PytestSessionExecutor:
    """The ``pytest-session`` executor: several task threads call :meth:`run` at once."""

    name = "pytest-session"

    def __init__(self, idle: float = defaults.PYTEST_SESSION_IDLE) -> None:
        self.pool = SessionPool(idle)

    def close(self, grace: float = defaults.PYTEST_SESSION_SHUTDOWN_GRACE) -> None:
        """Ends every session now (the pool also does this at interpreter exit)."""
        self.pool.close(grace)

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        spec = SessionSpec(ctx)
        mode = ctx.params.get("mode", "run")
        if mode not in ("collect", "run"):
            raise TaskFailed(f"pytest-session: param 'mode' must be 'collect' or 'run', not {mode!r}")
        nodeids = strings(ctx.params.get("nodeids"), "nodeids") if mode == "run" else []
        # The session in use: a crash replaces it, and whatever ends the task must find the live one.
        current = [self.pool.acquire(spec, ctx)]
        result: dict[str, Any] = {"reports": [], "tests": [], "crashed": []}
        try:
            if mode == "collect":
                self._collect(current[0], result)
            else:
                self._run(ctx, spec, current, nodeids, result)
        except Cancelled as exc:
            self.pool.discard(current[0])
            raise TaskFailed(f"pytest-session: {exc}", result) from None
        except TaskFailed:
            self.pool.release(current[0])
            raise
        except BaseException:
            self.pool.discard(current[0])
            raise
        self.pool.release(current[0])
        return result

    def _collect(self, session: Session, result: dict[str, Any]) -> None:
        message = session.collect_message
        result["collected"] = {
            **session.collected,
            "items": session.items,
            "deselected": list(message.get("deselected") or []),
        }
        result["reports"] = list(message.get("reports") or [])
        result["session"] = session.info
        errors = message.get("errors") or []
        if errors and not message.get("continue_on_collection_errors"):
            shown = ", ".join(errors[:5]) + (f" and {len(errors) - 5} more" if len(errors) > 5 else "")
            raise TaskFailed(f"pytest-session: {len(errors)} error(s) during collection: {shown}", result)

    def _run(
        self, ctx: TaskContext, spec: SessionSpec, current: list[Session], nodeids: list[str], result: dict[str, Any]
    ) -> None:
        """Runs ``nodeids`` to the end, restarting the session after a crash (``current[0]`` is
        always the session in use, for the caller to give back or kill)."""
        session = current[0]
        unknown = [n for n in nodeids if n not in session.index]
        if unknown:
            result["collected"] = dict(session.collected)
            result["session"] = session.info
            errors = session.collect_message.get("errors") or []
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            why = f" (collection errors in: {', '.join(errors[:5])})" if errors else ""
            raise TaskFailed(
                f"pytest-session: {len(unknown)} node id(s) not collected on {ctx.worker_id} "
                f"in {spec.rootdir}{why}: {shown}",
                result,
            )
        reports, tests = result["reports"], result["tests"]
        # Finished tests' reports go out as progress, gathered for PYTEST_PROGRESS_INTERVAL so a
        # stream of fast tests is a few messages, and at once when the session goes quiet (a long
        # test running): the controller shows each test soon after it ends, not with its batch.
        unsent: list[dict[str, Any]] = []
        sent_at = [time.monotonic()]

        def flush() -> None:
            if unsent:
                ctx.report_progress({"reports": list(unsent)})
                unsent.clear()
            sent_at[0] = time.monotonic()

        remaining = nodeids
        while remaining:
            finished = 0
            started = time.time()
            try:
                session.send({"cmd": "run", "nodeids": remaining})
                while True:
                    message = session.receive(ctx, flush)
                    kind = message["t"]
                    if kind == "test":
                        reports.extend(message["reports"])
                        unsent.extend(message["reports"])
                        if time.monotonic() - sent_at[0] >= defaults.PYTEST_PROGRESS_INTERVAL:
                            flush()
                        if message.get("row"):
                            tests.append(message["row"])
                        finished += 1
                        started = time.time()
                    elif kind == "done":
                        unsent.clear()  # the result goes out now, with everything
                        reports.extend(message["reports"])
                        if message.get("missing"):  # a restarted session collected differently
                            missing = message["missing"]
                            raise TaskFailed(
                                f"pytest-session: {len(missing)} node id(s) not collected by the restarted "
                                f"session on {ctx.worker_id}: {', '.join(missing[:10])}",
                                result,
                            )
                        break
                    elif kind == "extra":
                        reports.extend(message["reports"])
                        tests.extend(message.get("rows") or [])
                    elif kind == "exit":
                        raise SessionDied(f"pytest ended (exit code {message.get('code')})")
                remaining = []
            except SessionDied as exc:
                nodeid = remaining[finished]
                self._crashed(session, nodeid, str(exc), started, result)
                log.warning("pytest session %d crashed while running %s (%s); restarting it", session.pid, nodeid, exc)
                remaining = remaining[finished + 1 :]
                self.pool.discard(session, kill=False)
                try:
                    session = current[0] = self.pool.start(spec, ctx)
                except TaskFailed as failed:
                    raise TaskFailed(f"{failed} (restarting after a crash)", result) from None
        result["collected"] = dict(session.collected)
        result["session"] = session.info

    @staticmethod
    def _crashed(session: Session, nodeid: str, reason: str, started: float, result: dict[str, Any]) -> None:
        """The running test's failed report. A test's reports travel only once it finished, so
        nothing of it was replayed yet: it gets a start, one failed call report and a finish."""
        location = session.items[session.index[nodeid]]["location"]
        tail = session.output_tail()
        report = crash_report(nodeid, location, "call", reason, tail, started)
        result["reports"] += [
            {"kind": "start", "data": {"nodeid": nodeid, "location": location}},
            {"kind": "test", "data": report},
            {"kind": "finish", "data": {"nodeid": nodeid, "location": location}},
        ]
        result["tests"].append(
            {
                "nodeid": nodeid,
                "outcome": "failed",
                "phase": "call",
                "duration": report["duration"],
                "message": f"worker crashed while running {nodeid}",
                "details": report["longrepr"][-defaults.TEST_DETAILS_CHARS :],
            }
        )
        result["crashed"].append(nodeid)
