"""Unplaceable work is loud: warnings at submit with did-you-mean, and placement_timeout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]


def dtf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dtf_bus.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_typo_is_a_warning_with_did_you_mean_at_submit(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        reply = client.submit_job(
            [
                {"name": "typo", "plugin": "shel", "params": {"cmd": "true"}},
                {"name": "key", "plugin": "sim", "requires": {"hardwre": "cpu"}},
                {"name": "fine", "plugin": "sim"},
            ]
        )
        warnings = reply["warnings"]
        client.cancel(reply["job_id"])
    assert len(warnings) == 2
    assert warnings[0].startswith("1 task(s) (typo) cannot run on any live worker: plugin=shel: no live worker has it")
    assert "plugin 'shel': did you mean 'shell'?" in warnings[0]
    assert "requirement 'hardwre': did you mean 'hardware'?" in warnings[1]


def test_placement_timeout_fails_what_no_worker_can_take(make_cluster, tmp_path):
    cluster = make_cluster(workers={"w1": {}})
    spec = tmp_path / "gpu.toml"
    spec.write_text(
        '[[tasks]]\nname = "gpu"\nplugin = "sim"\nrequires = { hardware = "cuda" }\n\n'
        '[[tasks]]\nname = "cpu"\nplugin = "sim"\n'
    )
    run = dtf("submit", str(spec), "--wait", "--json", "--placement-timeout", "1", "--broker", cluster.endpoint)
    assert run.returncode == 1, run.stderr
    assert "warning: 1 task(s) (gpu) cannot run on any live worker" in run.stderr
    with cluster.client() as client:
        [gpu, cpu] = client.results(json.loads(run.stdout)["job_id"])
    assert cpu["state"] == "succeeded"
    assert gpu["state"] == "failed" and gpu["attempts"] == 0
    assert gpu["error"].startswith("not placed within 1s: requires.hardware=cuda: no live worker has it")


def test_placement_timeout_survives_a_broker_restart(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit(
            [{"name": "gpu", "plugin": "sim", "requires": {"hardware": "cuda"}, "placement_timeout": 3}]
        )
        assert client.status(job)["counts"] == {"queued": 1}
    cluster.stop_broker()  # SIGTERM: the queued task and its placement_timeout are in DuckDB
    cluster.start_broker()
    with cluster.client() as client:
        status = client.wait(job, timeout=30)
        [task] = client.results(job)
    assert status["failed"] == 1
    assert task["error"].startswith("not placed within 3s: requires.hardware=cuda: no live worker has it"), task
