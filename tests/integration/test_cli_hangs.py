"""No silent hangs from the `dtf` commands (issue 15): exit codes 0/1/2/3/4/130, `--json` that is
always JSON, endpoints without a transport refused before anything connects, blocked tasks
reported while a wait goes on, `dtf up` that stops everything on a double Ctrl-C, and exports
that say what did not run."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from dtf_bus.testing.cluster import wait_for

pytestmark = [pytest.mark.api, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
DTF = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")


def dtf(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([DTF, *args], capture_output=True, text=True, timeout=timeout, env=env)


def write_json(path: Path, tasks: list[dict]) -> Path:
    path.write_text(json.dumps({"name": path.stem, "tasks": tasks}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(proc: subprocess.Popen, needle: str, lines: list[str], timeout: float) -> None:
    """Read the merged output line by line until one holds ``needle`` (a deadline, no sleeps)."""

    def seen() -> bool:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "exited early:\n" + "".join(lines)
        lines.append(line)
        return needle in line

    wait_for(seen, timeout, repr(needle), interval=0)


UNPLACEABLE = [{"name": "needs-tpu", "plugin": "sim", "requires": {"hardware": ["tpu"]}}]


def test_wait_reports_blocked_tasks_and_a_timeout_exits_4_with_json(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec = write_json(tmp_path / "tpu.json", UNPLACEABLE)
    run = dtf("submit", str(spec), "--wait", "--json", "--timeout", "7", "--broker", cluster.endpoint)
    assert run.returncode == 4, run.stderr
    out = json.loads(run.stdout)
    job = out["job_id"]
    assert out["timed_out"] is True and "not finished within 7s" in out["error"]
    assert out["status"]["counts"] == {"queued": 1}
    assert out["status"]["blocked"][0]["tasks"] == ["needs-tpu"]
    # Said on stderr while waiting (after 5 s), not only at the end.
    assert "the broker cannot place" in run.stderr and "needs-tpu" in run.stderr and "tpu" in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert (
        last == f"dtf submit: job {job} not finished within 7s; it keeps running (dtf status {job}; dtf cancel {job})"
    )
    status = json.loads(dtf("status", job, "--json", "--broker", cluster.endpoint).stdout)
    assert status["counts"] == {"queued": 1}  # the timeout left the job alone


def test_ctrl_c_during_wait_detaches_with_130(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec = write_json(tmp_path / "slow.json", [{"name": "slow", "plugin": "sim", "params": {"seconds": 60}}])
    proc = subprocess.Popen(
        [DTF, "submit", str(spec), "--wait", "--broker", cluster.endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        read_until(proc, "waiting...", lines, 30)
        job = lines[-1].split()[2]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in rest and rest.strip() == f"detached: job {job} keeps running; dtf cancel {job}"
    status = json.loads(dtf("status", job, "--json", "--broker", cluster.endpoint).stdout)
    assert status["done"] is False and status["cancelled"] == 0


@pytest.mark.parametrize("command", [["workers"], ["status", "j"], ["submit", "spec.toml", "--wait", "--json"]])
def test_endpoint_without_transport_is_exit_2_for_dtf(command):
    run = dtf(*command, "--broker", "127.0.0.1:5555", timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"dtf {command[0]}: --broker '127.0.0.1:5555': an endpoint needs a transport, e.g. tcp://HOST:PORT; "
        "did you mean tcp://127.0.0.1:5555?"
    ]
    if "--json" in command:
        assert json.loads(run.stdout)["exit_code"] == 2
    env = {**os.environ, "DTF_BROKER": "127.0.0.1:5555"}
    run = dtf(*command, env=env, timeout=30)
    assert run.returncode == 2 and "$DTF_BROKER '127.0.0.1:5555'" in run.stderr


def test_endpoint_without_transport_is_exit_2_for_the_worker():
    run = subprocess.run(
        [sys.executable, "-m", "dtf_bus.worker", "--broker", "127.0.0.1:5555", "--id", "w"],
        capture_output=True,
        text=True,
        timeout=30,  # before the fix: reconnects forever, silently
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("dtf-worker: --broker '127.0.0.1:5555': an endpoint needs")


def test_json_errors_are_json(tmp_path):
    port = free_port()  # nobody listens
    run = dtf("workers", "--json", "--timeout-connect", "0.5", "--broker", f"tcp://127.0.0.1:{port}")
    assert run.returncode == 3
    assert json.loads(run.stdout) == {
        "error": f"dtf workers: broker at tcp://127.0.0.1:{port} did not answer within 0.5s",
        "exit_code": 3,
    }
    assert run.stderr.strip() == json.loads(run.stdout)["error"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\nname = "t"\nplugin = "sim"\ntimeout = "soon"\n')
    run = dtf("submit", str(bad), "--json", "--broker", f"tcp://127.0.0.1:{port}")
    assert run.returncode == 2 and json.loads(run.stdout)["error"].startswith("dtf submit: invalid spec: task 't'")


def test_status_and_exports_say_what_ran(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec = write_json(
        tmp_path / "mixed.json",
        [
            {"name": "ok", "plugin": "sim"},
            {"name": "bad", "plugin": "sim", "params": {"outcome": "fail"}},
            {"name": "after-bad", "plugin": "sim", "depends_on": ["bad"]},
        ],
    )
    run = dtf("submit", str(spec), "--wait", "--json", "--broker", cluster.endpoint)
    assert run.returncode == 1
    out = json.loads(run.stdout)
    assert (out["succeeded"], out["failed"], out["cancelled"]) == (1, 1, 1)
    status = json.loads(dtf("status", out["job_id"], "--json", "--broker", cluster.endpoint).stdout)
    assert (status["failed"], status["cancelled"]) == (1, 1)

    rows = list(
        csv.DictReader(
            io.StringIO(dtf("results", out["job_id"], "--format", "csv", "--broker", cluster.endpoint).stdout)
        )
    )
    ok = next(r for r in rows if r["name"] == "ok")
    assert ok["started_at"].endswith("+00:00") and "T" in ok["started_at"] and ok["attempts"] == "1"
    assert next(r for r in rows if r["name"] == "after-bad")["attempts"] == "0"  # cancelled before it ran

    job = json.loads(
        dtf(
            "submit", str(write_json(tmp_path / "tpu.json", UNPLACEABLE)), "--json", "--broker", cluster.endpoint
        ).stdout
    )["job_id"]
    results = json.loads(dtf("results", job, "--format", "json", "--broker", cluster.endpoint).stdout)
    assert [(r["state"], r["attempts"]) for r in results] == [("queued", 0)]
    xml = dtf("results", job, "--format", "junit", "--broker", cluster.endpoint).stdout
    assert 'skipped="0"' in xml and 'errors="1"' in xml and 'message="not run: queued"' in xml


EXECUTOR = '''
class SetResult:
    """An in-process executor whose result msgpack cannot pack."""

    name = "setresult"

    def run(self, ctx):
        return {"tags": {"a", "b"}}
'''


def test_unpackable_result_fails_the_task_and_frees_the_slot(make_cluster, tmp_path, monkeypatch):
    (tmp_path / "setplugin.py").write_text(EXECUTOR)
    config = tmp_path / "worker.toml"
    config.write_text('[plugins]\nsetresult = "setplugin:SetResult"\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    cluster = make_cluster(workers={"w1": {"slots": 1, "config": config}})
    spec = write_json(
        tmp_path / "set.json",
        [{"name": "set", "plugin": "setresult"}, {"name": "next", "plugin": "sim"}],
    )
    run = dtf("submit", str(spec), "--wait", "--json", "--timeout", "30", "--broker", cluster.endpoint)
    assert run.returncode == 1, run.stdout + run.stderr  # not 4: the task ended, the slot was free again
    results = {
        r["name"]: r
        for r in json.loads(dtf("results", json.loads(run.stdout)["job_id"], "--broker", cluster.endpoint).stdout)
    }
    assert results["set"]["state"] == "failed" and results["next"]["state"] == "succeeded"
    assert results["set"]["error"].startswith("result not deliverable: cannot be packed (TypeError")
    assert dtf("drain", "w1", "--broker", cluster.endpoint).returncode == 0
    assert cluster.workers["w1"].popen.wait(20) == 0  # drain ends: nothing is stuck running


LONG_TASK = (
    'name = "long"\n[[tasks]]\nname = "stubborn"\nplugin = "shell"\nparams = { cmd = "trap \'\' TERM; sleep 120" }\n'
)


def test_up_double_ctrl_c_stops_everything_and_exits_130(tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(LONG_TASK)
    port = free_port()
    env = {**os.environ, "DTF_BROKER": f"tcp://127.0.0.1:{port}"}
    argv = [
        sys.executable, "-m", "dtf_bus.cli", "up", "--workers", "2", "--profile", "cpu", "--suite", str(suite),
        "--dashboard", "--http", "127.0.0.1:0", "--dashboard-port", "0", "--metrics-bind", "tcp://127.0.0.1:0",
        "--db", str(tmp_path / "up.duckdb"), "--workdir", str(tmp_path / "up"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
    lines: list[str] = []
    family: list[psutil.Process] = []
    try:
        read_until(proc, "progress: 1 running", lines, 90)
        assert f"broker   tcp://127.0.0.1:{port}" in "".join(lines)  # $DTF_BROKER is where it listens

        def task_started() -> list[psutil.Process]:
            procs = psutil.Process(proc.pid).children(recursive=True)
            return procs if any("sleep" in p.name() for p in procs) else []

        family = wait_for(task_started, 30, "the task's sleep to start")
        proc.send_signal(signal.SIGINT)
        read_until(proc, "stopping broker and workers", lines, 30)
        proc.send_signal(signal.SIGINT)  # the second, impatient Ctrl-C, while the worker kills its task
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, "".join(lines) + rest  # the suite never finished
        assert "Traceback" not in rest
        _, alive = psutil.wait_procs(family, timeout=15)
        assert not alive, f"orphaned: {alive}"
    finally:
        if proc.poll() is None:
            family = family or psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
        for child in family:
            if child.is_running():
                child.kill()
        proc.stdout.close()
