"""CURVE on a real cluster: who gets in, who is cut off, and that the wire carries no plaintext."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.client import Client
from dtf_bus.security import curve as security
from dtf_bus.security import keyfiles
from dtf_bus.testing.cluster import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

SIM = {"name": "t", "plugin": "sim", "params": {"seconds": 0.02}}


def worker_ids(cluster: LocalCluster) -> set[str]:
    with cluster.client() as client:
        return {w["worker_id"] for w in client.workers()}


def broker_log(cluster: LocalCluster) -> str:
    return cluster.broker.log_path.read_text(errors="replace")


def curve_dealer(cluster: LocalCluster, name: str, authorized: bool = True, role: str = "client") -> zmq.Socket:
    """A raw DEALER holding its own key (admitted or not), for speaking the protocol by hand.

    A message sent on a connection whose handshake fails is lost with it, so a key must be
    admitted before the broker sees the first handshake (create it before starting the broker)."""
    curve = security.client_curve(cluster.node_key(name, authorized, role), cluster.broker_public)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    security.make_client(sock, curve)
    sock.connect(cluster.endpoint)
    return sock


def request(sock: zmq.Socket, kind: str, body: dict, timeout: float = 5.0) -> tuple[str, dict] | None:
    """Send one message and return the first answer that is not a heartbeat (None after ``timeout``).

    A registered peer gets the broker's heartbeats, and one can come before a REGISTERED, which waits
    for its binding to be committed.
    """
    sock.send(protocol.encode(kind, body))
    deadline = time.monotonic() + timeout
    while sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
        answer = protocol.decode(sock.recv())
        if answer[0] != protocol.HEARTBEAT:
            return answer
    return None


def test_authorised_worker_runs_tasks_and_unauthorised_one_is_refused(make_cluster):
    cluster = make_cluster(secure=True)
    cluster.start_worker("good")
    cluster.start_worker("rogue", authorized=False)
    cluster.wait_for_workers(["good"])
    with cluster.client() as client:
        job = client.submit([{**SIM, "repeat": 6}])
        assert client.wait(job, timeout=30)["succeeded"] == 6
        assert {r["worker_id"] for r in client.results(job)} == {"good"}
    rogue_key = keyfiles.load_public(cluster.keys_dir / "worker-rogue.key").decode()
    wait_for(lambda: f"with key {rogue_key}: Unknown key" in broker_log(cluster), 10, "the refusal to be logged")
    assert "refused CURVE peer at 127.0.0.1" in broker_log(cluster)
    assert cluster.workers["rogue"].alive()  # it keeps trying, and keeps failing
    assert worker_ids(cluster) == {"good"}


def test_revoking_a_key_cuts_off_a_connected_worker(make_cluster):
    cluster = make_cluster(secure=True)
    for worker_id in ("keep", "drop"):
        cluster.start_worker(worker_id)
    cluster.wait_for_workers(["keep", "drop"])
    cluster.revoke("worker-drop")
    wait_for(lambda: worker_ids(cluster) == {"keep"}, 10, "the revoked worker to be removed")
    assert "worker drop dead (its CURVE key was revoked)" in broker_log(cluster)
    with cluster.client() as client:
        job = client.submit([{**SIM, "repeat": 4}])
        assert client.wait(job, timeout=30)["succeeded"] == 4
        assert {r["worker_id"] for r in client.results(job)} == {"keep"}
    # Re-admitting the key (and SIGHUP, the other way to ask for a reload) lets it back in.
    keyfiles.authorize(cluster.keys_dir / "worker-drop.key", cluster.authorized_dir, "worker")
    cluster.broker.signal(signal.SIGHUP)
    cluster.wait_for_workers(["keep", "drop"], timeout=20)


def test_a_worker_id_belongs_to_the_key_that_registered_it(make_cluster):
    cluster = make_cluster(secure=True, start=False)
    cluster.node_key("intruder", role="worker")  # admitted before the broker starts: its first handshake succeeds
    cluster.start_broker()
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    intruder = curve_dealer(cluster, "intruder", role="worker")
    try:
        body = {"worker_id": "w1", "capabilities": {"hardware": ["cpu"]}, "slots": 4, "plugins": ["sim"]}
        kind, reply = request(intruder, protocol.REGISTER, body)
        assert kind == protocol.ERROR and "belongs to another key" in reply["error"]
        # Its own id is fine, but a connection is one worker: it cannot switch to w1 afterwards.
        kind, _ = request(intruder, protocol.REGISTER, {**body, "worker_id": "intruder-1"})
        assert kind == protocol.REGISTERED
        kind, reply = request(intruder, protocol.REGISTER, body)
        assert kind == protocol.ERROR and "one id per connection" in reply["error"]
    finally:
        intruder.close()
    wait_for(lambda: worker_ids(cluster) == {"w1"}, 10, "the intruder's connection to close")
    with cluster.client() as client:
        assert client.workers()[0]["slots"] == 1  # the real w1, untouched
        job = client.submit([{**SIM, "repeat": 2}])
        assert client.wait(job, timeout=30)["succeeded"] == 2
        assert {r["worker_id"] for r in client.results(job)} == {"w1"}
    assert "refused REGISTER as worker 'w1'" in broker_log(cluster)


def test_peers_without_a_valid_key_get_nothing(make_cluster):
    cluster = make_cluster(secure=True)
    plain = zmq.Context.instance().socket(zmq.DEALER)
    plain.linger = 0
    plain.connect(cluster.endpoint)
    wrong_server = security.ClientCurve(cluster.client_curve.keypair, keyfiles.Keypair(*zmq.curve_keypair()).public)
    impostor = zmq.Context.instance().socket(zmq.DEALER)
    impostor.linger = 0
    security.make_client(impostor, wrong_server)  # right client key, but it does not know the broker's key
    impostor.connect(cluster.endpoint)
    try:
        for sock in (plain, impostor):
            assert request(sock, protocol.PING, {"req": 1}, timeout=1.0) is None
        wait_for(lambda: "at the handshake" in broker_log(cluster), 10, "the failed handshake to be logged")
        with cluster.client() as client:  # the broker itself is fine
            assert client.ping()["workers"] == 0
    finally:
        plain.close()
        impostor.close()


class TcpTap:
    """A TCP proxy that records every byte it forwards, both ways (a wiretap without tcpdump)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.captured = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                if sock is self.listener:
                    inside, _ = self.listener.accept()
                    outside = socket.create_connection(self.target)
                    peers[inside], peers[outside] = outside, inside
                    sel.register(inside, selectors.EVENT_READ)
                    sel.register(outside, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                other = peers.get(sock)
                if not data or other is None:
                    for s in (sock, other):
                        if s is not None and s in peers:
                            sel.unregister(s)
                            peers.pop(s)
                            s.close()
                    continue
                self.captured += data
                other.sendall(data)
        for s in [*peers, self.listener]:
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@contextlib.contextmanager
def tapped_worker(cluster: LocalCluster, worker_id: str) -> Iterator[TcpTap]:
    tap = TcpTap(cluster.endpoint)
    endpoint = cluster.endpoint
    cluster.endpoint = tap.endpoint  # the worker dials the tap, which dials the broker
    try:
        cluster.start_worker(worker_id)
    finally:
        cluster.endpoint = endpoint
    try:
        yield tap
    finally:
        cluster.workers[worker_id].stop()
        tap.close()


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plaintext-control"])
def test_task_params_never_cross_the_wire_in_plaintext(make_cluster, secure):
    cluster = make_cluster(secure=secure)
    marker = f"MARKER-{uuid.uuid4().hex}"
    with tapped_worker(cluster, "tapped") as tap:
        cluster.wait_for_workers(["tapped"])
        with cluster.client() as client:
            job = client.submit([{**SIM, "params": {"seconds": 0.01, "secret": marker}}])
            assert client.wait(job, timeout=30)["succeeded"] == 1
            assert client.results(job)[0]["worker_id"] == "tapped"
        captured = bytes(tap.captured)
    assert len(captured) > 200  # the handshake, the registration, the assignment and its result went through
    assert (marker.encode() in captured) is not secure  # the control proves the tap would have seen it


def test_cli_and_env_keys(make_cluster, tmp_path):
    cluster = make_cluster(secure=True, workers={"w1": {}})
    secret = cluster.node_key("cli")
    base = [sys.executable, "-m", "dtf_bus.cli", "workers", "--json", "--broker", cluster.endpoint]
    env = {k: v for k, v in os.environ.items() if k not in ("DTF_CURVE_SECRET", "DTF_BROKER_KEY")}

    def dtf(extra: list[str], wait: float = 10.0, **env_extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, "--timeout-connect", str(wait), *extra],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, **env_extra},
        )

    by_flags = dtf(["--curve-secret", str(secret), "--broker-key", str(cluster.broker_public)])
    assert by_flags.returncode == 0 and '"w1"' in by_flags.stdout
    by_env = dtf([], DTF_CURVE_SECRET=str(secret), DTF_BROKER_KEY=str(cluster.broker_public))
    assert by_env.returncode == 0 and '"w1"' in by_env.stdout
    assert dtf([], wait=1.0).returncode == 3  # no key: the handshake fails, the broker looks unreachable
    half = dtf(["--curve-secret", str(secret)])
    assert half.returncode == 2 and "--curve-secret needs --broker-key" in half.stderr
    public_only = dtf(["--curve-secret", str(cluster.broker_public), "--broker-key", str(cluster.broker_public)])
    assert public_only.returncode == 2 and "holds no secret key" in public_only.stderr


def test_revoked_subscriber_gets_no_more_events(make_cluster):
    cluster = make_cluster(secure=True, start=False, workers={"w1": {}})
    watcher_secret = cluster.node_key("watcher")
    cluster.start_broker()

    def subscriber(secret) -> zmq.Socket:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger = 0
        security.make_client(sub, security.client_curve(secret, cluster.broker_public))
        sub.subscribe(b"events.")
        sub.connect(cluster.metrics_endpoint)
        return sub

    def hears_a_job(sub: zmq.Socket) -> bool:
        with cluster.client() as client:
            client.submit([SIM])
        return bool(sub.poll(2000))

    watcher, friend = subscriber(watcher_secret), subscriber(cluster.node_key("friend"))
    try:
        wait_for(lambda: hears_a_job(watcher), 20, "the watcher to receive events")
        cluster.revoke("watcher")
        wait_for(lambda: "1 revoked" in broker_log(cluster), 10, "the broker to notice the revocation")
        while watcher.poll(0):  # events published before the cut
            watcher.recv_multipart()
        wait_for(lambda: hears_a_job(friend), 20, "an admitted subscriber to reconnect and receive events")
        assert not watcher.poll(500)
    finally:
        watcher.close()
        friend.close()


def test_keys_from_config_files(make_cluster, tmp_path):
    keys = tmp_path / "keys"
    broker_public, broker_secret = keyfiles.generate(keys, "broker")
    for name, role in (("w1", "worker"), ("me", "client")):
        keyfiles.authorize(keyfiles.generate(keys, name)[0], keys / "authorized", role)
    broker_cfg, worker_cfg = tmp_path / "broker.toml", tmp_path / "worker.toml"
    broker_cfg.write_text(f'[broker]\ncurve_secret = "{broker_secret}"\nauthorized_keys = "{keys / "authorized"}"\n')
    worker_cfg.write_text(f'[worker]\ncurve_secret = "{keys / "w1.key_secret"}"\nbroker_key = "{broker_public}"\n')
    cluster = make_cluster(start=False)
    cluster.start_broker(extra_args=["--config", str(broker_cfg)])
    cluster.start_worker("w1", config=worker_cfg)
    curve = security.client_curve(keys / "me.key_secret", broker_public)
    with Client(cluster.endpoint, curve=curve) as client:
        wait_for(lambda: [w["worker_id"] for w in client.workers()] == ["w1"], 20, "w1 to register over CURVE")
    assert "CURVE on: 2 authorized key(s)" in broker_log(cluster)
