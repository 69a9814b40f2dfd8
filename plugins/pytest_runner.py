"""pytest: run a pytest target on the worker and report every test.

Params: ``targets`` (paths or node ids, a string or a list; empty runs pytest's own default),
``k`` and ``m`` (pytest's ``-k``/``-m``), ``args`` (more pytest arguments, a list or one
shell-quoted string), ``cwd`` (where pytest runs), ``rootdir`` (pinned with ``--rootdir``, so
node ids match the ones ``dtf pytest`` collected), ``python`` (interpreter, default the
worker's own) and ``env``.

pytest runs in a subprocess through :func:`dtf_bus.plugins.run_process` (its own process
group: a timeout or cancel kills it and everything it started) and writes a JUnit XML report,
which becomes one record per test: nodeid, outcome (passed, failed, skipped, error),
duration, message. The broker's ResultRows hook stores them in ``test_results``. The task
fails when any test failed or errored, or when pytest could not run at all.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from typing import Any

from dtf_bus.plugins import TaskContext, TaskFailed, run_process
from dtf_bus.pytest_dist import junit

# pytest's exit codes (pytest.ExitCode), spelled out so the worker need not import pytest.
EXIT_OK, EXIT_TESTS_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_TESTS = 0, 1, 2, 3, 4, 5


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TaskFailed(f"pytest: param {name!r} must be a string or a list of strings")


def build_argv(params: dict[str, Any], report: str) -> list[str]:
    """The pytest command line for ``params`` (exposed for tests and for users to copy)."""
    targets = _strings(params.get("targets"), "targets")
    extra = params.get("args") or []
    if isinstance(extra, str):
        extra = shlex.split(extra)
    extra = _strings(extra, "args")
    argv = [params.get("python") or sys.executable, "-m", "pytest", *targets]
    # No cache plugin: many workers sharing a checkout would race on .pytest_cache.
    argv += [f"--junitxml={report}", "-o", "junit_family=xunit1", "-p", "no:cacheprovider", "--color=no", "-q"]
    for flag in ("k", "m"):
        value = params.get(flag)
        if value is not None:
            if not isinstance(value, str):
                raise TaskFailed(f"pytest: param {flag!r} must be a string")
            argv += [f"-{flag}", value]
    rootdir = params.get("rootdir")
    if rootdir is not None:
        if not isinstance(rootdir, str):
            raise TaskFailed("pytest: param 'rootdir' must be a string")
        argv.append(f"--rootdir={rootdir}")
    return argv + extra


class PytestExecutor:
    name = "pytest"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        p = ctx.params
        cwd = p.get("cwd")
        env = p.get("env") or {}
        if cwd is not None and not isinstance(cwd, str):
            raise TaskFailed("pytest: param 'cwd' must be a string")
        if not isinstance(env, dict):
            raise TaskFailed("pytest: param 'env' must be a table of strings")
        with tempfile.TemporaryDirectory(prefix="dtf-pytest-") as tmp:
            report = os.path.join(tmp, "junit.xml")
            argv = build_argv(p, report)
            try:
                proc = run_process(ctx, argv, cwd=cwd, env={str(k): str(v) for k, v in env.items()})
            except OSError as exc:  # missing interpreter, bad cwd
                raise TaskFailed(f"pytest: cannot start {argv[0]} in {cwd or os.getcwd()}: {exc}") from None
            xml = None
            if os.path.exists(report):
                with open(report, encoding="utf-8", errors="replace") as fh:
                    xml = fh.read()
        result: dict[str, Any] = {
            "exit_code": proc.returncode,
            "duration_s": round(proc.duration, 6),
            "output": proc.stdout,
            "stderr": proc.stderr,
            "tests": [],
        }
        if proc.killed:
            return result  # the worker reports it as timed out or cancelled
        if xml is not None:
            try:
                result["tests"] = junit.parse_report(xml, p.get("rootdir") or cwd)
            except Exception as exc:  # ParseError, or a report cut short by a crash
                raise TaskFailed(f"pytest: unreadable JUnit report ({exc})", result) from None
        tally = junit.counts(result["tests"])
        result["summary"] = dict(tally)
        bad = tally["failed"] + tally["error"]
        if bad:
            first = next(r for r in result["tests"] if r["outcome"] in ("failed", "error"))
            raise TaskFailed(f"{junit.summary_line(tally)}; first: {first['nodeid']}", result)
        if proc.returncode in (EXIT_OK, EXIT_NO_TESTS):
            return result
        # pytest could not run the tests at all: say why in its own last words.
        words = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        what = {
            EXIT_TESTS_FAILED: "failed",
            EXIT_INTERRUPTED: "was interrupted",
            EXIT_INTERNAL: "hit an internal error",
            EXIT_USAGE: "was called wrongly",
        }.get(proc.returncode, "failed")
        raise TaskFailed(f"pytest {what} (exit code {proc.returncode}): {words}", result)
