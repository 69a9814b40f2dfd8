"""dtf_queued_tasks on /metrics: the backlog per kind of worker, what KEDA scales on."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.monitoring.conftest import eventually

pytestmark = pytest.mark.monitoring


def queued(cluster) -> dict[tuple[str, str], float]:
    request = urllib.request.Request(cluster.http_url + "/metrics", headers=cluster.api_headers())
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    pattern = r'^dtf_queued_tasks\{hardware="([^"]*)",requirement="([^"]*)"\} (\S+)$'
    return {(req, hw): float(v) for hw, req, v in re.findall(pattern, text, re.MULTILINE)}


def test_queued_tasks_are_counted_per_requirement_until_a_capable_worker_takes_them(monitored):
    cluster = monitored(workers={"cpu-1": {}})
    with cluster.client() as client:
        gpu_job = client.submit([{"name": "g", "plugin": "sim", "requires": {"hardware": "cuda"}, "repeat": 3}])
        web_job = client.submit([{"name": "w", "plugin": "sim", "requires": {"hardware": "webgpu"}, "repeat": 2}])
        eventually(
            lambda: queued(cluster) == {("hardware=cuda", "cuda"): 3.0, ("hardware=webgpu", "webgpu"): 2.0},
            what="3 CUDA and 2 WebGPU tasks queued",
        )
        client.cancel(web_job)  # cancelled tasks leave the gauge
        eventually(lambda: queued(cluster) == {("hardware=cuda", "cuda"): 3.0}, what="the WebGPU tasks gone")
        cluster.start_worker("gpu-1", capabilities=["hardware=cuda"])
        assert client.wait(gpu_job, timeout=20)["succeeded"] == 3
    eventually(lambda: queued(cluster) == {}, what="the CUDA backlog to drain")
