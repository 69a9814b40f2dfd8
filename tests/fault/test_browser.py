"""A browser worker killed outright (SIGKILL) leaves no Chromium behind."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from dtf_bus.cluster import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.browser]


def test_a_killed_worker_takes_its_browser_with_it(make_cluster):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install chromium (bin/_bootstrap.sh)")
    cluster = make_cluster(workers={"w": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "page", "plugin": "browser", "params": {"script": "return 1"}}])
        client.wait(job, timeout=60)
        [task] = client.results(job)
    assert task["state"] == "succeeded", task
    descendants = psutil.Process(cluster.workers["w"].pid).children(recursive=True)
    assert any("chrom" in p.name().lower() for p in descendants), [p.name() for p in descendants]
    cluster.kill_worker("w")

    def gone(proc: psutil.Process) -> bool:
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(p) for p in descendants), 15, "the killed worker's browser processes to exit")
