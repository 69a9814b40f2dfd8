"""A dtf cluster whose broker and workers each run on a host of their own (a network namespace)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtf_bus.testing.cluster import LocalCluster, Proc
from tests.multihost import netlab


class NetnsCluster(LocalCluster):
    """LocalCluster whose processes start inside the lab's namespaces: ``broker`` on host
    "broker", ``worker-ID`` on host ID. Pids are the programs' own, so stopping by pid works."""

    def __init__(self, lab: netlab.NetLab, workdir: Path, **kwargs) -> None:
        address = lab.address("broker")
        super().__init__(workdir, bind=f"tcp://{address}:0", metrics_bind=f"tcp://{address}:0", **kwargs)
        self.lab = lab

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        host = "broker" if name == "broker" else name.removeprefix("worker-")
        return super()._spawn(name, [*self.lab.prefix(host), *argv], env)


@pytest.fixture
def netns_cluster(tmp_path, request) -> Iterator:
    """Factory: ``netns_cluster(["w1", "w2"], **LocalCluster kwargs)`` -> (lab, cluster), the broker
    started; torn down (processes by pid, then links, bridge and namespaces) even on failure."""
    reason = netlab.unavailable()
    if reason:
        pytest.skip(f"multi-host test: {reason}")
    made: list[tuple[netlab.NetLab, NetnsCluster]] = []

    def factory(workers: list[str], **kwargs) -> tuple[netlab.NetLab, NetnsCluster]:
        lab = netlab.NetLab()
        made.append((lab, None))
        lab.start(["broker", *workers])
        cluster = NetnsCluster(lab, tmp_path / f"cluster{len(made)}", **kwargs)
        made[-1] = (lab, cluster)
        cluster.start_broker()
        return lab, cluster

    yield factory
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    for lab, cluster in made:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()
            if failed:
                for proc in [cluster.broker, *cluster.workers.values()]:
                    if proc is not None:
                        print(f"\n----- {proc.name} (pid {proc.popen.pid if proc.popen else '?'}) -----")
                        print(proc.log_tail(40))
        lab.close()
        assert not lab.leftovers(), lab.leftovers()
