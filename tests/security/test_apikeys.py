"""HTTP API keys on a real broker: 401 without a valid key, 403 for a read key on an admin
endpoint, 200 otherwise; keys made and revoked with ``dtf keys api-key``, stored as hashes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from dtf_bus.testing.cluster import wait_for

pytestmark = [pytest.mark.api, pytest.mark.security]

SPEC = {"name": "api", "tasks": [{"name": "t", "plugin": "sim", "params": {"seconds": 0.0}}]}


def dtf_keys(*args: str, keys_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DTF_API_KEYS"}
    return subprocess.run(
        [sys.executable, "-m", "dtf_bus.cli", "keys", "api-key", *args, "--file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def create_key(role: str, keys_file: Path) -> str:
    proc = dtf_keys("create", "--role", role, "--name", f"test {role}", keys_file=keys_file)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def http(cluster, path: str, key: str | None = None, body: Any = None) -> tuple[int, Any, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(cluster.http_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw.startswith(b"{") else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, exc.headers, json.loads(raw) if raw.startswith(b"{") else {}


@pytest.fixture
def keyed(make_cluster, tmp_path):
    keys_file = tmp_path / "api-keys.json"
    read, admin = create_key("read", keys_file), create_key("admin", keys_file)
    cluster = make_cluster(start=False, http="127.0.0.1:0")
    cluster.start_broker(extra_args=["--api-keys", str(keys_file)])
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    return cluster, keys_file, read, admin


def test_roles_missing_wrong_read_and_admin_keys(keyed):
    cluster, keys_file, read, admin = keyed
    for path in ("/api/status", "/api/workers", "/metrics", "/api/metrics/system"):
        code, headers, body = http(cluster, path)
        assert code == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), path
        assert "missing API token" in body["error"]["message"]
        assert http(cluster, path, key=read[:-1] + ("x" if read[-1] != "x" else "y"))[0] == 401
        assert http(cluster, path, key=read)[0] == 200
        assert http(cluster, path, key=admin)[0] == 200

    assert http(cluster, "/api/jobs", body=SPEC)[0] == 401
    code, _, body = http(cluster, "/api/jobs", key=read, body=SPEC)
    assert code == 403 and "needs an admin key" in body["error"]["message"]
    code, _, body = http(cluster, "/api/jobs", key=admin, body=SPEC)
    assert code == 201
    job_id = body["data"]["job_id"]
    wait_for(lambda: http(cluster, f"/api/jobs/{job_id}", key=read)[2]["data"]["done"], 30, "the job to finish")

    # Only hashes are stored; the keys appear nowhere on disk.
    stored = keys_file.read_text()
    assert read not in stored and admin not in stored and '"sha256"' in stored
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    listing = dtf_keys("list", "--json", keys_file=keys_file)
    assert [k["role"] for k in json.loads(listing.stdout)] == ["read", "admin"]
    assert read not in listing.stdout and "sha256" not in listing.stdout


def test_revoked_key_is_refused_without_a_restart(keyed):
    cluster, keys_file, read, _ = keyed
    assert http(cluster, "/api/status", key=read)[0] == 200
    key_id = read.split("_")[1]
    assert dtf_keys("revoke", key_id, keys_file=keys_file).returncode == 0
    assert http(cluster, "/api/status", key=read)[0] == 401
    assert dtf_keys("revoke", key_id, keys_file=keys_file).returncode == 2  # no such key any more


def test_websocket_needs_a_read_key(keyed):
    cluster, _, read, _ = keyed
    url = cluster.http_url.replace("http://", "ws://") + "/ws"

    async def scenario() -> None:
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(url)
        assert refused.value.code == 401
        for ws in (
            await websocket_connect(f"{url}?api_key={read}"),  # browsers cannot send headers
            await websocket_connect(HTTPRequest(url, headers={"Authorization": f"Bearer {read}"})),
        ):
            ws.write_message(json.dumps({"action": "subscribe", "channel": "workers"}))
            reply = json.loads(await asyncio.wait_for(ws.read_message(), 10))
            assert reply == {"channel": "workers", "event": "subscribed"}
            ws.close()

    asyncio.run(scenario())


def test_dashboard_reads_the_api_with_the_key_from_its_key_file(keyed, tmp_path, monkeypatch):
    from dtf_dashboard import api as dashboard_api

    cluster, _, read, _ = keyed
    monkeypatch.delenv("DTF_API_KEY", raising=False)
    monkeypatch.setattr(dashboard_api, "KEY", None)
    assert dashboard_api.get(cluster.http_url, "/api/status") is None  # refused, logged, no data
    key_file = tmp_path / "dashboard.key"
    key_file.write_text(read + "\n")
    dashboard_api.load_key(str(key_file))
    assert "workers" in dashboard_api.get(cluster.http_url, "/api/status")
