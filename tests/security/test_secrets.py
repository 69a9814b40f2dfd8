"""Secrets stay where they belong: a task's env values reach its command and nothing else (not
the DuckDB file, not a log), and a task never inherits its worker's keys or credentials.

Found by trying (issue 14): env values were stored and logged in full, and a task read
DTF_CURVE_SECRET (its worker's key) from its own environment.
"""

from __future__ import annotations

import uuid

import duckdb
import pytest

from dtf_bus.testing.cluster import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]


def read_env_dump(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_env_values_reach_the_task_and_nothing_else(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}}, log_level="DEBUG")
    secret = f"s3cret-{uuid.uuid4().hex}"
    seen = tmp_path / "seen.txt"
    tasks = [
        {
            "name": "deploy",
            "plugin": "shell",
            "params": {"cmd": f'printf %s "$DEPLOY_TOKEN" > {seen}', "env": {"DEPLOY_TOKEN": secret}},
        },
        {  # a failure and its retry go through the other logging paths
            "name": "flaky",
            "plugin": "shell",
            "params": {"cmd": "exit 3", "env": {"DEPLOY_TOKEN": secret}},
            "retries": 1,
            "retry_backoff": 0.0,
        },
    ]
    with cluster.client() as client:
        job = client.submit(tasks, name="secrets")
        status = client.wait(job, timeout=30)
    assert (status["succeeded"], status["failed"]) == (1, 1), status
    assert seen.read_text() == secret  # the command had the real value

    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    params = dict(con.execute("select name, params::VARCHAR from tasks").fetchall())
    assert all('"DEPLOY_TOKEN":"***"' in p for p in params.values()), params
    for table in ("jobs", "tasks", "attempts"):
        dump = con.execute(f"select * from {table}").fetchall()
        assert secret not in repr(dump), f"the secret is in {table}"
    con.close()
    for path in [cluster.db, *cluster.db.parent.glob(f"{cluster.db.name}.wal")]:
        assert secret.encode() not in path.read_bytes(), f"the secret is in {path.name}"
    for proc in (cluster.broker, *cluster.workers.values()):
        assert secret not in proc.log_path.read_text(errors="replace"), f"the secret is in {proc.name}'s log"


def test_a_task_never_sees_its_workers_secrets(make_cluster, tmp_path, monkeypatch):
    cluster = make_cluster(secure=True, start=False)
    cluster.start_broker()
    # The worker finds its key through the environment, as a deployment may set it.
    monkeypatch.setenv("DTF_CURVE_SECRET", str(cluster.node_key("worker-w1", role="worker")))
    monkeypatch.setenv("DTF_BROKER_KEY", str(cluster.keys_dir / "broker.key"))
    monkeypatch.setenv("DTF_API_TOKEN", "tok-should-not-leak")
    monkeypatch.setenv("DTF_CUSTOM_SETTING", "kept")
    cluster.start_worker("w1")
    cluster.wait_for_workers(["w1"])
    dump = tmp_path / "env.txt"
    with cluster.client() as client:
        job = client.submit([{"name": "env", "plugin": "shell", "params": {"cmd": f"env > {dump}"}}])
        assert client.wait(job, timeout=30)["succeeded"] == 1
    env = read_env_dump(dump)
    for name in ("DTF_CURVE_SECRET", "DTF_BROKER_KEY", "DTF_API_TOKEN"):
        assert name not in env, f"the task saw {name}"
    assert "key_secret" not in dump.read_text()
    assert env["DTF_CUSTOM_SETTING"] == "kept" and env["DTF_WORKER_ID"] == "w1" and env["DTF_TASK_ID"] == f"{job}.0"


def test_a_task_whose_env_was_not_stored_fails_after_a_broker_restart(make_cluster):
    cluster = make_cluster()  # no worker: the task stays queued until the broker dies
    task = {"name": "deploy", "plugin": "shell", "params": {"cmd": "true", "env": {"TOKEN": "s3cret"}}}
    with cluster.client() as client:
        job = client.submit([task, {"name": "after", "plugin": "sim", "depends_on": ["deploy"]}])
    cluster.kill_broker()
    cluster.start_broker()
    cluster.start_worker("w1")
    with cluster.client() as client:
        status = client.wait(job, timeout=15)
        results = {t["name"]: t for t in client.results(job)}
    assert status["counts"] == {"failed": 1, "cancelled": 1}, status
    assert "env values are never stored; resubmit the job" in results["deploy"]["error"]
    assert results["deploy"]["worker_id"] is None  # it never ran with "***" for its TOKEN
    wait_for(lambda: "resubmit the job" in cluster.broker.log_path.read_text(), 5, "the broker to say why")
