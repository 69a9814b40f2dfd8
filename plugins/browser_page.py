"""One browser task's page: load it, ask it about WebGPU and WebNN, run the script, collect what went wrong.

Runs on the browser host's event loop (:mod:`dtf_plugins.browser_host`) in a fresh browser context
per task, so tasks sharing a worker's browser share no cookies, storage or cache. The ``html``
param (and the blank default) is served from :data:`ORIGIN`, a reserved name that never reaches
the network (Playwright answers its requests) but counts as ``https``: a secure context, where
Chromium exposes ``navigator.gpu`` and ``navigator.ml``. ``about:blank`` itself is not one.

The script is the body of an async function with ``args`` in scope; it runs in the page, its
return value crosses as ``JSON.stringify`` text (so the result is exactly what JSON can say:
``undefined`` becomes null), and what it throws comes back with its name, message and stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from dtf_bus import defaults

log = logging.getLogger(__name__)

ORIGIN = "https://dtf.invalid/"  # .invalid never resolves (RFC 2606); every request to it is answered here
BLANK_HTML = "<!doctype html><html><head><title></title></head><body></body></html>"

# What the page reports for WebGPU and WebNN; each question bounded, as requestAdapter() may wait on a driver.
PROBE_JS = """
async (timeoutMs) => {
  const within = (promise, what) => Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what} did not answer within ${timeoutMs} ms`)), timeoutMs))]);
  const describe = (e) => (e && e.name ? `${e.name}: ${e.message}` : String(e));
  const secure = window.isSecureContext;
  const why = secure ? "" : " (the page is not a secure context: use https, localhost or the html param)";
  const report = {secure_context: secure, user_agent: navigator.userAgent};
  if (!("gpu" in navigator)) {
    report.webgpu = {available: false,
                     reason: "navigator.gpu is not exposed" + (why || ": WebGPU is off in this browser")};
  } else {
    try {
      const adapter = await within(navigator.gpu.requestAdapter(), "navigator.gpu.requestAdapter()");
      if (!adapter) {
        report.webgpu = {available: false,
                         reason: "navigator.gpu.requestAdapter() returned null: no usable GPU adapter"};
      } else {
        const info = adapter.info || (adapter.requestAdapterInfo ? await adapter.requestAdapterInfo() : {});
        const limits = {};
        for (const name of ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
                            "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX"]) {
          limits[name] = Number(adapter.limits[name]);
        }
        report.webgpu = {
          available: true, vendor: info.vendor || "", architecture: info.architecture || "",
          device: info.device || "", description: info.description || "",
          fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
          features: [...adapter.features].sort(), limits,
        };
      }
    } catch (e) {
      report.webgpu = {available: false, reason: describe(e)};
    }
  }
  if (!("ml" in navigator)) {
    report.webnn = {available: false,
                    reason: "navigator.ml is not exposed" + (why || ": WebNN is off in this browser")};
  } else {
    try {
      const context = await within(navigator.ml.createContext(), "navigator.ml.createContext()");
      report.webnn = {available: true};
      if (context && context.destroy) context.destroy();
    } catch (e) {
      report.webnn = {available: false, reason: describe(e)};
    }
  }
  return report;
}
"""


def script_function(body: str) -> str:
    """The page function that runs ``body`` and reports ``{ok, json}`` or what it threw.

    The body is spliced in as source (no ``new Function``), so a page's Content-Security-Policy
    cannot refuse it; a syntax error in it is Playwright's error, reported as such.
    """
    return (
        "async (args) => {\n"
        "  let value;\n"
        "  try {\n"
        "    value = await (async (args) => {\n" + body + "\n})(args);\n"
        "  } catch (e) {\n"
        "    const isError = e instanceof Error;\n"
        "    return {ok: false, stage: 'script', name: isError ? e.name : typeof e,\n"
        "            message: isError ? e.message : String(e), stack: isError ? String(e.stack || '') : ''};\n"
        "  }\n"
        "  try {\n"
        "    const text = JSON.stringify(value);\n"
        "    return {ok: true, json: text === undefined ? 'null' : text};\n"
        "  } catch (e) {\n"
        "    return {ok: false, stage: 'result', name: e.name, message: e.message, stack: ''};\n"
        "  }\n"
        "}"
    )


class PageFailed(Exception):
    """The task failed in the page; the message is the task's one-line error."""


@dataclass(slots=True)
class PageJob:
    """What one task asks of the browser (validated by :mod:`dtf_plugins.browser`)."""

    url: str | None
    html: str | None
    script: str | None
    args: Any
    timeout: float
    wait_until: str = "load"
    fail_on_page_error: bool = True


@dataclass(slots=True)
class PageReport:
    """What the page said, filled in as the task goes, so a failure or timeout keeps what was seen."""

    browser_version: str = ""
    stage: str = "opening a page"
    result: dict[str, Any] = field(default_factory=dict)
    console_errors: list[dict[str, Any]] = field(default_factory=list)
    page_errors: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: {"console_errors": 0, "page_errors": 0})
    crashed: bool = False

    def keep(self, kind: str, entry: dict[str, Any]) -> None:
        bucket = self.console_errors if kind == "console_errors" else self.page_errors
        if len(bucket) < defaults.BROWSER_MAX_MESSAGES:
            bucket.append(entry)
        else:
            self.dropped[kind] += 1

    def as_result(self) -> dict[str, Any]:
        result = {
            **self.result,
            "console_errors": self.console_errors,
            "page_errors": self.page_errors,
            "crashed": self.crashed,
        }
        result.setdefault("browser", {"name": "chromium", "version": self.browser_version})
        for kind, count in self.dropped.items():
            if count:
                result[f"{kind}_dropped"] = count
        return result


def _cut(text: str) -> str:
    limit = defaults.BROWSER_MESSAGE_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "no message")


def _watch(page: Any, report: PageReport) -> None:
    def on_console(message: Any) -> None:
        if message.type == "error":
            location = message.location or {}
            report.keep(
                "console_errors",
                {"text": _cut(message.text), "url": location.get("url", ""), "line": location.get("lineNumber")},
            )

    def on_page_error(error: Any) -> None:
        name = getattr(error, "name", "") or "Error"
        report.keep(
            "page_errors",
            {"name": name, "message": _cut(getattr(error, "message", str(error))), "stack": _cut(error.stack or "")},
        )

    def on_crash(_page: Any) -> None:
        report.crashed = True

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("crash", on_crash)


async def _serve_origin(context: Any, html: str) -> None:
    """Answer every request to :data:`ORIGIN`: the page at its root, 404 for anything else."""

    async def answer(route: Any) -> None:
        if route.request.url.split("?", 1)[0] == ORIGIN:
            await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)
        else:
            await route.fulfill(status=404, content_type="text/plain", body="not found")

    await context.route(ORIGIN + "**", answer)


async def _load(page: Any, job: PageJob, report: PageReport) -> None:
    target = job.url or ORIGIN
    report.stage = f"loading {target}"
    try:
        response = await page.goto(target, wait_until=job.wait_until, timeout=0)
    except Exception as exc:
        if report.crashed:
            raise PageFailed(f"browser: the page crashed while loading {target}") from None
        raise PageFailed(f"browser: cannot load {target}: {first_line(_error_message(exc))}") from None
    status = response.status if response is not None else None
    report.result.update(url=page.url, status=status, title=await page.title())
    if status is not None and status >= 400:
        raise PageFailed(f"browser: {target} answered HTTP {status}")


async def _run_script(page: Any, job: PageJob, report: PageReport) -> None:
    report.stage = "running the script"
    started = time.perf_counter()
    try:
        outcome = await page.evaluate(script_function(job.script or ""), job.args)
    except Exception as exc:
        message = first_line(_error_message(exc))
        if report.crashed:
            raise PageFailed("browser: the page crashed while running the script") from None
        raise PageFailed(f"browser: the script could not run: {message}") from None
    report.result["script_s"] = round(time.perf_counter() - started, 6)
    if not outcome.get("ok"):
        report.result["error"] = {key: outcome.get(key) for key in ("name", "message", "stack")}
        message = first_line(outcome.get("message") or "")
        if outcome.get("stage") == "result":
            raise PageFailed(f"browser: the script's return value is not JSON: {message}")
        raise PageFailed(f"browser: the script threw {outcome.get('name')}: {message}")
    report.result["value"] = json.loads(outcome["json"])


def _error_message(exc: BaseException) -> str:
    """Playwright's message without the API call it names (``Page.goto: ``); its call log
    follows on later lines, which :func:`first_line` drops."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return re.sub(r"^\s*[A-Z][A-Za-z]*\.[a-z][A-Za-z]*: ", "", text)


async def _probe(page: Any, version: str, report: PageReport) -> None:
    """Ask the loaded page about WebGPU and WebNN. Bounded in the page and here too: a page whose
    main thread never yields cannot run the probe's own timer. Not counted in the task's timeout."""
    report.stage = "probing WebGPU and WebNN"
    started = time.perf_counter()
    bound = defaults.BROWSER_PROBE_TIMEOUT
    try:
        probe = await asyncio.wait_for(page.evaluate(PROBE_JS, int(bound * 1000)), bound + 1.0)
    except TimeoutError:
        busy = {"available": False, "reason": f"the page did not answer within {bound:g}s (its main thread is busy)"}
        probe = {"secure_context": None, "user_agent": None, "webgpu": busy, "webnn": busy}
    report.result["probe_s"] = round(time.perf_counter() - started, 6)
    report.result["browser"] = {"name": "chromium", "version": version, "user_agent": probe["user_agent"]}
    report.result.update(secure_context=probe["secure_context"], webgpu=probe["webgpu"], webnn=probe["webnn"])
    report.result["value"] = None


async def _within(step: Awaitable[None], seconds: float, job: PageJob, report: PageReport) -> None:
    """``step`` within what is left of the task's ``timeout`` (loading and the script share it)."""
    try:
        await asyncio.wait_for(step, max(seconds, 0.0))
    except TimeoutError:
        raise PageFailed(f"browser: timed out after {job.timeout:g}s {report.stage}") from None


async def run_page(browser: Any, job: PageJob, report: PageReport) -> None:
    """Do ``job`` in a fresh context of ``browser``, filling ``report``; raises :class:`PageFailed`.

    The job's ``timeout`` covers loading the page and running the script, not the probes,
    which have their own bound (:data:`~dtf_bus.defaults.BROWSER_PROBE_TIMEOUT`).

    The context is closed however this ends (also on cancel): a timed-out or cancelled task
    leaves nothing running in the browser.
    """
    report.browser_version = browser.version
    context = await browser.new_context()
    try:
        await _serve_origin(context, job.html if job.html is not None else BLANK_HTML)
        page = await context.new_page()
        _watch(page, report)
        started = time.perf_counter()
        await _within(_load(page, job, report), job.timeout, job, report)
        report.result["load_s"] = round(time.perf_counter() - started, 6)
        await _probe(page, browser.version, report)
        if job.script is not None:
            await _within(_run_script(page, job, report), job.timeout - report.result["load_s"], job, report)
        if report.crashed:
            raise PageFailed("browser: the page crashed")
        if job.fail_on_page_error and report.page_errors:
            first = report.page_errors[0]
            raise PageFailed(f"browser: the page threw {first['name']}: {first_line(first['message'])}")
    except PageFailed:
        raise
    except Exception as exc:  # Playwright's own errors (cancellation is not an Exception)
        if report.crashed:
            raise PageFailed(f"browser: the page crashed while {report.stage}") from None
        raise PageFailed(f"browser: failed while {report.stage}: {first_line(_error_message(exc))}") from None
    finally:
        try:
            await asyncio.wait_for(asyncio.shield(context.close()), defaults.BROWSER_CLOSE_GRACE)
        except Exception as exc:  # a closed browser: its contexts are gone with it
            log.debug("closing a browser context failed: %s", exc)
