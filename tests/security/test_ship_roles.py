"""Shipping under CURVE: a client's key uploads code and a worker's key fetches it (over the
worker's own fetch connection), and neither may do the other's part."""

from __future__ import annotations

import pytest

from dtf_bus import protocol
from dtf_bus.client import Client, ClientError
from dtf_bus.security import curve as security
from dtf_bus.ship import client as ship_client

pytestmark = [pytest.mark.integration, pytest.mark.security]


def test_under_curve_clients_upload_workers_fetch_and_not_the_other_way_round(make_cluster, tmp_path):
    cluster = make_cluster(secure=True, start=False)
    submitter = cluster.node_key("submitter", role="client")  # admitted before the broker's first look
    cluster.start_broker()
    cluster.start_worker("w1", extra_args=["--ship-cache", str(tmp_path / "cache")])
    cluster.wait_for_workers(["w1"])
    project = tmp_path / "proj"
    project.mkdir()
    (project / "data.txt").write_text("over curve\n")
    with Client(cluster.endpoint, curve=security.client_curve(submitter, cluster.broker_public)) as client:
        shipped = ship_client.ship_directory(client, project)
        assert shipped.sent_bytes == shipped.packed.size
        tasks = [{"name": "shipped", "plugin": "shell", "params": {"cmd": "cat data.txt", "ship": shipped.params}}]
        shipped_job = client.submit(tasks)
        assert client.wait(shipped_job, timeout=30)["succeeded"] == 1
        (task,) = client.results(shipped_job)
        assert task["result"]["stdout"] == "over curve\n"
        with pytest.raises(ClientError, match=r"ship_get: not allowed for key 'submitter' \(role client"):
            client.request(protocol.SHIP_GET, {"code": shipped.params["code"], "offset": 0})
    worker_secret = cluster.keys_dir / "worker-w1.key_secret"
    with Client(cluster.endpoint, curve=security.client_curve(worker_secret, cluster.broker_public)) as worker:
        body = {"code": shipped.params["code"], "size": 1, "offset": 0, "data": b"x"}
        with pytest.raises(ClientError, match=r"ship_put: not allowed for key 'worker-w1' \(role worker"):
            worker.request(protocol.SHIP_PUT, body)
