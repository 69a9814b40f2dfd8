"""Simulated workers: many lightweight DEALER sockets per process, speaking dtf's protocol.

A real worker is a process with threads; thousands of them do not fit on a small machine. The
broker cannot tell the difference, though: each simulated worker is one DEALER connection that
registers, heartbeats at the interval the broker tells it (as :mod:`dtf_bus.worker.worker` does, so
the fleet's heartbeat rate is the broker's default), and answers an ASSIGN at once with
TASK_STARTED and a succeeded TASK_RESULT, as a ``sim`` task with ``seconds = 0`` would.

A :class:`Fleet` runs the sockets in a few spawned processes and steers them over pipes:
``register``, ``stats``, ``quota`` (answer at most N more tasks, then hold new ones),
``unregister`` and ``stop``. Processes are stopped by pid.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import zmq

from dtf_bus import defaults, protocol

METRICS = {"cpu_percent": 5.0, "memory_percent": 20.0}
RESULT = {"seconds": 0, "speed": 1.0, "outcome": "pass"}


class _Member:
    __slots__ = ("index", "interval", "registered", "sock", "worker_id")

    def __init__(self, index: int, sock: zmq.Socket, worker_id: str) -> None:
        self.index = index
        self.sock = sock
        self.worker_id = worker_id
        self.interval = defaults.HEARTBEAT_INTERVAL
        self.registered = False


def _fleet_process(endpoint: str, ids: list[str], capabilities: dict[str, Any], conn: Connection) -> None:
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, len(ids) + 16)
    members: list[_Member] = []
    by_sock: dict[zmq.Socket, _Member] = {}
    poller = zmq.Poller()
    poller.register(conn.fileno(), zmq.POLLIN)
    beats: list[tuple[float, int]] = []  # (due, member index)
    stats = {"registered": 0, "heartbeats": 0, "assigned": 0, "results": 0, "acks": 0, "first_assign": 0.0}
    stats["last_result"] = 0.0
    quota: int | None = None
    held = 0
    beat_frame = protocol.encode(protocol.HEARTBEAT, {"metrics": METRICS})

    def register(m: _Member) -> None:
        body = {"worker_id": m.worker_id, "capabilities": capabilities, "slots": 1, "plugins": ["sim"], "running": []}
        m.sock.send(protocol.encode(protocol.REGISTER, body))

    running = True
    while running:
        timeout = max(beats[0][0] - time.monotonic(), 0) * 1000 if beats else 1000
        for item, _ in poller.poll(timeout):
            if item == conn.fileno():
                command, arg = conn.recv()
                if command == "register":
                    for worker_id in ids:
                        sock = ctx.socket(zmq.DEALER)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.connect(endpoint)
                        m = _Member(len(members), sock, worker_id)
                        members.append(m)
                        by_sock[sock] = m
                        poller.register(sock, zmq.POLLIN)
                        register(m)
                elif command == "quota":
                    quota, held = (None if arg is None else stats["results"] + arg), 0
                    stats["first_assign"] = stats["last_result"] = 0.0
                elif command == "unregister":
                    for m in members:
                        m.sock.send(protocol.encode(protocol.UNREGISTER, {}))
                        poller.unregister(m.sock)
                        m.sock.close(linger=1000)
                    members.clear()
                    by_sock.clear()
                    beats.clear()
                    stats["registered"] = 0
                elif command == "stop":
                    running = False
                conn.send(dict(stats, held=held))
                continue
            m = by_sock[item]
            while True:
                try:
                    frame = m.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                _, kind, body = msgpack.unpackb(frame)
                if kind == protocol.ASSIGN:
                    now = time.time()
                    if not stats["first_assign"]:
                        stats["first_assign"] = now
                    results = []
                    for assigned in body["tasks"]:
                        stats["assigned"] += 1
                        if quota is not None and stats["results"] >= quota:
                            held += 1  # hold it: the broker sees a busy worker, and the queue stays put
                            continue
                        task = {"task_id": assigned["task_id"], "attempt": assigned["attempt"]}
                        m.sock.send(protocol.encode(protocol.TASK_STARTED, {**task, "started_at": now}))
                        results.append(
                            {**task, "outcome": "succeeded", "result": RESULT, "started_at": now, "ended_at": now}
                        )
                        stats["results"] += 1
                        stats["last_result"] = now
                    if results:
                        m.sock.send(protocol.encode(protocol.TASK_RESULT, {"results": results}))
                elif kind == protocol.RESULT_ACK:
                    stats["acks"] += len(body["acks"])
                elif kind == protocol.HEARTBEAT:
                    m.interval = float(body.get("interval", m.interval))
                elif kind == protocol.REGISTERED:
                    m.interval = float(body["heartbeat_interval"])
                    if not m.registered:
                        m.registered = True
                        stats["registered"] += 1
                        heapq.heappush(beats, (time.monotonic() + m.interval, m.index))
                elif kind == protocol.REREGISTER:
                    register(m)
        now = time.monotonic()
        while beats and beats[0][0] <= now:
            _, i = heapq.heappop(beats)
            m = members[i]
            m.sock.send(beat_frame)
            stats["heartbeats"] += 1
            heapq.heappush(beats, (now + m.interval, i))
    for m in members:
        m.sock.close(linger=0)
    ctx.term()


class Fleet:
    """``workers`` simulated workers spread over ``processes`` processes."""

    def __init__(
        self,
        endpoint: str,
        workers: int,
        processes: int = 4,
        capabilities: dict[str, Any] | None = None,
        prefix: str = "sim",
    ) -> None:
        caps = {"hardware": ["cpu"], "hostname": "bench", **(capabilities or {})}
        spawn = mp.get_context("spawn")
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        processes = max(1, min(processes, workers))
        for p in range(processes):
            ids = [f"{prefix}-{i}" for i in range(p, workers, processes)]
            parent, child = spawn.Pipe()
            proc = spawn.Process(target=_fleet_process, args=(endpoint, ids, caps, child), daemon=True)
            proc.start()
            self._procs.append(proc)
            self._conns.append(parent)

    def _all(self, command: str, arg: Any = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        for conn in self._conns:
            conn.send((command, arg))
        replies = []
        for conn in self._conns:
            if not conn.poll(timeout):
                raise TimeoutError(f"simulated fleet did not answer {command!r} within {timeout:g}s")
            replies.append(conn.recv())
        return replies

    def register(self) -> None:
        self._all("register")

    def quota(self, tasks_per_process: int | None) -> None:
        self._all("quota", tasks_per_process)

    def unregister(self) -> None:
        self._all("unregister")

    def stats(self) -> dict[str, float]:
        replies = self._all("stats")
        total: dict[str, float] = {}
        for r in replies:
            for k, v in r.items():
                total[k] = total.get(k, 0) + v
        firsts = [r["first_assign"] for r in replies if r["first_assign"]]
        total["first_assign"] = min(firsts) if firsts else 0.0
        total["last_result"] = max(r["last_result"] for r in replies)
        return total

    def stop(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):  # already gone
                conn.send(("stop", None))
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()  # by pid
                proc.join(5)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
