"""One live pytest session: the runner subprocess and the line-delimited JSON channel to it.

Each session is :mod:`dtf_plugins.pytest_session_runner` in a subprocess of its own process group
(cancel, timeout and a crash kill the whole group) with the worker's environment less its secrets
(:func:`dtf_bus.plugins.task_environ`). Commands go down one pipe, messages (``collected``,
``test``, ``done``, ``extra``, ``exit``) come up another; the session's own output goes to a
temporary file whose tail explains a crash. This module is that protocol and the process's life;
which session a task gets is :mod:`dtf_plugins.pytest_session_pool`'s, what a task does with it is
:mod:`dtf_plugins.pytest_session`'s.
"""

from __future__ import annotations

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
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtf_bus import defaults
from dtf_bus.plugins import TaskContext, TaskFailed, task_environ
from dtf_plugins.pytest_session_spec import SessionSpec

log = logging.getLogger(__name__)

RUNNER = str(Path(__file__).resolve().with_name("pytest_session_runner.py"))
CRASH_TAIL_CHARS = 2000  # of the session's output, kept in a crash report (faulthandler's dump)
_READ_CHUNK = 1 << 20


class SessionDied(Exception):
    """The session's process ended (or closed its channel) when it should have answered."""


class Cancelled(Exception):
    """The task was cancelled or timed out while it waited on its session."""


def _has_option(args: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def _plugin_blocked(args: list[str], name: str) -> bool:
    """Whether ``-p no:NAME`` (or ``-pno:NAME``) is among the args."""
    return f"-pno:{name}" in args or any(a == "-p" and b == f"no:{name}" for a, b in itertools.pairwise(args))


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
            kill_group(self.pid, signal.SIGTERM)
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
        kill_group(self.pid, signal.SIGKILL)
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


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
