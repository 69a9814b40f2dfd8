"""Simulated workers: many lightweight DEALER sockets per process, speaking dtf's protocol.

A real worker is a process with threads; thousands of them do not fit on a small machine. The
broker cannot tell the difference, though: each simulated worker is one DEALER connection that
registers, heartbeats at the interval the broker tells it, and answers an ASSIGN at once with a
succeeded TASK_RESULT, as a ``sim`` task with ``seconds = 0`` would. What it says and when is
decided by the real worker's state machine (:mod:`dtf_bus.worker.state`, one per simulated
worker): only the sockets, the heartbeat clock and the instant "execution" are simulated here.

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

from dtf_bus import protocol
from dtf_bus.worker.events import Collect, Connected, Execute, HeartbeatDue, Received, Send, SendHeartbeat, TaskFinished
from dtf_bus.worker.state import WorkerState

METRICS = {"cpu_percent": 5.0, "memory_percent": 20.0}
RESULT = {"seconds": 0, "speed": 1.0, "outcome": "pass"}


class _Member:
    """One simulated worker: a DEALER and the real worker's state machine behind it."""

    __slots__ = ("counted", "index", "sock", "state")

    def __init__(self, index: int, sock: zmq.Socket, state: WorkerState) -> None:
        self.index = index
        self.sock = sock
        self.state = state
        self.counted = False  # its first REGISTERED counted in stats


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
    beat_frame = protocol.encode(protocol.HEARTBEAT, {"metrics": METRICS})

    def carry_out(m: _Member, instructions: list) -> None:
        """What the worker's loop and slot threads do, at once: a started task ends at once
        (a ``sim`` task of 0 s) unless the quota is spent, then it is held (the broker sees a
        busy worker, and the queue stays put)."""
        while instructions:
            finished = []
            for ins in instructions:
                if isinstance(ins, Send):
                    m.sock.send(protocol.encode(ins.kind, ins.body))
                elif isinstance(ins, SendHeartbeat):
                    m.sock.send(beat_frame)
                    stats["heartbeats"] += 1
                elif isinstance(ins, Execute) and (quota is None or stats["results"] < quota):
                    now = time.time()
                    run = ins.run
                    report = {"task_id": run.task_id, "attempt": run.attempt, "outcome": "succeeded"}
                    report.update(result=RESULT, error=None, started_at=now, ended_at=now)
                    finished.append(TaskFinished(run, report, time.monotonic(), now))
                    stats["results"] += 1
                    stats["last_result"] = now
            instructions = m.state.handle(*finished, Collect()) if finished else []

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
                        m = _Member(len(members), sock, WorkerState(worker_id, capabilities, ["sim"], slots=1))
                        members.append(m)
                        by_sock[sock] = m
                        poller.register(sock, zmq.POLLIN)
                        now = time.monotonic()
                        carry_out(m, m.state.handle(Connected(now)))
                        heapq.heappush(beats, (now + m.state.interval, m.index))
                elif command == "quota":
                    quota = None if arg is None else stats["results"] + arg
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
                held = sum(len(m.state.running) + len(m.state.pending) for m in members)
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
                    stats["assigned"] += len(body["tasks"])
                    if not stats["first_assign"]:
                        stats["first_assign"] = time.time()
                elif kind == protocol.RESULT_ACK:
                    stats["acks"] += len(body["acks"])
                carry_out(m, m.state.handle(Received(kind, body, time.monotonic(), time.time())))
                if m.state.registered and not m.counted:
                    m.counted = True
                    stats["registered"] += 1
        now = time.monotonic()
        while beats and beats[0][0] <= now:
            _, i = heapq.heappop(beats)
            m = members[i]
            carry_out(m, m.state.handle(HeartbeatDue(now)))
            heapq.heappush(beats, (now + m.state.interval, i))
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
