"""The broker and three workers on hosts of their own (network namespaces on a bridge), CURVE on.

Real cables are cut: a worker's link goes down mid-task, then the broker's link for 10 s. The
kernel here has no netem, so faults are link down/up, which is what a pulled cable or a dead
switch port does: packets vanish, no connection is closed.
"""

from __future__ import annotations

import time

import duckdb
import pytest

from dtf_bus.client import BrokerUnreachable
from dtf_bus.testing.cluster import wait_for
from tests.conftest import FAST_HEARTBEAT, task_where

pytestmark = [pytest.mark.multihost, pytest.mark.fault, pytest.mark.timeout(180)]

WORKERS = ["w1", "w2", "w3"]
# A silent worker is missing after interval x liveness; placement on a free worker follows within a
# loop turn. The slack covers a loaded 2-core CI machine.
LIVENESS_WINDOW = FAST_HEARTBEAT["heartbeat_interval"] * FAST_HEARTBEAT["heartbeat_liveness"]
RESTART_SLACK = 2.0
BROKER_CUT_S = 10.0


def state_of(client, worker_id):
    return next((w["state"] for w in client.workers() if w["worker_id"] == worker_id), None)


def test_a_fleet_on_three_hosts_survives_cut_cables_without_losing_or_doubling_a_task(netns_cluster):
    lab, cluster = netns_cluster(WORKERS, secure=True, **FAST_HEARTBEAT)
    assert cluster.endpoint.startswith(f"tcp://{lab.address('broker')}:")
    for worker_id in WORKERS:
        cluster.start_worker(worker_id, capabilities=[f"host={worker_id}"])
    cluster.wait_for_workers(WORKERS)
    with cluster.client() as client:
        # 1. One job across all three hosts (each task pinned to one host by a capability).
        job = client.submit([{"name": f"on-{w}", "plugin": "sim", "requires": {"host": w}} for w in WORKERS])
        assert client.wait(job, timeout=30)["succeeded"] == 3
        assert {t["worker_id"] for t in client.results(job)} == set(WORKERS)

        # 2. A worker's cable is cut mid-task: the task restarts on another host within the
        #    liveness window; the cable back, the worker rejoins and its late result is fenced.
        job = client.submit([{"name": "long", "plugin": "sim", "params": {"seconds": 5.0}}])
        victim = task_where(client, job, lambda t: t["state"] == "running", what="the task to run")["worker_id"]
        cut = time.monotonic()
        lab.link(victim, up=False)
        moved = task_where(
            client,
            job,
            lambda t: t["attempts"] == 2 and t["worker_id"] != victim,
            timeout=LIVENESS_WINDOW + RESTART_SLACK + 5,
            what="the task to restart on another host",
        )
        restarted_after = time.monotonic() - cut
        assert restarted_after <= LIVENESS_WINDOW + RESTART_SLACK, restarted_after
        assert moved["history"][0]["worker_id"] == victim and moved["history"][0]["outcome"] == "lost"
        survivor = moved["worker_id"]
        lab.link(victim, up=True)
        wait_for(lambda: state_of(client, victim) in ("idle", "busy"), 20, "the worker to rejoin", interval=0.1)
        late = task_where(client, job, lambda t: t["history"][0]["stale"], timeout=20, what="the late result, fenced")
        assert client.wait(job, timeout=30)["succeeded"] == 1
        [task] = client.results(job)
        assert task["worker_id"] == survivor and task["attempts"] == 2 and late["history"][0]["worker_id"] == victim

        # 3. The broker's cable is cut for 10 s while every host runs a task and more wait.
        job = client.submit([{"name": "cut", "plugin": "sim", "params": {"seconds": 2.0}, "repeat": 6}])
        wait_for(lambda: sum(t["state"] == "running" for t in client.results(job)) == 3, 20, "a task on every host")
        lab.link("broker", up=False)
        cut_until = time.monotonic() + BROKER_CUT_S
        silent = 0
        while (left := cut_until - time.monotonic()) > 0:  # the cut lasts 10 s; the broker stays unreachable
            with cluster.client(timeout=min(1.0, max(left, 0.05))) as probe, pytest.raises(BrokerUnreachable):
                probe.ping()
            silent += 1
        lab.link("broker", up=True)
        assert silent >= 5
        status = client.wait(job, timeout=60)
        assert status["succeeded"] == 6 and status["total"] == 6
        cluster.wait_for_workers(WORKERS, timeout=30)
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    rows = con.execute("select task_id, state from tasks where job_id = ?", [job]).fetchall()
    assert len(rows) == 6 and {state for _, state in rows} == {"succeeded"}  # none lost
    counted = con.execute(
        "select a.task_id, count(*) from attempts a join tasks t using (task_id)"
        " where t.job_id = ? and a.outcome = 'succeeded' and not a.stale group by 1",
        [job],
    ).fetchall()
    assert sorted(n for _, n in counted) == [1] * 6  # none counted twice
