"""deploy/systemd: the units pass `systemd-analyze verify`, and their ExecStart lines, run as written
(paths moved into a temp dir), give a CURVE broker and a worker; the unit's stop signal drains."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtf_bus import defaults
from dtf_bus.client import Client
from dtf_bus.security.curve import client_curve
from dtf_bus.testing.cluster import wait_for
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

UNITS = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent  # dtf's console scripts in the test venv stand in for /opt/dtf/bin


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: a key may repeat (Environment=), comments start with # or ;."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def relocate(text: str, root: Path, instance: str = "") -> str:
    """The unit's paths and specifiers, moved under ``root``."""
    for old, new in (
        ("/opt/dtf/bin", str(BIN)),
        ("/etc/dtf", str(root / "etc")),
        ("/var/lib/dtf", str(root / "var")),
        ("%t", str(root / "run")),
        ("%H", socket.gethostname()),
        ("%i", instance),
    ):
        text = text.replace(old, new)
    return text


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    for unit, name in (("dtf-broker.service", "dtf-broker.service"), ("dtf-worker@.service", "dtf-worker@cpu.service")):
        copy = tmp_path / name
        copy.write_text((UNITS / unit).read_text().replace("/opt/dtf/bin", str(BIN)))
        done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and not done.stderr.strip(), f"{unit}:\n{done.stdout}{done.stderr}"


def test_worker_unit_stops_by_draining_and_its_timeout_covers_the_drain():
    service = parse_unit(UNITS / "dtf-worker@.service")["Service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"], "SIGTERM must reach the worker alone, not its tasks' processes"
    overhead = defaults.HEARTBEAT_INTERVAL * defaults.HEARTBEAT_LIVENESS + defaults.KILL_GRACE
    assert int(service["TimeoutStopSec"][0]) >= 3600 + overhead


def spawn(argv: list[str], env: dict[str, str], log: Path, procs: list[subprocess.Popen]) -> subprocess.Popen:
    with log.open("ab") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(proc)
    return proc


def dtf(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dtf"), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_units_exec_lines_run_a_curve_fleet_and_stopping_a_worker_drains_it(tmp_path):
    etc, keys = tmp_path / "etc", tmp_path / "etc" / "keys"
    (tmp_path / "var" / "worker-cpu").mkdir(parents=True)  # StateDirectory=
    (tmp_path / "run" / "dtf-worker-cpu").mkdir(parents=True)  # RuntimeDirectory=
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    # The keys, made with the commands docs/deploy.md gives.
    for args in (
        ("keys", "generate", str(keys), "--name", "broker"),
        ("keys", "generate", str(keys), "--name", "worker-cpu"),
        ("keys", "authorize", str(keys / "worker-cpu.key"), str(keys / "authorized"), "--role", "worker"),
    ):
        assert dtf(*args, env=env).returncode == 0, args
    (etc / "broker.toml").write_text(
        '[broker]\nbind = "tcp://127.0.0.1:0"\nmetrics_bind = "tcp://127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
        "heartbeat_interval = 0.2\nheartbeat_liveness = 5\n"
    )
    broker_unit = parse_unit(UNITS / "dtf-broker.service")["Service"]
    worker_unit = parse_unit(UNITS / "dtf-worker@.service")["Service"]
    procs: list[subprocess.Popen] = []
    try:
        ready = tmp_path / "ready.json"
        argv = [*shlex.split(relocate(broker_unit["ExecStart"][0], tmp_path)), "--ready-file", str(ready)]
        broker = spawn(argv, env, tmp_path / "broker.log", procs)
        wait_for(lambda: ready.exists() or broker.poll() is not None, 20, "the broker to listen")
        assert broker.poll() is None, (tmp_path / "broker.log").read_text()
        endpoint = json.loads(ready.read_text())["endpoint"]
        # The unit's Environment= lets `dtf ping` on the broker's host use the broker's own key.
        ping_env = dict(env, DTF_BROKER=endpoint)
        for assignment in broker_unit["Environment"]:
            name, _, value = relocate(assignment, tmp_path).partition("=")
            ping_env[name] = value
        assert dtf("ping", env=ping_env).returncode == 0

        (etc / "worker-cpu.toml").write_text(
            f'[worker]\nbroker = "{endpoint}"\nslots = 1\nheartbeat_interval = 0.2\nheartbeat_liveness = 5\n'
            f'curve_secret = "{keys / "worker-cpu.key_secret"}"\nbroker_key = "{keys / "broker.key"}"\n'
        )
        argv = shlex.split(relocate(worker_unit["ExecStart"][0], tmp_path, "cpu"))
        worker = spawn(argv, env, tmp_path / "worker.log", procs)
        worker_id = f"{socket.gethostname()}-cpu"
        curve = client_curve(keys / "broker.key_secret", keys / "broker.key")
        with Client(endpoint, curve=curve) as client:
            wait_for(lambda: worker_id in {w["worker_id"] for w in client.workers()}, 20, "the worker to register")
            alive = tmp_path / "run" / "dtf-worker-cpu" / "alive"
            assert dtf("ping", "--alive-file", str(alive), env=env).returncode == 0
            job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 1.5}}])
            wait_for(lambda: client.results(job)[0]["state"] == "running", 20, "the task to run")
            worker.send_signal(getattr(signal, worker_unit["KillSignal"][0]))  # systemctl stop, KillMode=mixed
            assert worker.wait(20) == 0, (tmp_path / "worker.log").read_text()
            [task] = client.results(job)
            assert task["state"] == "succeeded" and task["attempts"] == 1  # finished, not requeued
        broker.send_signal(getattr(signal, broker_unit["KillSignal"][0]))
        started = time.monotonic()
        assert broker.wait(int(broker_unit["TimeoutStopSec"][0])) == 0
        assert time.monotonic() - started < 10
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
