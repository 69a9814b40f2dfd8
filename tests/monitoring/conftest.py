"""Helpers for the monitoring suite: clusters with the HTTP API on, a tiny JSON client, headless Chromium."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dtf_bus.testing.cluster import wait_for

HTTP = "127.0.0.1:0"  # the broker's API on an ephemeral port

CHROMIUM = "/usr/bin/chromium"  # Debian's; bin/_bootstrap.sh installs it. Never `playwright install`.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("DTF_SKIP_BROWSER_TESTS"):
            pytest.skip("DTF_SKIP_BROWSER_TESTS is set and /usr/bin/chromium is missing")
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install chromium (bin/_bootstrap.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def monitored(make_cluster):
    """``make_cluster`` with the broker's HTTP API on an ephemeral port."""

    def factory(workers: dict[str, dict] | None = None, **kwargs):
        return make_cluster(workers=workers, http=HTTP, **kwargs)

    return factory


def call(cluster, path: str, method: str = "GET", body: Any = None, status: int = 200, **params) -> dict[str, Any]:
    """One request to the cluster's API, with its token; checks the status and the envelope,
    returns the envelope."""
    url = cluster.http_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", **cluster.api_headers()}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    envelope = json.loads(raw)
    assert code == status, f"{method} {path}: {code} {envelope}"
    assert envelope["ok"] is (status < 400) and "ts" in envelope
    if status >= 400:
        assert envelope["error"]["status"] == status and envelope["error"]["message"]
    return envelope


def data(cluster, path: str, **params) -> Any:
    return call(cluster, path, **params)["data"]


def eventually(fn, timeout: float = 10.0, what: str = "a condition"):
    """Poll ``fn`` until it returns truthy; AssertionError or KeyError mean "not yet" (a snapshot
    is empty until the broker's first metrics tick)."""

    def attempt():
        try:
            return fn()
        except (AssertionError, KeyError):
            return None

    return wait_for(attempt, timeout, what, interval=0.1)
