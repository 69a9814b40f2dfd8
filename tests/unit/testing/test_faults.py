"""Fault injection is the test cluster's to ask for: the production worker has none."""

from __future__ import annotations

import signal

import pytest

from dtf_bus.testing import faults
from dtf_bus.testing.cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.unit


class Target:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def partition(self) -> None:
        self.calls.append("partition")

    def heal(self) -> None:
        self.calls.append("heal")


def test_a_cluster_without_faults_refuses_to_partition_a_worker(tmp_path):
    cluster = LocalCluster(tmp_path)
    with pytest.raises(ClusterError, match="faults=True"):
        cluster.close_worker_socket("w1")


def test_the_signals_partition_and_heal():
    before = {sig: signal.getsignal(sig) for sig in (faults.PARTITION, faults.HEAL)}
    target = Target()
    try:
        faults.install(target)
        signal.raise_signal(faults.PARTITION)
        signal.raise_signal(faults.HEAL)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert target.calls == ["partition", "heal"]
