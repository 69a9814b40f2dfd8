"""`dtf ping`, the health check of the images, units and manifests: 0 when the broker answers,
3 when it does not (CURVE refusals included, with a hint), and a worker's alive file."""

from __future__ import annotations

import pytest

from dtf_bus.testing.cluster import wait_for
from tests.integration.test_cli import dtf

pytestmark = [pytest.mark.api, pytest.mark.integration]


def curve_args(cluster, name: str, authorized: bool = True) -> list[str]:
    secret = cluster.node_key(name, authorized=authorized, role="client")
    return ["--curve-secret", str(secret), "--broker-key", str(cluster.broker_public)]


def test_ping_answers_0_with_authorized_keys_and_3_with_a_hint_without(make_cluster):
    cluster = make_cluster(secure=True, workers={"w1": {}})
    ok = dtf("ping", *curve_args(cluster, "probe"), broker=cluster.endpoint)
    assert ok.returncode == 0 and "answered" in ok.stdout and "(1 workers)" in ok.stdout, ok.stderr
    refused = dtf("ping", "--timeout", "1", *curve_args(cluster, "stranger", False), broker=cluster.endpoint)
    assert refused.returncode == 3 and not refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert "did not answer within 1s" in line and "is this key authorized" in line
    cluster.stop_broker()
    gone = dtf("ping", "--timeout", "0.5", *curve_args(cluster, "probe"), broker=cluster.endpoint)
    assert gone.returncode == 3


def test_a_worker_alive_file_is_fresh_while_its_loop_turns_and_stale_when_it_stops(make_cluster, tmp_path):
    alive = tmp_path / "w1.alive"
    cluster = make_cluster(workers={"w1": {"extra_args": ["--alive-file", str(alive)]}})
    assert dtf("ping", "--alive-file", str(alive)).returncode == 0
    cluster.pause_worker("w1")  # a wedged loop touches nothing
    try:
        stale = wait_for(
            lambda: (r := dtf("ping", "--alive-file", str(alive), "--max-age", "1")).returncode == 1 and r,
            10,
            "the alive file to go stale",
            interval=0.2,
        )
    finally:
        cluster.resume_worker("w1")
    assert "the worker's loop is stuck" in stale.stderr
