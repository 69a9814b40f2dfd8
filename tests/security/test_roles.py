"""Red-team tests of roles on the bus, durable worker-id bindings, and the broker's bounds.

Each reproduces a finding of the security review against real broker and worker processes:
a worker's key submitting a shell task, a client's key registering as a worker, one client
cancelling another's job, an id squatter after a restart, a job that pins memory after it is
over, one submitter filling the broker, and a plaintext bus on a public address.
"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.client import Client, ClientError
from dtf_bus.security import curve as security
from dtf_bus.testing.cluster import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

NOWHERE = {"hardware": "no-such-hardware"}  # queued, never placed: the job stays live


def keyed_client(cluster: LocalCluster, name: str) -> Client:
    """A client holding the key ``name`` (made with ``cluster.node_key`` before the broker started)."""
    return Client(cluster.endpoint, curve=security.client_curve(cluster.node_key(name), cluster.broker_public))


def dtf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtf_bus.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_a_worker_key_cannot_submit_a_shell_task(make_cluster, tmp_path):
    cluster = make_cluster(secure=True, workers={"w1": {}})
    marker = tmp_path / "pwned"
    spec_file = tmp_path / "evil.toml"
    spec_file.write_text(f'[[tasks]]\nname = "evil"\nplugin = "shell"\nparams = {{ cmd = "touch {marker}" }}\n')
    worker_secret = cluster.keys_dir / "worker-w1.key_secret"
    curve = ["--curve-secret", str(worker_secret), "--broker-key", str(cluster.broker_public)]
    refused = dtf("submit", str(spec_file), "--broker", cluster.endpoint, *curve)
    assert refused.returncode == 2, refused.stderr
    assert "submit: not allowed for key 'worker-w1' (role worker" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # The fleet works for a client, and the refused task never ran anywhere.
    with cluster.client() as client:
        job = client.submit([{"name": "ok", "plugin": "sim", "params": {"seconds": 0.01}}])
        assert client.wait(job, timeout=30)["succeeded"] == 1
    assert not marker.exists()


def test_a_client_key_cannot_register_as_a_worker(make_cluster):
    cluster = make_cluster(secure=True, start=False)
    secret = cluster.node_key("posing", role="client")  # admitted before the broker's first look
    cluster.start_broker()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    security.make_client(sock, security.client_curve(secret, cluster.broker_public))
    sock.connect(cluster.endpoint)
    try:
        body = {"worker_id": "fake", "capabilities": {"hardware": ["cpu"]}, "slots": 65536, "plugins": ["shell"]}
        sock.send(protocol.encode(protocol.REGISTER, body))
        assert sock.poll(10_000), "the broker did not answer the REGISTER"
        kind, reply = protocol.decode(sock.recv())
    finally:
        sock.close()
    assert kind == protocol.ERROR
    assert reply["error"].startswith("register: not allowed for key 'posing' (role client")
    with cluster.client() as client:
        assert client.workers() == []


def test_cancel_needs_the_submitter_or_an_admin_and_drain_needs_an_admin(make_cluster):
    cluster = make_cluster(secure=True, start=False)
    cluster.node_key("alice"), cluster.node_key("bob")
    cluster.start_broker()
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    alice, bob = keyed_client(cluster, "alice"), keyed_client(cluster, "bob")
    with alice, bob, cluster.client() as admin:
        job_a = alice.submit([{"name": "a", "plugin": "sim", "requires": NOWHERE}])
        job_b = bob.submit([{"name": "b", "plugin": "sim", "requires": NOWHERE}])
        assert alice.status(job_a)["submitter"] == "alice"
        with pytest.raises(ClientError, match=r"cancel job \w+: it was submitted by 'alice'; only that key or an"):
            bob.cancel(job_a)
        with pytest.raises(ClientError, match=r"drain_worker: not allowed for key 'bob' \(role client"):
            bob.drain("w1")
        assert alice.cancel(job_a)["cancelled"] == 1
        assert admin.cancel(job_b)["cancelled"] == 1  # an admin may cancel anyone's
        assert admin.status(job_b)["counts"] == {"cancelled": 1}
    listing = dtf(
        "status",
        job_a,
        "--broker",
        cluster.endpoint,
        "--curve-secret",
        str(cluster.keys_dir / "client.key_secret"),
        "--broker-key",
        str(cluster.broker_public),
    )
    assert listing.returncode == 0 and "by alice" in listing.stdout


def test_worker_ids_stay_bound_across_a_restart_until_the_worker_is_dead(make_cluster):
    # Dead after 10 s (50 x 0.2 s), not the fixture's 2 s: the first REGISTER after the restart
    # must come within the grace even on a loaded machine.
    cluster = make_cluster(secure=True, start=False, dead_liveness=50)
    squatter = cluster.node_key("squatter", role="worker")
    cluster.start_broker()
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    # The broker answers REGISTERED only once the binding is in DuckDB: wait for the worker to hear it
    # (the registry lists w1 before that, and a broker killed in between rightly forgets the binding).
    wait_for(lambda: "registered with" in cluster.workers["w1"].log_tail(200), 10, "w1 to hear REGISTERED")
    cluster.kill_broker()  # the broker goes down ...
    cluster.kill_worker("w1")  # ... and the worker dies while it is down
    cluster.start_broker()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    security.make_client(sock, security.client_curve(squatter, cluster.broker_public))
    sock.connect(cluster.endpoint)
    body = {"worker_id": "w1", "capabilities": {"hardware": ["cpu"]}, "slots": 1, "plugins": ["sim"]}

    def register() -> tuple[str, dict]:
        sock.send(protocol.encode(protocol.REGISTER, body))
        assert sock.poll(10_000), "the broker did not answer the REGISTER"
        return protocol.decode(sock.recv())

    try:
        kind, reply = register()
        assert kind == protocol.ERROR and "belongs to another key" in reply["error"]  # bound in DuckDB
        # w1 never comes back: once a silent worker would be dead, its id is free again.
        wait_for(lambda: register()[0] == protocol.REGISTERED, 30, "the dead worker's id to be released", interval=0.2)
    finally:
        sock.close()


def test_one_submitter_cannot_fill_the_broker(make_cluster):
    cluster = make_cluster(start=False)
    cluster.start_broker(extra_args=["--submitter-quota", "5", "--max-live-tasks", "8"])
    with cluster.client() as client:
        client.submit([{"name": "t", "plugin": "sim", "requires": NOWHERE, "repeat": 4}])
        with pytest.raises(ClientError, match=r"anonymous has 4 unfinished tasks and may hold at most 5"):
            client.submit([{"name": "t", "plugin": "sim", "requires": NOWHERE, "repeat": 2}])
        client.submit([{"name": "t", "plugin": "sim", "requires": NOWHERE}])
    with Client(cluster.endpoint) as other:  # without CURVE a client's claimed name is its identity
        other.submit([{"name": "t", "plugin": "sim", "requires": NOWHERE, "repeat": 3}], submitter="other")
        with pytest.raises(ClientError, match=r"holds 8 unfinished tasks and takes at most 8"):
            other.submit([{"name": "t", "plugin": "sim", "requires": NOWHERE}], submitter="third")


def test_a_repeat_bomb_releases_its_memory_after_the_job(make_cluster):
    """70 bytes of spec with repeat = 100,000 used to pin ~230 MB for the broker's life. Now the
    job leaves memory once over: most of its pages go back to the OS (the allocators keep some
    for reuse), and a second bomb reuses them instead of growing the broker again."""
    cluster = make_cluster(start=False)
    cluster.start_broker(extra_args=["--finished-job-ttl", "0.5"])
    broker = psutil.Process(cluster.broker.pid)
    bomb = [{"name": "b", "plugin": "sim", "requires": NOWHERE, "repeat": 100_000}]
    with cluster.client(timeout=60) as client:
        client.ping()
        before = broker.memory_info().rss
        retained = []
        for _ in range(2):
            job = client.submit(bomb)
            growth = broker.memory_info().rss - before
            assert growth > 50e6, f"the bomb did not grow the broker ({growth / 1e6:.0f} MB)"
            assert client.cancel(job)["cancelled"] == 100_000

            def released(growth: float = growth) -> bool:
                return broker.memory_info().rss - before < 0.5 * growth

            wait_for(released, 30, "the cancelled job's memory to be released", interval=0.2)
            assert client.status(job)["counts"] == {"cancelled": 100_000}  # still answered, from DuckDB
            retained.append(broker.memory_info().rss - before)
        assert retained[1] < retained[0] + 0.2 * growth, f"retained after each bomb: {retained}"


def test_a_plaintext_bus_on_a_public_address_is_refused(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dtf_bus.broker",
            "--bind",
            "tcp://0.0.0.0:0",
            "--metrics-bind",
            "tcp://127.0.0.1:0",
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "refusing to listen on tcp://0.0.0.0:0 without CURVE" in run.stderr
    assert "--insecure" in run.stderr and not (tmp_path / "x.duckdb").exists()
