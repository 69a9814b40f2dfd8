"""browser: run a page and a script in headless Chromium (Playwright) and return what the script returns.

For page tests and WebGPU/WebNN benchmarks on browser workers (docs/browser.md). Params:

- ``url`` (a page to load) or ``html`` (a page's source, served from a secure origin of the
  executor's own); neither: a blank page, also a secure context (``about:blank`` is not one);
- ``script``: the body of an async JavaScript function, run in the page with ``args`` in scope;
  its JSON return value is the result's ``value``. What it throws fails the task with the error;
- ``args`` (any JSON, for the script), ``timeout`` (seconds for the page to load and the script
  to finish, default :data:`~dtf_bus.defaults.BROWSER_TIMEOUT`), ``wait_until`` (``load``,
  ``domcontentloaded``, ``networkidle`` or ``commit``), ``fail_on_page_error`` (default true:
  an uncaught error in the page fails the task).

Every result says which browser ran it (``browser.version``, ``user_agent``), what the page
reports for WebGPU (``webgpu``: the adapter's vendor, architecture, features and limits, or
``available = false`` and the reason) and WebNN (``webnn``), and the console errors and page
errors seen; a page crash fails the task. A ``value`` of the benchmark shape
(``{"benchmarks": [...]}``, see :mod:`dtf_plugins.bench`) is stored in ``benchmark_results`` like
the ``python`` plugin's, its ``environment`` completed with the browser's version and adapter.

The plugin loads only where Playwright and a Chromium are installed; elsewhere the worker skips
it with a one-line reason (or refuses to start when asked for it with ``--plugin browser``).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import time
from typing import Any

from dtf_bus import defaults
from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_plugins.browser_host import BrowserHost, Cancelled, LaunchFailed
from dtf_plugins.browser_page import PageFailed, PageJob, PageReport, run_page

PARAMS = ("url", "html", "script", "args", "timeout", "wait_until", "fail_on_page_error")
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle", "commit")


class BrowserUnavailable(RuntimeError):
    """This worker cannot run browser tasks; the message says what is missing, in one line."""


def find_chromium(environ: dict[str, str] | None = None) -> str:
    """The Chromium to drive: ``$DTF_BROWSER_EXECUTABLE``, else the first of BROWSER_BINARIES on PATH."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(defaults.BROWSER_EXECUTABLE_ENV)
    if chosen:
        path = shutil.which(chosen) or chosen
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BrowserUnavailable(f"browser: {defaults.BROWSER_EXECUTABLE_ENV}={chosen} is not an executable file")
        return path
    for name in defaults.BROWSER_BINARIES:
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return found
    raise BrowserUnavailable(
        f"browser: no Chromium found (looked for {', '.join(defaults.BROWSER_BINARIES)} on PATH); "
        f"install Debian's chromium or set {defaults.BROWSER_EXECUTABLE_ENV}"
    )


def playwright_installed() -> bool:
    try:
        return importlib.util.find_spec("playwright") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def browser_args(environ: dict[str, str] | None = None) -> list[str]:
    """The default flags plus ``$DTF_BROWSER_ARGS`` (shell words; later flags win)."""
    environ = os.environ if environ is None else environ
    try:
        extra = shlex.split(environ.get(defaults.BROWSER_ARGS_ENV, ""))
    except ValueError as exc:
        raise BrowserUnavailable(f"browser: {defaults.BROWSER_ARGS_ENV} cannot be split into flags: {exc}") from None
    return [*defaults.BROWSER_ARGS, *extra]


def parse_job(params: dict[str, Any]) -> PageJob:
    """The task's params as a :class:`PageJob`; a bad param is a one-line :class:`TaskFailed`."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise TaskFailed(f"browser: unknown param {unknown[0]!r} (known: {', '.join(PARAMS)})")
    url, html, script = params.get("url"), params.get("html"), params.get("script")
    if url is not None and html is not None:
        raise TaskFailed("browser: give param 'url' or 'html', not both")
    for name, value in (("url", url), ("html", html), ("script", script)):
        if value is not None and not isinstance(value, str):
            raise TaskFailed(f"browser: param {name!r} must be a string, got {type(value).__name__}")
    if url is not None and not url.strip():
        raise TaskFailed("browser: param 'url' is empty")
    timeout = params.get("timeout", defaults.BROWSER_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise TaskFailed(f"browser: param 'timeout' must be a positive number of seconds, got {timeout!r}")
    wait_until = params.get("wait_until", "load")
    if wait_until not in WAIT_UNTIL:
        raise TaskFailed(f"browser: param 'wait_until' must be one of {', '.join(WAIT_UNTIL)}, got {wait_until!r}")
    fail_on_page_error = params.get("fail_on_page_error", True)
    if not isinstance(fail_on_page_error, bool):
        raise TaskFailed("browser: param 'fail_on_page_error' must be true or false")
    return PageJob(
        url=url,
        html=html,
        script=script,
        args=params.get("args"),
        timeout=float(timeout),
        wait_until=wait_until,
        fail_on_page_error=fail_on_page_error,
    )


def with_benchmark_environment(result: dict[str, Any]) -> None:
    """A benchmark-shaped ``value`` gets the browser in its ``environment`` (the script's own keys win),
    so ``benchmark_results`` rows say which browser and WebGPU adapter measured them."""
    value = result.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("benchmarks"), list):
        return
    browser = result.get("browser") or {}
    env: dict[str, Any] = {"browser": "chromium", "browser_version": browser.get("version")}
    if browser.get("user_agent"):
        env["user_agent"] = browser["user_agent"]
    webgpu = result.get("webgpu") or {}
    if webgpu.get("available"):
        adapter = " ".join(str(webgpu.get(k)) for k in ("vendor", "architecture", "description") if webgpu.get(k))
        env["webgpu_adapter"] = adapter + (" (fallback)" if webgpu.get("fallback") else "")
    own = value.get("environment")
    value["environment"] = {**env, **(own if isinstance(own, dict) else {})}


class BrowserExecutor:
    name = "browser"

    def __init__(self) -> None:
        if not playwright_installed():
            raise BrowserUnavailable("browser: playwright is not installed (pip install 'dtf[browser]')")
        self.host = BrowserHost(find_chromium(), browser_args())

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        job = parse_job(ctx.params)
        report = PageReport()
        started = time.perf_counter()

        try:
            self.host.call(lambda browser: run_page(browser, job, report), ctx.cancelled)
        except Cancelled:
            return self._result(report, started)  # the worker reports it as timed out or cancelled
        except LaunchFailed as exc:
            raise TaskFailed(str(exc)) from None
        except PageFailed as exc:
            raise TaskFailed(str(exc), self._result(report, started)) from None
        return self._result(report, started)

    def _result(self, report: PageReport, started: float) -> dict[str, Any]:
        result = report.as_result()
        result["duration_s"] = round(time.perf_counter() - started, 6)
        result["browser_launches"] = self.host.launches
        with_benchmark_environment(result)
        return result
