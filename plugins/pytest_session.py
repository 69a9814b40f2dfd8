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

A worker that holds the suite at another path maps the controller's rootdir with
``DTF_ROOTDIR_MAP="/ci/src=/home/me/src;..."`` or a ``rootdir_map`` capability (same format,
or a table); node ids are relative to the rootdir, so they still match.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtf_bus import defaults, resources
from dtf_bus.plugins import TaskContext, TaskFailed, task_environ

log = logging.getLogger(__name__)

RUNNER = str(Path(__file__).resolve().with_name("pytest_session_runner.py"))
CRASH_TAIL_CHARS = 2000  # of the session's output, kept in a crash report (faulthandler's dump)
_READ_CHUNK = 1 << 20


class SessionDied(Exception):
    """The session's process ended (or closed its channel) when it should have answered."""


class Cancelled(Exception):
    """The task was cancelled or timed out while it waited on its session."""


# ---------------------------------------------------------------- rootdir mapping


def parse_rootdir_map(spec: Any) -> list[tuple[str, str]]:
    """``"/ci/src=/home/me/src;/a=/b"`` or ``{"/ci/src": "/home/me/src"}`` -> pairs, longest
    source first so the most specific prefix wins."""
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, dict):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    elif isinstance(spec, str):
        for part in spec.split(";"):
            src, sep, dst = part.partition("=")
            if sep and src.strip() and dst.strip():
                pairs.append((src.strip(), dst.strip()))
    return sorted(((src.rstrip("/") or "/", dst.rstrip("/") or "/") for src, dst in pairs), key=lambda p: -len(p[0]))


def map_path(path: str, pairs: list[tuple[str, str]]) -> str:
    """``path`` with its first matching prefix replaced (whole path components only)."""
    for src, dst in pairs:
        if path == src:
            return dst
        if path.startswith(src.rstrip("/") + "/"):
            return dst.rstrip("/") + path[len(src.rstrip("/")) :]
    return path


def _map_arg(arg: str, pairs: list[tuple[str, str]]) -> str:
    """An absolute path among the args (``/ci/src/tests``, ``--opt=/ci/src/x``) follows the map."""
    if arg.startswith("/"):
        return map_path(arg, pairs)
    name, eq, value = arg.partition("=")
    if eq and value.startswith("/"):
        return f"{name}={map_path(value, pairs)}"
    return arg


def rootdir_pairs(ctx: TaskContext) -> list[tuple[str, str]]:
    """The worker's mapping: its ``rootdir_map`` capability, then ``$DTF_ROOTDIR_MAP``."""
    pairs = [(ctx.ship_root.rstrip("/") or "/", ctx.ship_dir)] if ctx.ship_root and ctx.ship_dir else []  # shipped
    pairs += parse_rootdir_map(ctx.capabilities.get("rootdir_map"))
    pairs += parse_rootdir_map(os.environ.get(defaults.ROOTDIR_MAP_ENV, ""))
    return sorted(pairs, key=lambda p: -len(p[0]))


# ---------------------------------------------------------------- params


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TaskFailed(f"pytest-session: param {name!r} must be a list of strings")


def _has_option(args: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def _plugin_blocked(args: list[str], name: str) -> bool:
    """Whether ``-p no:NAME`` (or ``-pno:NAME``) is among the args."""
    return f"-pno:{name}" in args or any(a == "-p" and b == f"no:{name}" for a, b in itertools.pairwise(args))


class SessionSpec:
    """What makes two tasks able to share a session, with the worker's paths applied."""

    def __init__(self, ctx: TaskContext) -> None:
        p = ctx.params
        session = p.get("session")
        rootdir = p.get("rootdir")
        if not isinstance(session, str) or not session:
            raise TaskFailed("pytest-session: param 'session' must be a non-empty string")
        if not isinstance(rootdir, str) or not rootdir:
            raise TaskFailed("pytest-session: param 'rootdir' must be a path")
        python = p.get("python")
        if python is not None and not isinstance(python, str):
            raise TaskFailed("pytest-session: param 'python' must be a path")
        marker_requires = p.get("marker_requires") or {}
        if not isinstance(marker_requires, dict):
            raise TaskFailed("pytest-session: param 'marker_requires' must be a table")
        env = p.get("env") or {}
        if not isinstance(env, dict):
            raise TaskFailed("pytest-session: param 'env' must be a table of strings")
        pairs = rootdir_pairs(ctx)
        self.session = session
        self.controller_rootdir = rootdir
        self.rootdir = map_path(rootdir, pairs)
        self.python = map_path(python, pairs) if python else sys.executable
        self.args = [_map_arg(a, pairs) for a in _strings(p.get("args"), "args")]
        self.marker_requires = marker_requires
        # The task's GPUs are the session's: CUDA picks its devices once per process, so a
        # session serves only tasks handed the same devices (they are part of its key).
        devices = resources.gpu_environment(ctx.devices)
        self.env = {**{str(k): str(v) for k, v in env.items()}, **devices}
        # A session that may have put work on its devices ends with its task: idle, it would
        # still hold their memory while the worker hands them to the next task.
        self.holds_devices = bool(devices)
        self.key = (
            session,
            self.python,
            self.rootdir,
            tuple(self.args),
            json.dumps(marker_requires, sort_keys=True, default=str),
            json.dumps(self.env, sort_keys=True),
        )


# ---------------------------------------------------------------- one session


class Session:
    """One live runner process and its channel; used by one task at a time."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.key = spec.key
        self.tmpdir = tempfile.mkdtemp(prefix="dtf-pytest-session-")
        self.output = tempfile.TemporaryFile(prefix="dtf-pytest-session-out-")  # noqa: SIM115 (lives as long as the session)
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        args = list(spec.args)
        if not _has_option(args, "--rootdir"):
            args.append(f"--rootdir={spec.rootdir}")
        if not _has_option(args, "--basetemp"):  # concurrent sessions must not prune each other's
            args.append(f"--basetemp={os.path.join(self.tmpdir, 'tmp')}")
        # The worker's checkout is not written to (and several sessions never race on the cache);
        # the dtf controller plugin, if installed here, stays out of the session.
        if not _plugin_blocked(args, "cacheprovider"):  # else `-o cache_dir` is an unknown ini key
            args += ["-o", f"cache_dir={os.path.join(self.tmpdir, 'cache')}"]
        args += ["-p", "no:dtf"]
        conf = json.dumps(
            {"marker_requires": spec.marker_requires, "details_chars": defaults.TEST_DETAILS_CHARS}, default=str
        )
        argv = [spec.python, RUNNER, str(cmd_r), str(out_w), conf, *args]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=spec.rootdir,
                env=task_environ(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=subprocess.STDOUT,
                pass_fds=(cmd_r, out_w),
                start_new_session=True,
            )
        except OSError as exc:
            self._close_fds()
            os.close(cmd_r)
            os.close(out_w)
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise TaskFailed(f"pytest-session: cannot start {spec.python} in {spec.rootdir}: {exc}") from None
        os.close(cmd_r)
        os.close(out_w)
        self.pid = self.proc.pid
        self.lines: deque[bytes] = deque()
        self.partial = b""
        self.idle_since = time.monotonic()
        self.items: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}
        self.collected: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.closed = False

    # -------------------------------------------------------- channel

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview((json.dumps(message) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.cmd_w, data) :]
        except OSError as exc:  # EPIPE: it died
            raise SessionDied(f"session exited ({exc})") from None

    def receive(self, ctx: TaskContext | None, on_idle: Callable[[], None] | None = None) -> dict[str, Any]:
        """The next message; watches the task's cancel flag and the process while waiting, and
        calls ``on_idle`` each time a poll interval passes with nothing to read."""
        while not self.lines:
            if ctx is not None and ctx.cancelled.is_set():
                raise Cancelled(ctx.cancel_reason or "cancelled")
            ready, _, _ = select.select([self.out_r], [], [], defaults.PYTEST_SESSION_POLL)
            if not ready and on_idle is not None:
                on_idle()
            if ready:
                chunk = os.read(self.out_r, _READ_CHUNK)
                if not chunk:
                    raise SessionDied(self.exit_description())
                parts = (self.partial + chunk).split(b"\n")
                self.partial = parts.pop()
                self.lines.extend(parts)
            elif self.proc.poll() is not None:
                # Exited, though a child it forked may still hold the channel open.
                raise SessionDied(self.exit_description())
        return json.loads(self.lines.popleft())

    def exit_description(self) -> str:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "session closed its channel"
        if code < 0:
            try:
                return f"session killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"session killed by signal {-code}"
        return f"session exited with code {code}"

    def output_tail(self, limit: int = CRASH_TAIL_CHARS) -> str:
        try:
            size = os.fstat(self.output.fileno()).st_size
            data = os.pread(self.output.fileno(), limit, max(size - limit, 0))
        except (OSError, ValueError):
            return ""
        return data.decode(errors="replace")

    # -------------------------------------------------------- lifecycle

    def await_collection(self, ctx: TaskContext) -> None:
        """Wait for the collection; any earlier end is a session that cannot run here."""
        while True:
            try:
                message = self.receive(ctx)
            except SessionDied as exc:
                tail = self.output_tail().strip()
                raise TaskFailed(
                    f"pytest-session: pytest could not start in {self.spec.rootdir} with "
                    f"{self.spec.python} ({exc}): {_last_words(tail)}",
                    {"output": tail},
                ) from None
            if message.get("t") == "collected":
                break
            if message.get("t") == "exit":
                tail = self.output_tail().strip()
                raise TaskFailed(
                    f"pytest-session: pytest ended before collecting (exit code {message.get('code')}): "
                    f"{_last_words(tail)}",
                    {"output": tail},
                )
        self.items = message["items"]
        self.index = {item["nodeid"]: i for i, item in enumerate(self.items)}
        nodeids = [item["nodeid"] for item in self.items]
        self.collected = {
            "count": len(nodeids),
            "digest": hashlib.sha1("\n".join(nodeids).encode()).hexdigest(),
        }
        self.collect_message = message
        self.info = dict(message.get("info") or {})
        self.info.setdefault("pid", self.pid)

    def kill(self) -> None:
        """SIGTERM the group, SIGKILL after the grace: what run_process does on cancel."""
        if self.proc.poll() is None:
            _kill_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=defaults.KILL_GRACE)
        self.close()

    def shutdown(self, grace: float = defaults.PYTEST_SESSION_SHUTDOWN_GRACE) -> None:
        """Ask for a clean end (fixtures torn down), then make sure the group is gone."""
        if self.proc.poll() is None:
            with contextlib.suppress(SessionDied, OSError):
                self.send({"cmd": "shutdown"})
            with contextlib.suppress(OSError):
                os.close(self.cmd_w)
                self.cmd_w = -1
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("pytest session %d did not shut down within %.1fs; killing it", self.pid, grace)
        self.close()

    def close(self) -> None:
        """Kill whatever is left in the group and release the pipes, the output and tmpdir."""
        if self.closed:
            return
        self.closed = True
        _kill_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=defaults.KILL_GRACE)
        self._close_fds()
        self.output.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _close_fds(self) -> None:
        for fd in (self.cmd_w, self.out_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.cmd_w = self.out_r = -1


def _last_words(output: str) -> str:
    """The line of a failed start that says why: pytest ends a usage error with its inifile and
    rootdir, and Python a traceback with the exception, so the last line naming an error wins."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ---------------------------------------------------------------- the pool


class SessionPool:
    """Idle sessions by key; a reaper shuts down the ones idle too long, atexit all of them."""

    def __init__(self, idle: float = defaults.PYTEST_SESSION_IDLE) -> None:
        self.idle_timeout = idle
        self.lock = threading.Condition()
        self.idle: dict[tuple, list[Session]] = {}
        self.live: set[Session] = set()
        self.closing = False
        self.reaper: threading.Thread | None = None
        atexit.register(_close_at_exit, weakref.ref(self))

    def acquire(self, spec: SessionSpec, ctx: TaskContext) -> Session:
        with self.lock:
            if self.closing:
                raise TaskFailed("pytest-session: the worker is shutting down")
            stack = self.idle.get(spec.key)
            if stack:
                session = stack.pop()  # the most recently used: its fixtures are warmest
                if not stack:
                    del self.idle[spec.key]
                if session.proc.poll() is None:
                    return session
                self.live.discard(session)
                session.close()
        return self.start(spec, ctx)

    def start(self, spec: SessionSpec, ctx: TaskContext) -> Session:
        session = Session(spec)
        with self.lock:
            self.live.add(session)
            self._ensure_reaper()
        try:
            session.await_collection(ctx)
        except BaseException:
            self.discard(session)
            raise
        log.info("pytest session %d started in %s (%d items)", session.pid, spec.rootdir, len(session.items))
        return session

    def release(self, session: Session) -> None:
        if session.spec.holds_devices and not session.closed and session.proc.poll() is None:
            with self.lock:
                self.live.discard(session)
            session.shutdown()  # before the task ends: its devices are free once it has returned
            return
        with self.lock:
            if session.closed or session.proc.poll() is not None or self.closing:
                alive = False
            else:
                alive = True
                session.idle_since = time.monotonic()
                self.idle.setdefault(session.key, []).append(session)
                self.lock.notify_all()
        if not alive:
            self.discard(session)

    def discard(self, session: Session, kill: bool = True) -> None:
        with self.lock:
            self.live.discard(session)
        if kill:
            session.kill()
        else:
            session.close()

    def _ensure_reaper(self) -> None:
        if self.reaper is None:
            self.reaper = threading.Thread(target=self._reap, name="pytest-session-reaper", daemon=True)
            self.reaper.start()

    def _reap(self) -> None:
        while True:
            with self.lock:
                if self.closing:
                    return
                now = time.monotonic()
                expired: list[Session] = []
                next_due = now + self.idle_timeout
                for key, stack in list(self.idle.items()):
                    keep = []
                    for session in stack:
                        due = session.idle_since + self.idle_timeout
                        if due <= now:
                            expired.append(session)
                        else:
                            keep.append(session)
                            next_due = min(next_due, due)
                    if keep:
                        self.idle[key] = keep
                    else:
                        del self.idle[key]
                for session in expired:
                    self.live.discard(session)
                if not expired:
                    self.lock.wait(timeout=max(next_due - now, 0.01))
            for session in expired:
                log.info("pytest session %d idle for %.0fs: shutting it down", session.pid, self.idle_timeout)
                session.shutdown()

    def close(self, grace: float = defaults.PYTEST_SESSION_SHUTDOWN_GRACE) -> None:
        """Every session ends: idle ones are asked to tear down (all at once, one shared grace),
        busy ones are killed; the worker exiting never leaves a session behind."""
        with self.lock:
            self.closing = True
            sessions = list(self.live)
            idle = {id(s) for stack in self.idle.values() for s in stack}
            self.idle.clear()
            self.live.clear()
            self.lock.notify_all()
        for session in sessions:
            if id(session) in idle:
                with contextlib.suppress(SessionDied, OSError):
                    session.send({"cmd": "shutdown"})
            else:
                _kill_group(session.pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        for session in sessions:
            with contextlib.suppress(subprocess.TimeoutExpired):
                session.proc.wait(timeout=max(deadline - time.monotonic(), 0))
            session.close()


def _close_at_exit(ref: weakref.ref) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


# ---------------------------------------------------------------- the executor


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
        nodeids = _strings(ctx.params.get("nodeids"), "nodeids") if mode == "run" else []
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
