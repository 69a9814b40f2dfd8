"""The worker's one headless Chromium, driven by Playwright, shared by all its browser tasks.

Starting Chromium takes about a second and a few hundred MB; a fresh browser *context* per task
takes milliseconds and isolates tasks as well (cookies, storage, cache). So a worker keeps one
browser, launched on its first browser task, relaunched when it died, and closed after
:data:`~dtf_bus.defaults.BROWSER_IDLE` seconds without a task and when the worker exits.

Playwright's async API runs on an event loop in a daemon thread of its own: the worker's task
threads hand it coroutines (:meth:`BrowserHost.call`), so tasks on several slots run their pages
at once on the one browser, and a task thread only ever waits, watching its cancel flag. Chromium
is Playwright's child: if the worker is killed outright, Playwright's driver sees its pipe close
and takes the browser down with it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dtf_bus import defaults

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL = 0.05  # seconds between a waiting task thread's looks at its cancel flag


class Cancelled(Exception):
    """The task was cancelled or timed out while its page ran; the page is closed."""


class LaunchFailed(Exception):
    """Chromium would not start; the message is one line naming the binary and why."""


class BrowserHost:
    def __init__(self, executable: str, args: list[str], idle: float = defaults.BROWSER_IDLE) -> None:
        self.executable = executable
        self.args = list(args)
        self.idle = idle
        self.launches = 0  # how many times a browser was started (reported, and watched by tests)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Touched on the loop only:
        self._playwright: Any = None
        self._browser: Any = None
        self._launching: asyncio.Lock | None = None
        self._active = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def running(self) -> bool:
        """Whether a browser is up (between a first task and an idle close or the worker's exit)."""
        return self._browser is not None

    # ----------------------------------------------------------- task threads

    def call(self, job: Callable[[Any], Awaitable[T]], cancelled: threading.Event) -> T:
        """Run ``job(browser)`` on the loop and return what it returns; raise what it raises.

        When ``cancelled`` is set first, the job is cancelled (its ``finally`` closes its page),
        waited for a grace period, and :class:`Cancelled` is raised.
        """
        loop = self._ensure_loop()
        finished = threading.Event()

        async def run() -> T:
            try:
                return await self._with_browser(job)
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        while True:
            try:
                return future.result(timeout=POLL)
            except concurrent.futures.TimeoutError:
                if cancelled.is_set():
                    future.cancel()
                    finished.wait(defaults.BROWSER_CLOSE_GRACE)
                    raise Cancelled() from None

    def close(self, timeout: float = defaults.BROWSER_CLOSE_GRACE) -> None:
        """Close the browser and stop the loop (worker exit); safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()

                self._thread = threading.Thread(target=serve, name="dtf-browser", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    # ------------------------------------------------------------------ loop

    async def _with_browser(self, job: Callable[[Any], Awaitable[T]]) -> T:
        self._active += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            return await job(await self._browser_ready())
        finally:
            self._active -= 1
            if self._active == 0 and self._browser is not None:
                loop = asyncio.get_running_loop()
                self._idle_timer = loop.call_later(self.idle, lambda: loop.create_task(self._close_if_idle()))

    async def _browser_ready(self) -> Any:
        if self._launching is None:
            self._launching = asyncio.Lock()
        async with self._launching:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._browser is not None:
                log.warning("the browser has gone (crashed or killed); starting a new one")
                await self._shutdown()
            from playwright.async_api import async_playwright

            try:
                if self._playwright is None:
                    self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=self.executable,
                    args=self.args,
                    timeout=defaults.BROWSER_LAUNCH_TIMEOUT * 1000,
                    # A terminal's Ctrl-C reaches Playwright's driver too; the first one only
                    # drains the worker, whose running browser tasks must be able to finish.
                    handle_sigint=False,
                )
            except Exception as exc:
                await self._shutdown()
                reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise LaunchFailed(f"browser: cannot start {self.executable}: {reason}") from None
            self.launches += 1
            log.info("started %s %s for browser tasks", self.executable, self._browser.version)
            return self._browser

    async def _close_if_idle(self) -> None:
        if self._launching is None:
            return
        async with self._launching:  # a task arriving meanwhile waits, then gets a fresh browser
            if self._active == 0 and self._browser is not None:
                log.info("closing the browser after %.0f s without a browser task", self.idle)
                await self._shutdown()

    async def _shutdown(self) -> None:
        browser, playwright = self._browser, self._playwright
        self._browser = self._playwright = None
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), defaults.BROWSER_CLOSE_GRACE)
        if playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(playwright.stop(), defaults.BROWSER_CLOSE_GRACE)


def _close_at_exit(ref: weakref.ref) -> None:
    host = ref()
    if host is not None:
        host.close()
