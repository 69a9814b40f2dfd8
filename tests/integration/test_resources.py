"""Consumable resources, GPUs first: a task that asks for one GPU gets one of its own.

Real broker, real workers; the GPUs are declared (``--resource gpus=4``) or reported by a fake
``nvidia-smi`` on the worker's PATH, since CI has no GPU. What is checked is what a GPU task
sees: ``CUDA_VISIBLE_DEVICES`` (and ``HIP_VISIBLE_DEVICES``), distinct among tasks that run at
the same time.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

# Prints the device it was given and when it ran (epoch seconds), holding it for a while.
PROBE = 'echo "$CUDA_VISIBLE_DEVICES $HIP_VISIBLE_DEVICES $(date +%s.%N)"; sleep 0.4; date +%s.%N'


def gpu_tasks(n: int) -> list[dict]:
    return [{"name": "gpu", "plugin": "shell", "params": {"cmd": PROBE}, "resources": {"gpus": 1}, "repeat": n}]


def runs(results: list[dict]) -> list[tuple[str, float, float]]:
    """(device, start, end) of each task, from what its command printed."""
    out = []
    for r in results:
        assert r["state"] == "succeeded", r
        first, last = r["result"]["stdout"].strip().splitlines()
        cuda, hip, start = first.split()
        assert cuda == hip  # CUDA's and ROCm's variable agree
        out.append((cuda, float(start), float(last)))
    return out


def fake_nvidia_smi(directory, count: int) -> dict[str, str]:
    """A PATH under which ``nvidia-smi`` reports ``count`` GPUs in the CSV the worker asks for."""
    directory.mkdir()
    script = directory / "nvidia-smi"
    rows = "\\n".join(f"{i}, Fake GPU, 16384, 9.0, 550.54" for i in range(count))
    script.write_text(f'#!/bin/sh\nprintf "{rows}\\n"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def test_concurrent_one_gpu_tasks_never_share_a_device(make_cluster):
    cluster = make_cluster(workers={"gpu": {"slots": 8, "extra_args": ["--resource", "gpus=4"]}})
    with cluster.client() as client:
        [worker] = client.workers()
        assert worker["resources"] == {"gpus": 4}
        job = client.submit(gpu_tasks(8))
        assert client.wait(job, timeout=60)["succeeded"] == 8
        seen = runs(client.results(job))
    assert {device for device, _, _ in seen} <= {"0", "1", "2", "3"}
    overlapping = [(a, b) for a, b in itertools.combinations(seen, 2) if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, "no two tasks ran at once: the test proves nothing"
    assert all(a[0] != b[0] for a, b in overlapping), overlapping


def test_gpus_come_from_the_devices_the_worker_may_use(make_cluster, tmp_path):
    cluster = make_cluster()
    path = fake_nvidia_smi(tmp_path / "bin", 4)
    cluster.start_worker("all", slots=4, env=path)
    cluster.start_worker("two", slots=4, env={**path, "CUDA_VISIBLE_DEVICES": "2,3"})
    cluster.wait_for_workers(["all", "two"])
    with cluster.client() as client:
        totals = {w["worker_id"]: w["resources"] for w in client.workers()}
        assert totals == {"all": {"gpus": 4}, "two": {"gpus": 2}}
        job = client.submit(gpu_tasks(6))
        assert client.wait(job, timeout=60)["succeeded"] == 6
        by_worker = {}
        for r in client.results(job):
            by_worker.setdefault(r["worker_id"], set()).add(r["result"]["stdout"].split()[0])
    assert by_worker.get("two", set()) <= {"2", "3"}  # its own visible devices, never 0 or 1
    assert by_worker.get("all", set()) <= {"0", "1", "2", "3"}


def test_more_gpus_than_any_worker_has_is_unplaceable_with_the_reason(make_cluster):
    cluster = make_cluster(workers={"gpu": {"extra_args": ["--resource", "gpus=1"]}})
    with cluster.client() as client:
        reply = client.submit_job([{"name": "big", "plugin": "sim", "resources": {"gpus": 2}}])
        client.cancel(reply["job_id"])
    [warning] = reply["warnings"]
    assert "resources.gpus=2: the most any live worker has is 1" in warning


def test_dtf_workers_shows_resources_free_and_total(make_cluster):
    cluster = make_cluster(workers={"gpu": {"extra_args": ["--resource", "gpus=2", "--resource", "licenses=1"]}})
    run = subprocess.run(
        [sys.executable, "-m", "dtf_bus.cli", "workers", "--broker", cluster.endpoint],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "gpus 2/2,licenses 1/1" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dtf_bus.worker", "--broker", cluster.endpoint, "--resource", "gpus=lots"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "dtf-worker: resources.gpus must be an integer from 0 to 1024"
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dtf_bus.cli", "workers", "--json", "--broker", cluster.endpoint],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )
    assert listed[0]["resources"] == {"gpus": 2, "licenses": 1}
