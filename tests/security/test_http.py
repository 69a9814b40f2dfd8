"""Red-team tests of the HTTP API and the dashboard, as issue 14 found them, on real brokers.

Each one failed on the API as it was: any web page could POST a shell task (a cross-site form
or a text/plain "simple request" got 201 and the command ran), a DNS-rebinding Host header was
served, no token was asked for, a slow WebSocket reader grew the broker without bound, 1,100
idle connections under ``ulimit -n 1024`` starved the bus and flooded the log with tracebacks,
``limit=inf`` or a deep body was a 500, ``?api_key=`` was logged in full, and there was no TLS.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from dtf_bus.testing.cluster import ClusterError, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

HTTP = "127.0.0.1:0"


def send(
    cluster, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request (no redirect followed, no header added but Host and Content-Length)."""
    url = urllib.parse.urlsplit(cluster.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def auth(cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.api_token}"}


def cookie(cluster) -> dict[str, str]:
    """What a browser holding the token cookie would send (SameSite keeps it from other sites;
    the tests send it anyway to show the other checks hold on their own)."""
    port = urllib.parse.urlsplit(cluster.http_url).port
    return {"Cookie": f"dtf-token-{port}={cluster.api_token}"}


def shell_spec(marker: Path) -> bytes:
    return json.dumps(
        {"name": "csrf", "tasks": [{"name": "pwn", "plugin": "shell", "params": {"cmd": f"touch {marker}"}}]}
    ).encode()


def run_probe_job(cluster) -> None:
    """A job submitted after the attacks and run to the end: anything they queued would have run by then."""
    with cluster.client() as client:
        job = client.submit([{"name": "probe", "plugin": "sim", "params": {"seconds": 0.0}}], name="probe")
        client.wait(job, timeout=30)


def test_cross_site_form_and_text_plain_posts_of_a_shell_task_run_nothing(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}}, http=HTTP)
    marker = tmp_path / "pwned"
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    multipart = b'--x\r\nContent-Disposition: form-data; name="spec"\r\n\r\n' + shell_spec(marker) + b"\r\n--x--\r\n"
    for kind, body in (
        ("application/x-www-form-urlencoded", shell_spec(marker)),
        ("text/plain", shell_spec(marker)),
        ("multipart/form-data; boundary=x", multipart),
    ):
        # What a page elsewhere can send without a preflight: no token (401), with the cookie
        # from another site (403), and even same-site with the cookie but a form type (415).
        code, headers, _ = send(cluster, "POST", "/api/jobs", body, {"Content-Type": kind, **evil})
        assert code == 403 and "location" not in headers, kind
        code, headers, _ = send(cluster, "POST", "/api/jobs", body, {"Content-Type": kind})
        assert code == 401 and "location" not in headers, kind
        code, _, _ = send(cluster, "POST", "/api/jobs", body, {"Content-Type": kind, **cookie(cluster), **evil})
        assert code == 403, kind
        code, _, answer = send(cluster, "POST", "/api/jobs", body, {"Content-Type": kind, **cookie(cluster)})
        assert code == 415 and b"application/json" in answer, kind
    body = shell_spec(marker)
    code, _, _ = send(cluster, "POST", "/api/jobs", body, {**cookie(cluster), "Origin": "null"})
    assert code == 403  # a sandboxed iframe's opaque origin
    run_probe_job(cluster)
    assert not marker.exists(), "a refused request ran its command"
    # The same request from the user's own script goes through, so the refusals above are the guard's.
    code, _, answer = send(cluster, "POST", "/api/jobs", body, {"Content-Type": "application/json", **auth(cluster)})
    assert code == 201, answer
    wait_for(marker.exists, 30, "the authorised shell task to run")


def test_a_rebinding_host_header_gets_403_never_data(make_cluster):
    cluster = make_cluster(workers={"w1": {}}, http=HTTP)
    port = urllib.parse.urlsplit(cluster.http_url).port
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.evil"):
        for method, body in (("GET", None), ("POST", b'{"tasks": [{"name": "a", "plugin": "sim"}]}')):
            headers = {"Host": host, "Content-Type": "application/json", **auth(cluster)}
            code, answer_headers, answer = send(
                cluster, method, "/api/status" if method == "GET" else "/api/jobs", body, headers
            )
            assert code == 403 and "location" not in answer_headers, (host, method, code)
            assert b"not served here" in answer and b"workers" not in answer
    for host in ("127.0.0.1", f"localhost:{port}", f"[::1]:{port}"):
        assert send(cluster, "GET", "/api/status", None, {"Host": host, **auth(cluster)})[0] == 200, host


def test_no_token_is_401_without_redirect_and_healthz_says_nothing(make_cluster):
    cluster = make_cluster(http=HTTP)
    assert cluster.api_token_file is not None and cluster.api_token
    mode = cluster.api_token_file.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)
    for path in ("/api/status", "/api/tasks", "/metrics", "/ws", "/", "/api/nope"):
        code, headers, _ = send(cluster, "GET", path)
        assert code == 401 and "location" not in headers and headers["www-authenticate"].startswith("Bearer"), path
        assert send(cluster, "GET", path, None, {"Authorization": "Bearer wrong-token-0000000000"})[0] == 401
    code, _, answer = send(cluster, "GET", "/healthz")
    assert code == 200 and answer == b"ok\n"
    # /metrics takes the token header (Prometheus' bearer_token_file); a browser opening the URL gets a cookie.
    assert send(cluster, "GET", "/metrics", None, auth(cluster))[0] == 200
    code, headers, _ = send(cluster, "GET", f"/api?token={cluster.api_token}")
    assert code == 200
    set_cookie = headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and cluster.api_token in set_cookie
    assert send(cluster, "GET", "/api/status", None, cookie(cluster))[0] == 200
    # The token survives a restart (the same file), so bookmarked URLs keep working.
    token = cluster.api_token
    cluster.stop_broker()
    cluster.start_broker()
    assert cluster.api_token == token and send(cluster, "GET", "/api/status", None, auth(cluster))[0] == 200


def test_a_token_file_others_can_read_is_refused(make_cluster):
    cluster = make_cluster(http=HTTP)
    cluster.stop_broker()
    cluster.api_token_file.chmod(0o644)
    with pytest.raises(ClusterError) as refused:
        cluster.start_broker()
    assert "readable by others" in str(refused.value) and "chmod 600" in str(refused.value)


def test_the_dashboard_asks_for_the_token_and_checks_the_host(make_cluster):
    cluster = make_cluster(http=HTTP)
    open_url = cluster.start_dashboard()
    page = urllib.parse.urlsplit(cluster.dashboard_url)

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection(page.hostname, page.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    for path in ("/", "/static/js/bokeh.min.js", "/ws"):
        code, headers = get(path)
        assert code == 401 and "location" not in headers, path
    code, headers = get("/?token=" + cluster.api_token, {"Host": "attacker.example"})
    assert code == 403 and "location" not in headers
    code, headers = get(urllib.parse.urlsplit(open_url).path + "?" + urllib.parse.urlsplit(open_url).query)
    assert code == 200 and "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert get("/", {"Cookie": f"dtf-token-{page.port}={cluster.api_token}"})[0] == 200


def test_websocket_from_another_origin_gets_403(make_cluster):
    cluster = make_cluster(http=HTTP)
    port = urllib.parse.urlsplit(cluster.http_url).port
    url = cluster.http_url.replace("http://", "ws://") + "/ws"

    async def scenario() -> None:
        for headers in (
            {"Origin": "http://evil.example", **auth(cluster)},
            {"Origin": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}", **auth(cluster)},
            {"Origin": "null", **auth(cluster)},
            # DNS rebinding: Host and Origin agree, but the name is not ours.
            {"Origin": f"http://attacker.example:{port}", "Host": f"attacker.example:{port}", **auth(cluster)},
        ):
            with pytest.raises(HTTPClientError) as refused:
                await websocket_connect(HTTPRequest(url, headers=headers))
            assert refused.value.code == 403, headers
        ws = await websocket_connect(
            HTTPRequest(url, headers={"Origin": f"http://127.0.0.1:{port}", **cookie(cluster)})
        )
        ws.write_message(json.dumps({"action": "subscribe", "channel": "workers"}))
        assert json.loads(await asyncio.wait_for(ws.read_message(), 10))["event"] == "subscribed"
        ws.close()

    asyncio.run(scenario())


def _raw_websocket(cluster, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket opened by hand, so that it can stop reading: a tiny receive buffer, the token."""
    url = urllib.parse.urlsplit(cluster.http_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((url.hostname, url.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {cluster.api_token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"action": "subscribe", "channel": "tasks"}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def test_a_slow_websocket_reader_is_cut_off_with_memory_bounded(make_cluster):
    cluster = make_cluster(start=False, http=HTTP)
    cluster.start_broker(extra_args=["--ws-max-pending-bytes", str(256 * 1024)])
    cluster.start_worker("w1", slots=4)
    cluster.wait_for_workers(["w1"])
    broker = psutil.Process(cluster.broker.pid)
    baseline = broker.memory_info().rss
    sock = _raw_websocket(cluster)
    peak = baseline
    deadline = time.monotonic() + 90
    with cluster.client() as client:
        while "WebSocket client" not in cluster.broker.log_tail(200) or "cut off" not in cluster.broker.log_tail(200):
            assert time.monotonic() < deadline, "the stalled reader was never cut off"
            job = client.submit([{"name": "churn", "plugin": "sim", "params": {"seconds": 0.0}, "repeat": 1000}])
            client.wait(job, timeout=60)
            peak = max(peak, broker.memory_info().rss)
    # What the server sent before cutting it off ends with a close frame, code 1008, then EOF.
    received = bytearray()
    sock.settimeout(15)
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sock.close()
    assert struct.pack("!H", 1008) + b"too slow" in received
    assert peak - baseline < 200 * 1024 * 1024, f"broker RSS grew {(peak - baseline) >> 20} MiB"
    assert "Traceback" not in cluster.broker.log_tail(400)


@pytest.mark.parametrize("cap", [None, 5000], ids=["default-cap", "cap-above-the-fd-limit"])
def test_1100_idle_connections_under_ulimit_1024_leave_the_bus_served(make_cluster, cap):
    cluster = make_cluster(start=False, http=HTTP)
    cluster.start_broker(extra_args=["--http-max-connections", str(cap)] if cap else [])
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    broker = psutil.Process(cluster.broker.pid)
    broker.rlimit(psutil.RLIMIT_NOFILE, (1024, 1024))  # as under `ulimit -n 1024`
    url = urllib.parse.urlsplit(cluster.http_url)
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((url.hostname, url.port))
            idle.append(sock)
        time.sleep(0)  # nothing to wait for: the broker accepts (or refuses) as they arrive
        with cluster.client(timeout=1.0) as client:
            for _ in range(5):
                started = time.monotonic()
                assert client.workers()[0]["worker_id"] == "w1"
                assert time.monotonic() - started < 1.0
        wait_for(
            # All 1,100 fit the listen backlog (HTTP_LISTEN_BACKLOG): none waits for a SYN retry.
            lambda: "refusing more" in cluster.broker.log_tail(100),
            15,
            "the connection cap to be reached and logged",
        )
        assert broker.is_running() and broker.num_fds() < 1024
    finally:
        for sock in idle:
            sock.close()

    def status() -> int | None:
        try:  # refused (reset) until the broker has seen the idle connections close
            return send(cluster, "GET", "/api/status", None, auth(cluster))[0]
        except (OSError, http.client.HTTPException):
            return None

    assert wait_for(status, 15, "the API to answer again") == 200
    log = cluster.broker.log_path.read_text(errors="replace")
    assert log.count("Traceback") == 0, log[-3000:]
    assert log.count("refusing more") <= 2 and len(log) < 100_000


MALFORMED_QUERIES = [
    "/api/tasks?limit=inf",
    "/api/tasks?limit=nan",
    "/api/tasks?limit=-1",
    "/api/tasks?offset=1e300",
    "/api/tasks?offset=-5",
    "/api/workers?limit=1e300",
    "/api/anomalies?since=nan",
    "/api/anomalies?limit=inf",
    "/api/metrics/history/system?end=inf",
    "/api/metrics/history/system?interval=0s",
    "/api/tasks?state=%ff%fe",
]


def test_malformed_queries_are_400(make_cluster):
    cluster = make_cluster(http=HTTP)
    for path in MALFORMED_QUERIES:
        code, _, answer = send(cluster, "GET", path, None, auth(cluster))
        assert code == 400 and json.loads(answer)["error"]["message"], (path, code, answer)
    assert "Traceback" not in cluster.broker.log_tail(400)


def test_malformed_bodies_are_400(make_cluster):
    cluster = make_cluster(http=HTTP)
    bodies = [
        ("application/json", b"[" * 100_000),
        ("application/json", b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("application/toml", b"a = " + b"[" * 5000),
        ("application/toml", b"a = " + b"[" * 5000 + b"]" * 5000),
        ("application/json", b"\xff\xfe{}"),
        ("application/toml", b'name = "\xff"'),
        (
            "application/json",
            b'{"tasks": [{"name": "a", "plugin": "sim", "params": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}]}",
        ),
        ("application/json", b'{"tasks": "nope"}'),
        ("application/json", b"{"),
    ]
    for kind, body in bodies:
        code, _, answer = send(cluster, "POST", "/api/jobs", body, {"Content-Type": kind, **auth(cluster)})
        assert code == 400, (kind, body[:40], answer[:200])
        assert json.loads(answer)["error"]["message"]
    assert "Traceback" not in cluster.broker.log_tail(400)


def test_tokens_and_keys_never_reach_the_log(make_cluster, tmp_path):
    keys_file = tmp_path / "api-keys.json"
    made = subprocess.run(
        [sys.executable, "-m", "dtf_bus.cli", "keys", "api-key", "create", "--role", "read", "--file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    read_key = made.stdout.strip()
    cluster = make_cluster(start=False, http=HTTP)
    cluster.start_broker(extra_args=["--api-keys", str(keys_file)])
    wrong = "s3cret-wrong-token-value-123456"
    for path in (
        f"/api/nope?token={cluster.api_token}",  # a 404 with the real token
        f"/api/status?token={wrong}",
        f"/api/status?api_key={wrong}&x=1",
        f"/api/tasks?api_key={read_key}&limit=inf",  # a 400 with a valid key
        f"/ws?api_key={read_key}",
    ):
        assert send(cluster, "GET", path)[0] >= 400, path
    code, _, _ = send(cluster, "POST", f"/api/jobs?api_key={read_key}", b"{}", {"Content-Type": "application/json"})
    assert code == 403  # a read key may not submit
    wait_for(lambda: "403 POST" in cluster.broker.log_tail(50), 10, "the refusals in the log")
    log = cluster.broker.log_path.read_text(errors="replace")
    for secret in (cluster.api_token, wrong, read_key, read_key.split("_")[-1]):
        assert secret not in log
    assert "token=***" in log and "api_key=***" in log


def test_a_read_key_sees_env_names_not_values_and_the_job_records_its_submitter(make_cluster, tmp_path):
    keys_file = tmp_path / "api-keys.json"
    made = subprocess.run(
        [sys.executable, "-m", "dtf_bus.cli", "keys", "api-key", "create", "--role", "read", "--file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    read_key = made.stdout.strip()
    cluster = make_cluster(start=False, http=HTTP)
    cluster.start_broker(extra_args=["--api-keys", str(keys_file)])
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    spec = {
        "name": "env",
        "tasks": [{"name": "t", "plugin": "shell", "params": {"cmd": "true", "env": {"PASSWORD": "hunter2"}}}],
    }
    code, _, answer = send(
        cluster, "POST", "/api/jobs", json.dumps(spec).encode(), {"Content-Type": "application/json", **auth(cluster)}
    )
    assert code == 201, answer
    job_id = json.loads(answer)["data"]["job_id"]
    read = {"Authorization": f"Bearer {read_key}"}

    def finished() -> dict | None:
        task = json.loads(send(cluster, "GET", f"/api/tasks/{job_id}.0", None, read)[2])["data"]
        return task if task["state"] == "succeeded" and task.get("params") else None

    task = wait_for(finished, 30, "the task to finish and be stored")
    assert task["params"]["env"] == {"PASSWORD": "***"}
    for path in (f"/api/tasks/{job_id}.0", f"/api/tasks?job={job_id}", f"/api/jobs/{job_id}"):
        assert b"hunter2" not in send(cluster, "GET", path, None, read)[2], path
    status = json.loads(send(cluster, "GET", f"/api/jobs/{job_id}", None, read)[2])["data"]
    assert status["submitter"] == "api:token"


def test_https_with_http_cert_and_http_key(make_cluster, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a self-signed certificate here: {made.stderr.strip()[:200]}")
    cluster = make_cluster(start=False, http=HTTP)
    cluster.start_broker(extra_args=["--http-cert", str(cert), "--http-key", str(key)])
    assert cluster.http_url.startswith("https://127.0.0.1:")
    url = urllib.parse.urlsplit(cluster.http_url)
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=10, context=context)
    conn.request("GET", "/api/status", headers=auth(cluster))
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["data"]["http"] == cluster.http_url
    conn.request("GET", f"/api?token={cluster.api_token}")
    response = conn.getresponse()
    response.read()
    assert "Secure" in response.getheader("Set-Cookie")
    conn.close()
    # Plain HTTP to the TLS port gets no answer; a wrong key pair is refused at start with one line.
    plain = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/api/status", headers=auth(cluster))
        plain.getresponse().read()
    plain.close()
    cluster.stop_broker()
    with pytest.raises(ClusterError) as refused:
        cluster.start_broker(extra_args=["--http-cert", str(cert), "--http-key", str(cert)])
    assert "cannot load the TLS certificate" in str(refused.value)
