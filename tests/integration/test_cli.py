"""The `dtf` commands as scripts use them: output shapes and exit codes (0/1/2/3)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.api, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def dtf(*args: str, broker: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed `dtf` console script (falling back to bin/dtf from a checkout)."""
    exe = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")
    argv = [exe, *args] + (["--broker", broker] if broker else [])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


SUITE = """
name = "cli-suite"
[[tasks]]
name = "ok"
plugin = "sim"
params = { seconds = 0.01 }
repeat = 3
"""


def test_submit_wait_json_and_results(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {"slots": 2}})
    spec = write(tmp_path / "suite.toml", SUITE)
    run = dtf("submit", str(spec), "--wait", "--json", broker=cluster.endpoint)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["total"] == 3 and summary["succeeded"] == 3 and summary["failed"] == 0
    job = summary["job_id"]

    results = json.loads(dtf("results", job, "--format", "json", broker=cluster.endpoint).stdout)
    assert len(results) == 3
    for r in results:
        assert {"task_id", "name", "state", "worker_id", "attempts", "started_at", "ended_at", "result"} <= set(r)
        assert r["state"] == "succeeded" and r["worker_id"] == "w1" and r["attempts"] == 1

    rows = list(csv.DictReader(io.StringIO(dtf("results", job, "--format", "csv", broker=cluster.endpoint).stdout)))
    assert [r["name"] for r in rows] == ["ok[0]", "ok[1]", "ok[2]"]

    status = dtf("status", job, "--json", broker=cluster.endpoint)
    assert json.loads(status.stdout)["counts"] == {"succeeded": 3}

    workers = json.loads(dtf("workers", "--json", broker=cluster.endpoint).stdout)
    assert [w["worker_id"] for w in workers] == ["w1"]
    assert "memory_gb" in workers[0]["capabilities"] and workers[0]["slots"] == 2
    table = dtf("workers", broker=cluster.endpoint).stdout
    assert table.splitlines()[0].split()[:3] == ["WORKER", "STATE", "SLOTS"] and "w1" in table


def test_failed_task_exits_1(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec = write(
        tmp_path / "f.json",
        json.dumps(
            {
                "tasks": [
                    {"name": "good", "plugin": "sim"},
                    {"name": "bad", "plugin": "sim", "params": {"outcome": "fail"}},
                ]
            }
        ),
    )
    run = dtf("submit", str(spec), "--wait", "--json", broker=cluster.endpoint)
    assert run.returncode == 1
    assert json.loads(run.stdout)["failed"] == 1


def test_bad_spec_exits_2_before_queueing(make_cluster, tmp_path):
    cluster = make_cluster()
    spec = write(tmp_path / "bad.toml", '[[tasks]]\nname = "t1"\nplugin = "sim"\ntimeout = "soon"\n')
    run = dtf("submit", str(spec), broker=cluster.endpoint)
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        == "dtf submit: invalid spec: task 't1': field 'timeout' must be a positive number of seconds, at most 2592000"
    )
    assert run.stdout == ""


def test_unknown_job_exits_2(make_cluster):
    cluster = make_cluster()
    run = dtf("status", "nope", broker=cluster.endpoint)
    assert run.returncode == 2
    assert run.stderr.strip() == "dtf status: unknown job 'nope'"


def test_unreachable_broker_exits_3(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = dtf("workers", "--timeout-connect", "0.5", broker=f"tcp://127.0.0.1:{port}")
    assert run.returncode == 3
    assert run.stderr.strip() == f"dtf workers: broker at tcp://127.0.0.1:{port} did not answer within 0.5s"


def test_broker_env_var_is_the_default(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    env = {**os.environ, "DTF_BROKER": cluster.endpoint}
    exe = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")
    run = subprocess.run([exe, "workers", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 0 and json.loads(run.stdout)[0]["worker_id"] == "w1"


def test_bad_broker_config_and_strategy_are_one_line_errors(tmp_path):
    bad = write(tmp_path / "b.toml", "[broker\n")
    for args, fragment in [
        (["--config", str(bad)], "invalid TOML"),
        (["--strategy", "fastest"], "unknown strategy 'fastest' (available: "),
    ]:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "dtf_bus.broker",
                "--bind",
                "tcp://127.0.0.1:0",
                "--metrics-bind",
                "tcp://127.0.0.1:0",
                "--db",
                str(tmp_path / "x.duckdb"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 2
        assert fragment in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_worker_rejects_unknown_plugin_and_bad_capability(tmp_path):
    for args, message in [
        (["--plugin", "nope"], "dtf-worker: unknown plugin 'nope' (available: "),
        (["--capability", "novalue"], "dtf-worker: --capability 'novalue': expected KEY=VALUE"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "dtf_bus.worker", "--broker", "tcp://127.0.0.1:1", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 2
        assert run.stderr.startswith(message)
