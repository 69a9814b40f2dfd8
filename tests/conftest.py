"""Shared fixtures: real clusters of subprocesses in a temp dir on ephemeral ports.

Every process a test starts is stopped by pid at teardown, failing or not; when a test fails,
the tail of each process's log is printed so the failure explains itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from dtf_bus.testing.cluster import LocalCluster, wait_for

# Fast liveness for tests: a silent worker goes missing after 1 s (5 x 0.2 s), with slack for a
# loaded 2-core CI machine; the dead limit stays at its default of 10 intervals (2 s).
FAST_HEARTBEAT = {"heartbeat_interval": 0.2, "heartbeat_liveness": 5}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def make_cluster(tmp_path, request) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: ``make_cluster(workers={"w1": {...}}, **LocalCluster kwargs)``."""
    clusters: list[LocalCluster] = []

    def factory(workers: dict[str, dict] | None = None, start: bool = True, **kwargs) -> LocalCluster:
        settings = {**FAST_HEARTBEAT, **kwargs}
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", **settings)
        clusters.append(cluster)
        if start:
            cluster.start_broker()
            for worker_id, options in (workers or {}).items():
                cluster.start_worker(worker_id, **options)
            if workers:
                cluster.wait_for_workers(list(workers))
        return cluster

    yield factory
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    for cluster in clusters:
        with contextlib.suppress(Exception):
            cluster.stop()
        if failed:
            for proc in [cluster.broker, *cluster.workers.values()]:
                if proc is not None:
                    print(f"\n----- {proc.name} (pid {proc.popen.pid if proc.popen else '?'}) -----")
                    print(proc.log_tail(40))


def task_where(client, job_id: str, predicate, timeout: float = 10.0, what: str = "a task state"):
    """Poll a job's results until one task satisfies ``predicate``; returns that task."""

    def find():
        return next((t for t in client.results(job_id) if predicate(t)), None)

    return wait_for(find, timeout, what)
