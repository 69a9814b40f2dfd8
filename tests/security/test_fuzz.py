"""Hostile input never harms the broker: 12,000 malformed messages from real sockets, then a
normal job must run correctly, memory must level off, and nothing stored may have changed.

The fuzzing peers hold an *authorized* CURVE key (an insider sending garbage is the worst case:
an outsider never gets past the handshake, and a few plaintext and wrong-key sockets check that
too). A seeded RNG makes every run send the same messages.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable, Iterator

import duckdb
import msgpack
import psutil
import pytest
import zmq

from dtf_bus import defaults, protocol
from dtf_bus.security import curve as security
from dtf_bus.testing.cluster import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

SEED = 20240806
ROUNDS = 2
PER_ROUND = 6000  # messages per round; 12,000 in all
SIM = {"name": "t", "plugin": "sim", "params": {"seconds": 0.0}}
# A second round may grow the broker's memory by at most this much: caches and DuckDB buffers
# settle during the first; anything that keeps growing with the messages shows here.
SECOND_ROUND_GROWTH = 24 * 1024 * 1024


DEEP = "@@deep@@"  # replaced by a nesting too deep to pack normally


def pack(*parts: object) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def junk(rng: random.Random) -> object:
    """A value of an arbitrary (usually wrong) type."""
    return rng.choice(
        [
            None,
            True,
            -1,
            2**63 - 1,
            -(2**63),
            float("nan"),
            float("inf"),
            1e308,
            "",
            "x" * rng.randint(1, 300),
            b"\x00\xff",
            [],
            [1, "a", None],
            {},
            {"k": [1, {"n": None}]},
            nested(rng.randint(1, 80)),
        ]
    )


class Fuzzer:
    """Makes one malformed (or hostile but well-formed) message per call, of many shapes."""

    def __init__(self, rng: random.Random, job_tasks: list[dict], real_worker: str) -> None:
        self.rng = rng
        self.tasks = job_tasks
        self.real_worker = real_worker
        self.shapes: list[Callable[[], bytes | list[bytes]]] = [
            self.random_bytes,
            self.truncated,
            self.wrong_types,
            self.huge_lengths,
            self.wrong_version,
            self.unknown_type,
            self.result_for_unknown_task,
            self.stale_result_for_real_task,
            self.start_for_real_task,
            self.impersonate_worker,
            self.register_flood,
            self.deep_nesting,
            self.bad_numbers,
            self.multi_frame,
            self.bogus_client_requests,
            self.bad_specs,
            self.ext_types,
        ]

    def __call__(self) -> bytes | list[bytes]:
        return self.rng.choice(self.shapes)()

    def valid(self) -> bytes:
        kind = self.rng.choice(sorted(protocol.SCHEMAS))
        body = {field: self._value_for(types) for field, (types, _) in protocol.SCHEMAS[kind].items()}
        return protocol.encode(kind, body)

    def _value_for(self, types: tuple[type, ...]) -> object:
        if str in types:
            return "v"
        if int in types:
            return 1
        if float in types:
            return 1.0
        if dict in types:
            return {}
        if list in types:
            return []
        return None

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 600))

    def truncated(self) -> bytes:
        frame = self.valid()
        return frame[: self.rng.randint(0, max(len(frame) - 1, 0))]

    def wrong_types(self) -> bytes:
        kind = self.rng.choice(sorted(protocol.SCHEMAS))
        body = {field: junk(self.rng) for field in protocol.SCHEMAS[kind]}
        if self.rng.random() < 0.3:
            body = junk(self.rng)
        return msgpack.packb([protocol.VERSION, kind, body], use_bin_type=True)

    def huge_lengths(self) -> bytes:
        head = self.rng.choice(
            [
                b"\xdd" + struct.pack(">I", 2**32 - 1),  # array32
                b"\xdf" + struct.pack(">I", 2**32 - 1),  # map32
                b"\xdb" + struct.pack(">I", 2**32 - 1),  # str32
                b"\xc6" + struct.pack(">I", 2**32 - 1),  # bin32
                b"\xc9" + struct.pack(">I", 2**32 - 1) + b"\x01",  # ext32
            ]
        )
        prefix = self.rng.choice([b"", b"\x93\x01\xa4ping", b"\x93\x01\xa8register"])
        return prefix + head + self.rng.randbytes(self.rng.randint(0, 32))

    def wrong_version(self) -> bytes:
        version = self.rng.choice([0, 2, -1, 2**40, "1", None, 1.0, [1]])
        return msgpack.packb([version, protocol.PING, {"req": 1}], use_bin_type=True)

    def unknown_type(self) -> bytes:
        return pack(protocol.VERSION, self.rng.choice(["evil", "", "REGISTER", "reply\x00", "x" * 500]), {"req": 1})

    def results(self, *results: dict) -> bytes:
        return protocol.encode(protocol.TASK_RESULT, {"results": list(results)})

    def result_for_unknown_task(self) -> bytes:
        return self.results(
            {
                "task_id": f"nope.{self.rng.randint(0, 10**9)}",
                "attempt": self.rng.randint(-5, 10**6),
                "outcome": self.rng.choice([*protocol.OUTCOMES, "exploded"]),
                "result": {"pwned": True},
                "ended_at": 1.7e9,
            },
        )

    def stale_result_for_real_task(self) -> bytes:
        forged = [
            {
                "task_id": task["task_id"],
                "attempt": self.rng.choice([0, 2, 3, 99, -1]),
                "outcome": self.rng.choice(["failed", "succeeded"]),
                "result": {"pwned": True},
                "error": "forged",
                "ended_at": 1.7e9,
            }
            for task in self.rng.sample(self.tasks, self.rng.randint(1, 3))
        ]
        return self.results(*forged)

    def start_for_real_task(self) -> bytes:
        task = self.rng.choice(self.tasks)
        return protocol.encode(
            protocol.TASK_STARTED, {"task_id": task["task_id"], "attempt": self.rng.choice([0, 2, 7]), "started_at": 1}
        )

    def impersonate_worker(self) -> bytes:
        return protocol.encode(
            protocol.REGISTER,
            {
                "worker_id": self.real_worker,
                "capabilities": {"hardware": ["cpu"]},
                "slots": 8,
                "plugins": ["sim"],
                "running": [[t["task_id"], 1] for t in self.tasks[:3]],
            },
        )

    def register_flood(self) -> list[bytes]:
        """A register/unregister cycle under a throwaway id (sent back to back on one socket)."""
        worker_id = f"fz-{self.rng.randint(0, 50)}"
        register = protocol.encode(
            protocol.REGISTER,
            {
                # Hostile capabilities: a hostname of the wrong type, odd hardware, no plugin we run.
                "worker_id": worker_id,
                "capabilities": {"hardware": ["zz-fuzz"], "hostname": {"x": [1]}, "memory_gb": "lots"},
                "slots": self.rng.randint(1, 4),
                "plugins": ["no-such-plugin"],
            },
        )
        return [register, protocol.encode(protocol.HEARTBEAT, {"metrics": {"cpu": "hot"}}), pack(1, "unregister", {})]

    def deep_nesting(self) -> bytes:
        """Nesting past what msgpack itself will pack: built by hand around a placeholder."""
        depth = self.rng.choice([65, 200, 1000, 1023, 1100, 5000])
        where = self.rng.choice(["metrics", "result", "tasks"])
        if where == "metrics":
            frame = protocol.encode(protocol.HEARTBEAT, {"metrics": {"m": DEEP}})
        elif where == "result":
            body = {"task_id": "x.0", "attempt": 1, "outcome": "succeeded", "result": {"r": DEEP}, "ended_at": 1}
            frame = self.results(body)
        else:
            frame = protocol.encode(protocol.SUBMIT, {"req": 7, "tasks": [{**SIM, "params": {"p": DEEP}}]})
        return frame.replace(msgpack.packb(DEEP), b"\x91" * depth + b"\x00")

    def bad_numbers(self) -> bytes:
        return self.rng.choice(
            [
                protocol.encode(protocol.TASK_STARTED, {"task_id": "x.0", "attempt": 1, "started_at": float("nan")}),
                self.results({"task_id": "x.0", "attempt": 1, "outcome": "failed", "ended_at": 1e300}),
                protocol.encode(
                    protocol.REGISTER,
                    {"worker_id": "fz-big", "capabilities": {}, "slots": 2**40, "plugins": []},
                ),
                protocol.encode(
                    protocol.REGISTER,
                    {"worker_id": "x" * 5000, "capabilities": {}, "slots": 1, "plugins": []},
                ),
                protocol.encode(protocol.REGISTER, {"worker_id": " ", "capabilities": {}, "slots": 0, "plugins": []}),
                protocol.encode(protocol.HEARTBEAT, {"interval": -1.0}),
            ]
        )

    def multi_frame(self) -> list[bytes]:
        return [self.valid()] * self.rng.randint(2, 4) + [b""]

    def bogus_client_requests(self) -> bytes:
        kind = self.rng.choice([protocol.STATUS, protocol.WAIT, protocol.RESULTS, protocol.CANCEL_JOB])
        job_id = self.rng.choice(["", "nope", "x" * 1000, "../../etc", "0" * 12])
        return protocol.encode(kind, {"req": self.rng.randint(0, 2**31), "job_id": job_id})

    def bad_specs(self) -> bytes:
        tasks = self.rng.choice(
            [
                [],
                "tasks",
                [1, 2, 3],
                [{"name": "t"}],
                [{**SIM, "repeat": defaults.MAX_TASKS_PER_JOB}] * 50,  # a 5-million-task expansion bomb
                [{**SIM, "priority": "high"}],
                [{**SIM, "depends_on": ["t"]}],
                [{**SIM, "timeout": -1}],
                [{**SIM, "requires": {"hardware": [1]}}],
            ]
        )
        return protocol.encode(protocol.SUBMIT, {"req": 9, "tasks": tasks})

    def ext_types(self) -> bytes:
        return msgpack.packb([1, "ping", {"req": msgpack.ExtType(self.rng.randint(0, 127), b"boom")}])


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def snapshot(cluster: LocalCluster, job_id: str) -> list[dict]:
    with cluster.client() as client:
        return [
            {k: t[k] for k in ("task_id", "name", "state", "worker_id", "attempts", "result", "error")}
            for t in client.results(job_id)
        ]


def peers(cluster: LocalCluster, count: int) -> Iterator[zmq.Socket]:
    ctx = zmq.Context.instance()
    for _ in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvhwm = 0  # we drain replies in bulk; never make the broker's sends fail on our account
        security.make_client(
            sock, security.client_curve(cluster.node_key("fuzzer", role="admin"), cluster.broker_public)
        )
        sock.connect(cluster.endpoint)
        yield sock


def fuzz_round(socks: list[zmq.Socket], fuzzer: Fuzzer, count: int) -> dict[str, int]:
    """Send ``count`` messages round-robin over ``socks``; returns the replies by type."""
    replies: dict[str, int] = {}
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)

    def drain(quiet_ms: int = 0) -> None:
        """Take every reply waiting; with ``quiet_ms``, until none came for that long."""
        for _ in range(100_000):
            ready = dict(poller.poll(quiet_ms))
            if not ready:
                return
            for sock in ready:
                for _ in range(1000):
                    try:
                        kind, _ = protocol.decode(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    replies[kind] = replies.get(kind, 0) + 1

    for i in range(count):
        message = fuzzer()
        sock = socks[i % len(socks)]
        if isinstance(message, bytes):
            sock.send(message)
        elif fuzzer.rng.random() < 0.5 and len(message) > 1 and message[-1] == b"":
            sock.send_multipart(message[:-1])  # really one multi-frame message
        else:
            for frame in message:
                sock.send(frame)
        if i % 200 == 199:
            drain()
    drain(quiet_ms=500)
    return replies


def test_broker_survives_12000_malformed_messages(make_cluster):
    cluster = make_cluster(secure=True, start=False, heartbeat_interval=0.5)
    cluster.node_key("fuzzer", role="admin")  # admitted from the start: fuzzing peers are authenticated insiders
    cluster.start_broker()
    cluster.start_worker("w1", slots=2)
    cluster.wait_for_workers(["w1"])
    with cluster.client() as client:
        before_job = client.submit([{**SIM, "params": {"seconds": 0.0, "tag": "before"}, "repeat": 20}])
        assert client.wait(before_job, timeout=30)["succeeded"] == 20
    before = snapshot(cluster, before_job)

    rng = random.Random(SEED)
    fuzzer = Fuzzer(rng, before, real_worker="w1")
    socks = list(peers(cluster, 8))
    outsiders = [zmq.Context.instance().socket(zmq.DEALER) for _ in range(2)]
    for sock in outsiders:  # no key at all: refused at the handshake, whatever they send
        sock.linger = 0
        sock.connect(cluster.endpoint)
    pid = cluster.broker.pid
    oversized = next(peers(cluster, 1))
    sizes = [rss(pid)]
    replies: dict[str, int] = {}
    try:
        for round_number in range(ROUNDS):
            if round_number == ROUNDS - 1:  # past ZMQ_MAXMSGSIZE: only costs its sender the connection
                oversized.send(b"\x00" * (defaults.MAX_MESSAGE_BYTES + 1))
            for kind, n in fuzz_round(socks, fuzzer, PER_ROUND).items():
                replies[kind] = replies.get(kind, 0) + n
            for sock in outsiders:  # with no completed handshake there is no pipe: never block on them
                with contextlib.suppress(zmq.Again):
                    sock.send(rng.randbytes(64), zmq.NOBLOCK)
            with cluster.client() as client:  # every message handled: the broker answers in order
                client.ping()
            sizes.append(rss(pid))
    finally:
        for sock in [*socks, *outsiders, oversized]:
            sock.close()

    assert cluster.broker.alive()
    print(f"broker RSS (MiB) before and after each round: {[round(s / 2**20, 1) for s in sizes]}; replies {replies}")
    # Violations are answered, not just dropped (some shapes get REREGISTER or nothing by design).
    assert replies.get(protocol.ERROR, 0) > ROUNDS * PER_ROUND // 2, replies
    growth = sizes[-1] - sizes[-2]
    assert growth < SECOND_ROUND_GROWTH, f"RSS grew {growth / 2**20:.1f} MiB in the second round: {sizes}"

    # The fuzzers' throwaway workers are gone (closed sockets), the real worker is untouched.
    with cluster.client() as client:
        wait_for(lambda: [w["worker_id"] for w in client.workers()] == ["w1"], 15, "the fuzz workers to go")
        w1 = client.workers()[0]
        assert w1["slots"] == 2 and w1["state"] in ("idle", "busy")
        after_job = client.submit([{**SIM, "params": {"seconds": 0.0, "tag": "after"}, "repeat": 20}])
        status = client.wait(after_job, timeout=30)
        assert status["succeeded"] == 20 and status["total"] == 20
        results = client.results(after_job)
    assert {r["worker_id"] for r in results} == {"w1"}
    assert all(r["attempts"] == 1 and r["result"]["outcome"] == "pass" for r in results)
    assert snapshot(cluster, before_job) == before  # nothing forged, nothing altered

    log_text = cluster.broker.log_path.read_text(errors="replace")
    assert "Traceback" not in log_text  # every violation was caught by validation, none by accident
    assert "refused REGISTER as worker 'w1'" in log_text
    assert "malformed message from peer" in log_text

    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    stored = con.execute(
        "select task_id, state, attempts, worker_id from tasks where job_id = ? order by task_id", [before_job]
    ).fetchall()
    assert stored == sorted((t["task_id"], t["state"], t["attempts"], t["worker_id"]) for t in before)
    attempts = con.execute(
        "select count(*), count(distinct task_id), bool_or(stale), bool_or(result::VARCHAR like '%pwned%') "
        "from attempts where task_id like ?",
        [f"{before_job}.%"],
    ).fetchone()
    assert attempts == (20, 20, False, False)
    assert con.execute("select worker_id from workers where worker_id = 'w1'").fetchone() == ("w1",)
