"""The baseline dtf is measured against: the ZeroMQ guide's load-balancing (LRU) broker in plain
pyzmq, with msgpack payloads, doing the same round trip as a dtf task.

client DEALER -> broker ROUTER (frontend) -> next idle worker DEALER via ROUTER (backend) ->
worker unpacks the task and packs a result -> broker -> client. Nothing is validated, stored,
published or retried: this is the practical ceiling for a Python broker on this machine, so
dtf's figure divided by this one says how much its features cost.

Everything binds 127.0.0.1 on ephemeral ports; processes are forked (measurably faster than
spawned ones here, so the baseline is the strongest we can make it) and stopped by pid. A
forked child never touches a ZeroMQ context inherited from its parent: it makes its own.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from multiprocessing.connection import Connection

import msgpack
import zmq

READY, TASK, DONE, STOP = b"READY", b"TASK", b"DONE", b"STOP"
WINDOW = 1000  # tasks the client keeps in flight, as the peers/zmq_limit.py reference does


def _worker(backend: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(backend)
    sock.send(READY)
    while True:
        frames = sock.recv_multipart()
        if frames[0] == STOP:
            break
        task = msgpack.unpackb(frames[1])
        result = {"task_id": task["task_id"], "outcome": "succeeded", "result": {"seconds": 0}}
        sock.send_multipart([DONE, msgpack.packb(result)])
    sock.close()
    ctx.term()


def _broker(conn: Connection) -> None:
    ctx = zmq.Context()
    frontend = ctx.socket(zmq.ROUTER)
    backend = ctx.socket(zmq.ROUTER)
    for s in (frontend, backend):
        s.setsockopt(zmq.LINGER, 0)
        s.bind("tcp://127.0.0.1:*")
    conn.send([s.getsockopt(zmq.LAST_ENDPOINT).decode() for s in (frontend, backend)])
    idle: deque[bytes] = deque()
    pending: deque[bytes] = deque()
    client = b""
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    running = True
    while running:
        for sock, _ in poller.poll():
            if sock is backend:
                frames = backend.recv_multipart()
                if frames[1] == DONE:
                    frontend.send_multipart([client, frames[2]])
                idle.append(frames[0])
            else:
                client, payload = frontend.recv_multipart()
                if payload == STOP:
                    running = False
                    break
                pending.append(payload)
        while idle and pending:
            backend.send_multipart([idle.popleft(), TASK, pending.popleft()])
    for worker in idle:
        backend.send_multipart([worker, STOP])
    frontend.close()
    backend.close()
    ctx.term()


def run(tasks: int, workers: int, timeout: float = 120.0) -> float:
    """Push ``tasks`` round trips through a fresh broker and ``workers`` workers; tasks/s."""
    fork = mp.get_context("fork")
    parent, child = fork.Pipe()
    broker = fork.Process(target=_broker, args=(child,), daemon=True)
    broker.start()
    procs = [broker]
    try:
        if not parent.poll(30):
            raise RuntimeError("lru broker did not start")
        frontend, backend = parent.recv()
        procs += [fork.Process(target=_worker, args=(backend,), daemon=True) for _ in range(workers)]
        for p in procs[1:]:
            p.start()
        ctx = zmq.Context()
        client = ctx.socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.connect(frontend)
        # Warm up: every worker connected and one round trip done before the clock starts.
        _drive(client, min(workers * 10, 100), timeout)
        start = time.perf_counter()
        _drive(client, tasks, timeout)
        elapsed = time.perf_counter() - start
        client.send(STOP)
        client.close()
        ctx.term()
        return tasks / elapsed
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()  # by pid, never by name
                p.join(5)


def _drive(client: zmq.Socket, tasks: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sent = received = 0
    while received < tasks:
        while sent < tasks and sent - received < WINDOW:
            client.send(msgpack.packb({"task_id": f"t{sent}", "plugin": "sim", "params": {"seconds": 0}}))
            sent += 1
        try:
            frame = client.recv(zmq.NOBLOCK)
        except zmq.Again:  # only poll (with the deadline) when nothing is waiting already
            if not client.poll(max(deadline - time.monotonic(), 0) * 1000):
                raise TimeoutError(f"lru broker: {received} of {tasks} results after {timeout:g}s") from None
            continue
        msgpack.unpackb(frame)
        received += 1
