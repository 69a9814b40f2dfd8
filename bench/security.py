"""Security overhead and the broker under attack: hostile-input checks, CURVE, and issue 14's attacks.

1. ``protocol.decode`` as shipped (msgpack limits, schema, id/timestamp/nesting limits) against
   the same decode without the limits (the baseline, defined here), per message kind, in
   microseconds per message, on one core in this process.
2. A real broker and one worker, plaintext then CURVE (``LocalCluster(secure=True)``): client
   round trips (``ping``, median microseconds) and a job of ``--tasks`` zero-second sim tasks
   (tasks per second, submit to last result).
3. Attacks (``--attacks``, on by default): each against a fresh real broker in a temp dir
   (plaintext, HTTP API on 127.0.0.1:0, ephemeral ports), beside an idle broker measured the
   same way in the same run. A probe in its own process (so the attackers' Python work never
   holds its GIL) pings the broker every ``--probe-interval`` seconds: the round trips' p50 and
   p99 are the broker loop's latency as a bus client sees it (a ping stalled past the interval
   also counts the pings it held back, each with the wait it would have had, so that one long
   stall shows in the p99 and not only in the max); it samples the broker's RSS too (peak during
   the attack; ``after`` once the attack ended and the broker settled for ``--settle`` seconds).

   - ``idle``: the broker, its HTTP API and one worker, nothing else; ``churn``: the same with
     jobs of ``--churn-tasks`` no-op tasks back to back (the baseline of the slow reader).
   - ``slow_ws_reader``: a WebSocket subscribed to the tasks channel that never reads (4 KB
     receive buffer) while tasks churn; the broker should cut it off at its byte cap.
   - ``repeat_bomb``: a 70-byte spec with ``repeat = --bomb-repeat`` submitted, then cancelled,
     then ``--attack-seconds`` more watching the broker (``--finished-job-ttl --bomb-ttl``) give
     the memory back (``released_after_s``: RSS back under half the growth, from the cancel).
   - ``slowloris``: ``--slowloris`` idle HTTP connections held open (the broker under ``ulimit
     -n --slowloris-broker-nofile``, as found; the bench raises its own soft limit to the hard
     one, or opens fewer and says so).
   - ``big_frames``: bursts of ``--big-frames`` frames of a ``--big-frame-keys``-key msgpack map
     over a raw DEALER, each burst's refusals awaited, for the whole window (one worker attached,
     whose heartbeats must keep flowing).
   - ``curve_flood``: against a CURVE broker (idle window on it first: ``idle_curve``), fresh
     keys handshaking ``--curve-batch`` at a time (at most ``--curve-flood``); the refused-key log
     lines are counted against the broker's budget of 20 a minute.

   Each attack lasts ``--attack-seconds`` and is bounded in count; every process and socket is
   closed by pid or handle on the way out, failure included.

    python bench/security.py [--decodes 50000] [--pings 2000] [--tasks 2000] [--attack-seconds 5] [--json]
    python bench/security.py --no-overhead   # the attacks only
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import math
import multiprocessing
import os
import socket
import struct
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import benchlib
import msgpack
import psutil
import zmq
from zmq.utils.monitor import recv_monitor_message

from dtf_bus import defaults, protocol
from dtf_bus.client import BrokerUnreachable, Client
from dtf_bus.testing.cluster import LocalCluster, wait_for

MESSAGES: dict[str, bytes] = {
    "heartbeat": protocol.encode(
        protocol.HEARTBEAT, {"metrics": {f"m{i}": i * 1.5 for i in range(12)}, "running": [["j.1", 1]]}
    ),
    "task_result (small)": protocol.encode(
        protocol.TASK_RESULT,
        {
            "results": [
                {
                    "task_id": "abcdef123456.17",
                    "attempt": 1,
                    "outcome": "succeeded",
                    "result": {"seconds": 0.1, "speed": 1.0, "outcome": "pass"},
                    "error": None,
                    "started_at": 1.7e9,
                    "ended_at": 1.7e9 + 1,
                }
            ]
        },
    ),
    "task_result (100 tests)": protocol.encode(
        protocol.TASK_RESULT,
        {
            "results": [
                {
                    "task_id": "abcdef123456.18",
                    "attempt": 1,
                    "outcome": "failed",
                    "result": {
                        "tests": [
                            {
                                "nodeid": f"tests/test_x.py::test_{i}",
                                "outcome": "passed",
                                "duration": 0.01,
                                "message": "",
                            }
                            for i in range(100)
                        ],
                        "exit_code": 1,
                    },
                    "started_at": 1.7e9,
                    "ended_at": 1.7e9 + 1,
                }
            ]
        },
    ),
    "status": protocol.encode(protocol.STATUS, {"req": 7, "job_id": "abcdef123456"}),
}


def unchecked_decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """The baseline: decode as it was before the hostile-input limits (types only)."""
    msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=len(frame))
    if not isinstance(msg, list) or len(msg) != 3:
        raise protocol.ProtocolError("message is not a [version, type, body] array")
    version, kind, body = msg
    if version != protocol.VERSION or kind not in protocol.SCHEMAS or not isinstance(body, dict):
        raise protocol.ProtocolError("bad envelope")
    for field, (types, required) in protocol.SCHEMAS[kind].items():
        if field not in body:
            if required:
                raise protocol.ProtocolError(f"{kind}: missing field {field!r}")
            continue
        value = body[field]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise protocol.ProtocolError(f"{kind}: field {field!r} has the wrong type")
    return kind, body


def per_message_us(fn: Any, frame: bytes, n: int, rounds: int) -> float:
    best = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn(frame)
        best.append((time.perf_counter() - start) / n * 1e6)
    return benchlib.median(best)


def cluster_figures(secure: bool, pings: int, tasks: int) -> dict[str, float]:
    with benchlib.cluster(secure=secure) as cluster:
        cluster.start_broker()
        cluster.start_worker("w1", slots=8)
        cluster.wait_for_workers(["w1"], timeout=30)
        with cluster.client(timeout=30) as client:
            times = []
            for _ in range(pings):
                start = time.perf_counter()
                client.ping()
                times.append((time.perf_counter() - start) * 1e6)
            start = time.perf_counter()
            job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 0.0}, "repeat": tasks}])
            client.wait(job, timeout=300)
            elapsed = time.perf_counter() - start
    return {"ping_us": benchlib.median(times), "tasks_per_s": tasks / elapsed}


# ----------------------------------------------------------------------------------- attacks

HTTP = "127.0.0.1:0"
NOWHERE = {"hardware": "no-such-hardware"}  # a requirement no worker meets: the tasks stay queued
CHURN_SLOTS = 4
PROBE_TIMEOUT = 5.0  # a ping unanswered this long counts as a timeout (its wait is still a sample)
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _probe_main(endpoint: str, pid: int, curve: Any, interval: float, conn: Any) -> None:
    """The probe process: a ping every ``interval`` seconds, the broker's RSS after each.
    Commands on ``conn``: "start" opens a window, "stop" answers with its figures, "exit" ends."""
    client = Client(endpoint, timeout=PROBE_TIMEOUT, curve=curve)
    broker = psutil.Process(pid)
    rtts: list[float] = []
    pings, timeouts, rss_start, rss_peak, measuring = 0, 0, 0, 0, False
    try:
        client.ping()
        conn.send("ready")
        while True:
            tick = time.perf_counter()
            try:
                client.ping()
            except BrokerUnreachable:
                timeouts += measuring
            if measuring:
                pings += 1
                rtt = time.perf_counter() - tick
                rtts.append(rtt * 1e3)
                # A ping waits for the last one, so a stall yields one sample, not the ones a
                # ping every interval would have seen: add those (coordinated omission).
                missed = rtt - interval
                while missed > 0:
                    rtts.append(missed * 1e3)
                    missed -= interval
                rss_peak = max(rss_peak, broker.memory_info().rss)
            # Wait out the interval, or less when a command arrives.
            while conn.poll(max(0.0, interval - (time.perf_counter() - tick))):
                command = conn.recv()
                if command == "start":
                    rtts, pings, timeouts, measuring = [], 0, 0, True
                    rss_start = rss_peak = broker.memory_info().rss
                elif command == "stop":
                    measuring = False
                    conn.send(
                        {
                            "pings": pings,
                            "ping_samples": len(rtts),
                            "ping_timeouts": timeouts,
                            "ping_p50_ms": percentile(rtts, 50),
                            "ping_p99_ms": percentile(rtts, 99),
                            "ping_max_ms": max(rtts, default=0.0),
                            "rss_start_mb": rss_start / 2**20,
                            "rss_peak_mb": max(rss_peak, broker.memory_info().rss) / 2**20,
                        }
                    )
                else:
                    return
    finally:
        client.close()


class Probe:
    """The probe's process (spawned: no forked ZeroMQ state), driven through a pipe."""

    def __init__(self, cluster: LocalCluster, interval: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        args = (cluster.endpoint, cluster.broker.pid, cluster.client_curve, interval, child)
        self._proc = ctx.Process(target=_probe_main, args=args, name="dtf-bench-probe", daemon=True)
        self._proc.start()
        child.close()
        self.started = 0.0
        try:
            if self._recv(60) != "ready":
                raise RuntimeError("the probe did not start")
        except BaseException:
            self.close()
            raise

    def _recv(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the probe did not answer within {timeout:g}s")
        return self._conn.recv()  # EOFError if it died

    def start(self) -> None:
        self._conn.send("start")
        self.started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        self._conn.send("stop")
        figures = self._recv(PROBE_TIMEOUT + 30)
        figures["seconds"] = time.monotonic() - self.started
        return figures

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send("exit")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()  # by its own handle (pid), never by name
            self._proc.join(5)
        self._conn.close()


class Window:
    """An attack's measured window: the attack opens it when it begins and closes it when it ends."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.figures: dict[str, Any] | None = None
        # What to do once the RSS after was read (it may grow the broker again); returns figures.
        self.afterwards: Callable[[], dict[str, Any]] | None = None

    @property
    def started(self) -> float:
        return self.probe.started

    def start(self) -> None:
        self.probe.start()

    def stop(self) -> None:
        if self.figures is None:
            self.figures = self.probe.stop()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def run_attack(
    args: Any,
    attack: Callable[[LocalCluster, Any, Window], dict[str, Any]],
    workers: int = 0,
    broker_args: list[str] | None = None,
    secure: bool = False,
) -> dict[str, Any]:
    """A fresh broker (and ``workers``), the probe, ``attack`` in its window; then, once the
    broker settled, its RSS after and what its log holds."""
    with benchlib.cluster(secure=secure, http=HTTP) as cluster:
        cluster.start_broker(extra_args=broker_args)
        ids = [f"w{i + 1}" for i in range(workers)]
        for worker_id in ids:
            cluster.start_worker(worker_id, slots=CHURN_SLOTS)
        if ids:
            cluster.wait_for_workers(ids, timeout=30)
        probe = Probe(cluster, args.probe_interval)
        try:
            time.sleep(args.settle)  # the startup's allocations and connections done
            rss_before = rss_mb(cluster.broker.pid)
            window = Window(probe)
            extra = attack(cluster, args, window)
            window.stop()
            time.sleep(args.settle)
            rss_after = rss_mb(cluster.broker.pid)
            if window.afterwards is not None:
                extra.update(window.afterwards())
        finally:
            probe.close()
        log_text = cluster.broker.log_path.read_text(errors="replace")
        alive = cluster.broker.alive()
    return {
        **window.figures,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "broker_alive": alive,
        "log_kb": len(log_text.encode()) / 1024,
        "log_tracebacks": log_text.count("Traceback"),
        **extra,
    }


def attack_idle(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    window.start()
    time.sleep(args.attack_seconds)
    return {}


def churn(cluster: LocalCluster, args: Any, window: Window, each_job: Callable[[], None] | None = None) -> dict:
    """Jobs of ``--churn-tasks`` no-op tasks back to back for the window (the last one finishes)."""
    tasks = 0
    with cluster.client(timeout=60) as client:
        while tasks == 0 or time.monotonic() - window.started < args.attack_seconds:
            job = client.submit(
                [{"name": "churn", "plugin": "sim", "params": {"seconds": 0.0}, "repeat": args.churn_tasks}]
            )
            client.wait(job, timeout=120)
            tasks += args.churn_tasks
            if each_job is not None:
                each_job()
    return {"tasks": tasks, "tasks_per_s": tasks / (time.monotonic() - window.started)}


def attack_churn(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    window.start()
    return churn(cluster, args, window)


def raw_websocket(cluster: LocalCluster, channel: str = "tasks", rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket opened by hand with the API token, subscribed to ``channel``, that can stop reading."""
    url = urllib.parse.urlsplit(cluster.http_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
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
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError(f"the WebSocket handshake got {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the WebSocket handshake got {head[:200]!r}")
        payload = f'{{"action": "subscribe", "channel": "{channel}"}}'.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    except BaseException:
        sock.close()
        raise
    return sock


def attack_slow_ws_reader(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    sock = raw_websocket(cluster)
    cut_off_after: list[float] = []

    def look() -> None:
        if not cut_off_after and "cut off" in cluster.broker.log_tail(50):
            cut_off_after.append(time.monotonic() - window.started)

    try:
        window.start()
        figures = churn(cluster, args, window, look)
        window.stop()
    finally:
        sock.close()
    return {**figures, "cut_off": bool(cut_off_after), "cut_off_after_s": cut_off_after[0] if cut_off_after else None}


def attack_repeat_bomb(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    bomb = {"name": "b", "plugin": "sim", "requires": NOWHERE, "repeat": args.bomb_repeat}
    spec_bytes = len(f'[[tasks]]\nname="b"\nplugin="sim"\nrepeat={args.bomb_repeat}\nrequires={{hardware="x"}}\n')
    pid = cluster.broker.pid
    with cluster.client(timeout=120) as client:
        before = rss_mb(pid)
        window.start()
        started = time.perf_counter()
        job = client.submit([bomb], name="bomb")
        submit_s = time.perf_counter() - started
        held = rss_mb(pid)
        started = time.perf_counter()
        cancelled = client.cancel(job)["cancelled"]
        cancel_s = time.perf_counter() - started
        cancelled_at = time.monotonic()
        released_after = None
        while time.monotonic() - cancelled_at < args.attack_seconds:  # the release, watched
            if released_after is None and rss_mb(pid) - before < 0.5 * (held - before):
                released_after = time.monotonic() - cancelled_at
            time.sleep(0.05)
        window.stop()

    def status() -> dict[str, Any]:
        """The released job's status, served from DuckDB: what one such request costs."""
        with cluster.client(timeout=120) as client:
            started = time.perf_counter()
            counts = client.status(job)["counts"]
            status_s = time.perf_counter() - started
        return {
            "cancelled_in_status": counts.get("cancelled", 0),
            "status_after_release_s": status_s,
            "rss_after_status_mb": rss_mb(pid),
        }

    window.afterwards = status
    return {
        "repeat": args.bomb_repeat,
        "spec_bytes": spec_bytes,
        "submit_s": submit_s,
        "cancel_s": cancel_s,
        "cancelled": cancelled,
        "rss_held_mb": held,
        "kb_per_task": max(0.0, held - before) * 1024 / args.bomb_repeat,
        "released_after_s": released_after,
        "finished_job_ttl_s": args.bomb_ttl,
    }


def slowloris_connections(requested: int) -> tuple[int, int]:
    """How many idle connections this process can hold (its soft limit raised to the hard one
    where allowed), leaving descriptors for everything else; and the limit."""
    limit = benchlib.raise_fd_limit()
    spare = limit - psutil.Process().num_fds() - 128
    return max(1, min(requested, spare)), limit


def attack_slowloris(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    count, fd_limit = slowloris_connections(args.slowloris)
    broker = psutil.Process(cluster.broker.pid)
    if args.slowloris_broker_nofile:
        with contextlib.suppress(psutil.Error, OSError):  # as under `ulimit -n N`, where allowed
            broker.rlimit(psutil.RLIMIT_NOFILE, (args.slowloris_broker_nofile, args.slowloris_broker_nofile))
    broker_limit = broker.rlimit(psutil.RLIMIT_NOFILE)[0]
    url = urllib.parse.urlsplit(cluster.http_url)
    idle: list[socket.socket] = []
    fds_peak = broker.num_fds()
    try:
        window.start()
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            idle.append(sock)
            sock.setblocking(False)
            sock.connect_ex((url.hostname, url.port))
        while time.monotonic() - window.started < args.attack_seconds:
            fds_peak = max(fds_peak, broker.num_fds())
            time.sleep(0.05)
        window.stop()
    finally:
        for sock in idle:
            sock.close()

    def answers() -> bool:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        try:  # refused (reset) until the broker has seen the idle connections close
            conn.request("GET", "/api/status", headers=cluster.api_headers())
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    started = time.monotonic()
    wait_for(answers, 30, "the API to answer again after the idle connections closed", interval=0.05)
    return {
        "connections": count,
        "connections_requested": args.slowloris,
        "bench_fd_limit": fd_limit,
        "broker_fd_limit": broker_limit,
        "broker_fds_peak": fds_peak,
        "refusing_log_lines": cluster.broker.log_path.read_text(errors="replace").count("refusing more"),
        "api_back_s": time.monotonic() - started,
    }


def attack_big_frames(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    frame = msgpack.packb(
        [protocol.VERSION, protocol.PING, {"req": 7, "pad": {str(i): 0 for i in range(args.big_frame_keys)}}],
        use_bin_type=True,
    )
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(cluster.endpoint)
    bursts: list[float] = []
    refused = 0
    try:
        window.start()
        while not bursts or time.monotonic() - window.started < args.attack_seconds:
            started = time.perf_counter()
            for _ in range(args.big_frames):
                sock.send(frame, copy=False)
            for answered in range(args.big_frames):
                if not sock.poll(30_000):
                    raise TimeoutError(f"only {answered} of {args.big_frames} big frames were answered in 30 s")
                kind, _ = protocol.decode(sock.recv())
                refused += kind == protocol.ERROR
            bursts.append((time.perf_counter() - started) * 1e3)
        window.stop()
    finally:
        sock.close()
    with cluster.client(timeout=30) as client:
        states = [w["state"] for w in client.workers()]
    return {
        "frame_mb": len(frame) / 2**20,
        "frames_per_burst": args.big_frames,
        "frames_sent": len(bursts) * args.big_frames,
        "frames_refused": refused,
        "burst_ms_median": benchlib.median(bursts),
        "burst_ms_max": max(bursts),
        "workers_idle_after": states.count("idle"),
        "worker_went_missing": " missing " in cluster.broker.log_path.read_text(errors="replace"),
    }


def attack_curve_flood(cluster: LocalCluster, args: Any, window: Window) -> dict[str, Any]:
    ctx = zmq.Context.instance()
    server_public = cluster.client_curve.server_public
    tried = refused = admitted = 0
    window.start()
    while tried < args.curve_flood and (tried == 0 or time.monotonic() - window.started < args.attack_seconds):
        batch: list[tuple[zmq.Socket, zmq.Socket]] = []
        try:
            for _ in range(min(args.curve_batch, args.curve_flood - tried)):
                sock = ctx.socket(zmq.DEALER)
                sock.linger = 0
                sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()  # a fresh key each time
                sock.curve_serverkey = server_public
                monitor = sock.get_monitor_socket(HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
                monitor.linger = 0
                batch.append((sock, monitor))
                sock.connect(cluster.endpoint)
            tried += len(batch)
            deadline = time.monotonic() + 10
            for _sock, monitor in batch:  # each handshake's outcome, as its own socket saw it
                while monitor.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    event = recv_monitor_message(monitor)["event"]
                    if event & HANDSHAKE_FAILED:
                        refused += 1
                        break
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        admitted += 1
                        break
        finally:
            for sock, monitor in batch:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
                monitor.close()
                sock.close()
    window.stop()
    seconds = time.monotonic() - window.started
    time.sleep(0.5)  # the last refusals logged
    log_text = cluster.broker.log_path.read_text(errors="replace")
    return {
        "handshakes": tried,
        "handshakes_refused": refused,
        "handshakes_admitted": admitted,
        "handshakes_per_s": tried / seconds,
        "refused_log_lines": log_text.count("refused CURVE peer"),
        "log_budget_per_min": defaults.SECURITY_LOG_BUDGET,
    }


ATTACKS: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any]]] = {
    # name: (attack, run_attack's keywords); the baselines first
    "idle": (attack_idle, {"workers": 1}),
    "churn": (attack_churn, {"workers": 1}),
    "slow_ws_reader": (attack_slow_ws_reader, {"workers": 1}),
    "repeat_bomb": (attack_repeat_bomb, {}),
    "slowloris": (attack_slowloris, {"workers": 1}),
    "big_frames": (attack_big_frames, {"workers": 1}),
    "idle_curve": (attack_idle, {"secure": True}),
    "curve_flood": (attack_curve_flood, {"secure": True}),
}
BASELINE = {"idle_curve": "idle_curve", "curve_flood": "idle_curve", "slow_ws_reader": "churn"}  # else "idle"


def attack_rows(name: str, figures: dict[str, Any], base_name: str, base: dict[str, Any]) -> list[tuple[str, Any]]:
    """Figures as table rows, each beside its baseline's (``idle``, ``churn`` or ``idle_curve``)."""

    def ms(f: dict[str, Any]) -> str:
        return f"{f['ping_p50_ms']:.2f} / {f['ping_p99_ms']:.2f}"

    def mb(f: dict[str, Any]) -> str:
        return f"{f['rss_before_mb']:.0f} / {f['rss_peak_mb']:.0f} / {f['rss_after_mb']:.0f}"

    beside = (lambda shown: f"{shown(figures)} ({base_name} {shown(base)})") if base is not figures else None
    rows = [
        (f"{name}: ping p50 / p99 ms", beside(ms) if beside else ms(figures)),
        (f"{name}: ping max ms, timeouts", f"{figures['ping_max_ms']:.1f}, {figures['ping_timeouts']}"),
        (f"{name}: RSS MB before / peak / after", beside(mb) if beside else mb(figures)),
    ]
    shown = {
        "churn": ("tasks_per_s",),
        "slow_ws_reader": ("tasks_per_s", "cut_off", "cut_off_after_s", "log_kb"),
        "repeat_bomb": (
            "repeat",
            "submit_s",
            "cancel_s",
            "kb_per_task",
            "released_after_s",
            "status_after_release_s",
            "rss_after_status_mb",
        ),
        "slowloris": ("connections", "broker_fd_limit", "broker_fds_peak", "refusing_log_lines", "api_back_s"),
        "big_frames": ("frame_mb", "frames_sent", "frames_refused", "burst_ms_median", "worker_went_missing"),
        "curve_flood": ("handshakes", "handshakes_refused", "handshakes_per_s", "refused_log_lines"),
    }.get(name, ())
    for key in (*shown, "log_tracebacks"):
        value = figures[key]
        rows.append((f"{name}: {key}", round(value, 2) if isinstance(value, float) else str(value)))
    return rows


def run_attacks(args: Any) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    results: dict[str, Any] = {}
    rows: list[tuple[str, Any]] = []
    for name, (attack, options) in ATTACKS.items():
        broker_args = ["--finished-job-ttl", str(args.bomb_ttl)] if name == "repeat_bomb" else None
        results[name] = run_attack(args, attack, broker_args=broker_args, **options)
        base_name = BASELINE.get(name, "idle")
        if name != base_name:
            results[name]["baseline"] = base_name
        rows += attack_rows(name, results[name], base_name, results[base_name])
    return results, rows


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--decodes", type=int, default=50_000, help="decodes per message kind per round")
    p.add_argument("--pings", type=int, default=2000)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=benchlib.DEFAULT_ROUNDS)
    p.add_argument("--no-overhead", dest="overhead", action="store_false", help="skip parts 1 and 2 (decode, CURVE)")
    p.add_argument("--no-attacks", dest="attacks", action="store_false", help="skip part 3 (the attacks)")
    a = p.add_argument_group("attacks")
    a.add_argument("--attack-seconds", type=float, default=5.0, help="each attack's (and idle window's) length")
    a.add_argument("--probe-interval", type=float, default=0.01, help="seconds between the probe's pings")
    a.add_argument("--settle", type=float, default=1.0, help="seconds before the RSS before and after are read")
    a.add_argument("--churn-tasks", type=int, default=1000, help="no-op tasks per churn job")
    a.add_argument("--bomb-repeat", type=int, default=100_000)
    a.add_argument("--bomb-ttl", type=float, default=0.5, help="the bomb broker's --finished-job-ttl")
    a.add_argument("--slowloris", type=int, default=1100, help="idle HTTP connections")
    a.add_argument(
        "--slowloris-broker-nofile", type=int, default=1024, help="the broker's open-file limit then (0: unchanged)"
    )
    a.add_argument("--big-frames", type=int, default=8, help="frames per burst")
    a.add_argument("--big-frame-keys", type=int, default=1_000_000)
    a.add_argument("--curve-flood", type=int, default=20_000, help="fresh-key handshakes at most")
    a.add_argument("--curve-batch", type=int, default=50, help="fresh-key handshakes at once")
    args = p.parse_args(argv)
    if min(args.decodes, args.pings, args.tasks, args.rounds) < 1:
        p.error("--decodes, --pings, --tasks and --rounds must be positive")
    sizes = (args.churn_tasks, args.bomb_repeat, args.slowloris, args.big_frames, args.curve_flood, args.curve_batch)
    if min(sizes) < 1 or min(args.attack_seconds, args.probe_interval) <= 0 or args.settle < 0 or args.bomb_ttl < 0:
        p.error("the attacks' sizes, --attack-seconds and --probe-interval must be positive")
    if not 0 < args.big_frame_keys <= 2_000_000:
        p.error("--big-frame-keys must be 1..2,000,000")
    if args.attack_seconds > 60:
        p.error("--attack-seconds is at most 60 (eight windows run)")
    rows: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {"machine": benchlib.machine()}
    if args.overhead:
        summary["decode"] = {}
        for name, frame in MESSAGES.items():
            assert protocol.decode(frame) == unchecked_decode(frame)
            base = per_message_us(unchecked_decode, frame, args.decodes, args.rounds)
            checked = per_message_us(protocol.decode, frame, args.decodes, args.rounds)
            summary["decode"][name] = {"baseline_us": base, "checked_us": checked}
            rows.append((f"decode {name}: baseline us", round(base, 2)))
            rows.append((f"decode {name}: with limits us", round(checked, 2)))
        for secure in (False, True):
            label = "curve" if secure else "plaintext"
            figures = cluster_figures(secure, args.pings, args.tasks)
            summary[label] = figures
            rows.append((f"{label}: ping round trip us (median)", round(figures["ping_us"], 1)))
            rows.append((f"{label}: sim tasks per second", round(figures["tasks_per_s"], 1)))
    if args.attacks:
        summary["attacks"], attack_rows_ = run_attacks(args)
        summary["attack_seconds"] = args.attack_seconds
        summary["probe_interval_s"] = args.probe_interval
        rows += attack_rows_
    benchlib.emit("Security overhead and attacks", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
