"""The browser host in this process: one real Chromium, closed when idle, replaced when it dies."""

from __future__ import annotations

import signal
import threading

import psutil
import pytest

from dtf_bus import defaults
from dtf_bus.testing.cluster import wait_for
from dtf_plugins.browser_host import BrowserHost, Cancelled
from tests.integration.test_browser import CHROMIUM, require_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def host():
    require_chromium()
    host = BrowserHost(CHROMIUM, list(defaults.BROWSER_ARGS), idle=0.5)
    try:
        yield host
    finally:
        host.close()


async def version(browser) -> str:
    return browser.version


def browser_main_processes() -> list[psutil.Process]:
    """Chromium's browser processes under this one (its helpers carry a --type= flag)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name().lower() and not any(a.startswith("--type=") for a in proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_cancel_idle_close_relaunch_and_a_killed_browser_replaced(host):
    never, cancelled = threading.Event(), threading.Event()

    async def forever(browser):
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.evaluate("() => new Promise(() => {})")
        finally:
            await context.close()

    threading.Timer(0.5, cancelled.set).start()
    with pytest.raises(Cancelled):  # a cancelled call stops at once ...
        host.call(forever, cancelled)
    assert host.call(version, never) and host.launches == 1 and host.running  # ... and the browser stays

    wait_for(lambda: not host.running and not browser_main_processes(), 15, "the idle browser to close")
    assert host.call(version, never) and host.launches == 2

    [main] = browser_main_processes()
    main.send_signal(signal.SIGKILL)

    def replaced():
        try:
            host.call(version, never)
        except Exception:  # a call racing the disconnect may see the old browser go
            return None
        return host.launches == 3 or None

    wait_for(replaced, 30, "a new browser after the old one was killed", interval=0.1)
