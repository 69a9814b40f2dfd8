"""Hostile input is bounded: numbers a column cannot hold, frames that would stall the loop,
names that would forge log lines. Each against a real broker and workers on ephemeral ports.

Found by trying (issue 14): `priority = 2**31` got a 201 and then poisoned the store (its row
never stored, another client's submit took 28 s); one 8.8 MB frame of a 1M-key map held the
loop 1.2 s and eight of them starved heartbeats; a job name or worker id went into the log raw.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from dtf_bus import protocol
from dtf_bus.client import ClientError
from dtf_bus.testing.cluster import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

ROOT = Path(__file__).resolve().parents[2]
SIM = {"name": "t", "plugin": "sim", "params": {"seconds": 0.0}}


def dtf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def timed_job(cluster, name: str) -> float:
    """Seconds from submit to the end of a one-task job: what another client waits."""
    started = time.monotonic()
    with cluster.client() as client:
        job = client.submit([SIM], name=name)
        assert client.wait(job, timeout=30)["succeeded"] == 1
    return time.monotonic() - started


def test_priority_2_31_is_a_spec_error_and_the_broker_keeps_serving(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec_file = tmp_path / "evil.toml"
    spec_file.write_text('[[tasks]]\nname = "evil"\nplugin = "sim"\npriority = 2147483648\n')
    run = dtf("submit", str(spec_file), "--broker", cluster.endpoint)
    assert run.returncode == 2, run
    assert len(run.stderr.strip().splitlines()) == 1 and "priority" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr

    # A client that skips the CLI's validation meets the broker's own.
    with cluster.client() as client:
        for field, value in (("priority", 2**31), ("retries", 2**31), ("priority", -(2**63))):
            with pytest.raises(ClientError, match=f"field '{field}' must be"):
                client.request(protocol.SUBMIT, {"tasks": [{**SIM, field: value}], "name": "evil"})
    assert timed_job(cluster, "other") < 2.0  # 28 s when the store retried its poisoned batch row by row
    log_text = cluster.broker.log_path.read_text(errors="replace")
    assert "retrying row by row" not in log_text and "dropped a row" not in log_text


def test_a_million_key_map_frame_is_refused_fast_and_heartbeats_flow(make_cluster):
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    frame = msgpack.packb(
        [protocol.VERSION, protocol.PING, {"req": 7, "pad": {str(i): 0 for i in range(1_000_000)}}], use_bin_type=True
    )
    assert len(frame) > 7_000_000
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(cluster.endpoint)
    try:
        started = time.monotonic()
        for _ in range(8):  # unchecked, eight of these held the loop ~6 s: both workers went missing
            sock.send(frame)
        replies = []
        while len(replies) < 8:
            assert sock.poll(10_000), f"only {len(replies)} of 8 refusals came back"
            replies.append(protocol.decode(sock.recv()))
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert all(kind == protocol.ERROR and "max_map_len" in body["error"] for kind, body in replies), replies[0]
    assert elapsed < 2.0, f"eight refusals took {elapsed:.2f}s"
    with cluster.client() as client:
        workers = {w["worker_id"]: w["state"] for w in client.workers()}
        assert workers == {"w1": "idle", "w2": "idle"}, workers
    assert timed_job(cluster, "after") < 2.0
    log_text = cluster.broker.log_path.read_text(errors="replace")
    assert " missing " not in log_text, "a worker went missing while the frames were refused"


def test_names_cannot_forge_log_lines(make_cluster):
    cluster = make_cluster(workers={"w\x1b[31m": {}})
    with cluster.client() as client:
        job = client.submit([SIM], name="x\nFAKE ERROR line")
        assert client.wait(job, timeout=30)["succeeded"] == 1

    def logged() -> str | None:
        text = cluster.broker.log_path.read_text(errors="replace")
        return text if "FAKE ERROR" in text and "w\\x1b[31m" in text else None

    text = wait_for(logged, 10, "the job and the worker in the broker log")
    lines = text.splitlines()
    assert "\x1b" not in text
    assert not any(line.startswith("FAKE ERROR") for line in lines)
    assert any(f"job {job} (x\\nFAKE ERROR line)" in line for line in lines), text
