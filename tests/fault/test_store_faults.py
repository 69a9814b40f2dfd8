"""Store faults: a row DuckDB refuses mid-run costs its task, never an acknowledgement.

The fault comes from outside, as a real one would: the results file is created before the
broker opens it, with CHECK constraints that refuse one task's attempt row and one job's row
(the store creates tables only if they are missing). A raw DEALER stands in for the worker, so
the test sees every RESULT_ACK the broker sends and can hold the broker to its rule: what it
acknowledged is in DuckDB.
"""

from __future__ import annotations

import threading
import time

import duckdb
import pytest
import zmq

from dtf_bus import events, protocol
from dtf_bus.client import ClientError
from dtf_bus.store.db import SCHEMA
from dtf_bus.testing.cluster import wait_for

pytestmark = pytest.mark.fault

POISON = "unstorable"  # in a result: its attempt row is refused; as a job name: the job row is


def _refusing_schema(path) -> None:
    schema = SCHEMA.replace(
        "PRIMARY KEY (task_id, attempt)",
        f"PRIMARY KEY (task_id, attempt), CHECK (result IS NULL OR NOT contains(CAST(result AS VARCHAR), '{POISON}'))",
    ).replace("    labels JSON\n);", f"    labels JSON,\n    CHECK (name <> '{POISON}')\n);")
    assert schema.count("CHECK") == 2
    con = duckdb.connect(str(path))
    con.execute(schema)
    con.close()


class FakeWorker(threading.Thread):
    """Registers, answers each task at once (the task named ``poison`` with an unstorable
    result) and records what the broker acknowledged."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.sent: set[tuple[str, int]] = set()
        self.acked: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        body = {"worker_id": "fake", "capabilities": {"hardware": ["cpu"]}, "slots": 64, "plugins": ["sim"]}
        sock.send(protocol.encode(protocol.REGISTER, body))
        beat = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() > beat:  # the broker's liveness: any message counts
                    sock.send(protocol.encode(protocol.HEARTBEAT, {}))
                    beat = time.monotonic() + 0.1
                if not sock.poll(50):
                    continue
                kind, msg = protocol.decode(sock.recv())
                if kind == protocol.ASSIGN:
                    now = time.time()
                    results = [
                        {
                            "task_id": t["task_id"],
                            "attempt": t["attempt"],
                            "outcome": "succeeded",
                            "result": {"out": POISON if t["params"].get("poison") else "fine"},
                            "started_at": now,
                            "ended_at": now,
                        }
                        for t in msg["tasks"]
                    ]
                    self.sent.update((r["task_id"], r["attempt"]) for r in results)
                    sock.send(protocol.encode(protocol.TASK_RESULT, {"results": results}))
                elif kind == protocol.RESULT_ACK:
                    self.acked += [tuple(a) for a in msg["acks"]]
        finally:
            sock.close()


def test_a_refused_row_fails_its_task_and_nothing_unstored_is_acknowledged(make_cluster):
    cluster = make_cluster(start=False)
    _refusing_schema(cluster.db)
    cluster.start_broker()
    worker = FakeWorker(cluster.endpoint)
    worker.start()
    cluster.wait_for_workers(["fake"])
    sub = zmq.Context.instance().socket(zmq.SUB)  # the revised verdict is published, too
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, events.TASK)
    sub.setsockopt(zmq.SUBSCRIBE, events.SYSTEM_METRICS)
    sub.connect(cluster.metrics_endpoint)
    wait_for(lambda: sub.poll(100) and sub.recv_multipart(), 5, "the subscription to join (a metrics tick)")
    fine = [{"name": "t", "plugin": "sim", "repeat": 30}]
    submitted = []
    try:
        with cluster.client() as client:
            submitted.append(client.submit(fine, name="before"))
            # Mid-run: the poisoned result lands among others, in the same batches.
            mixed = [*fine, {"name": "poison", "plugin": "sim", "params": {"poison": True}}]
            submitted.append(poisoned := client.submit(mixed, name="mixed"))
            with pytest.raises(ClientError, match=r"job \w+ could not be stored: ConstraintException"):
                client.submit(fine, name=POISON)
            submitted.append(client.submit(fine, name="after"))
            status = client.wait(poisoned, timeout=30)
            assert (status["succeeded"], status["failed"]) == (30, 1)
            for job in submitted[0], submitted[2]:
                assert client.wait(job, timeout=30)["succeeded"] == 30
            poison = next(r for r in client.results(poisoned) if r["name"] == "poison")
            assert poison["state"] == "failed"
            assert poison["error"].startswith("could not be stored: ConstraintException: Constraint Error: CHECK")
            # Every result is acknowledged in the end, the refused one too: once its failure is stored.
            wait_for(lambda: set(worker.acked) >= worker.sent, 10, "every result to be acknowledged")

        def revised() -> bool:
            while sub.poll(50):
                topic, event = events.decode(sub.recv_multipart())
                if topic == events.TASK.decode() and event.get("task_id") == poison["task_id"] and event.get("revised"):
                    return event["event"] == "failed" and event["error"] == poison["error"]
            return False

        wait_for(revised, 10, "the revised verdict on events.task")
    finally:
        sub.close()
        worker.stop.set()
        worker.join(5)
    cluster.stop_broker()
    con = duckdb.connect(str(cluster.db), read_only=True)
    jobs = {r[0] for r in con.execute("select job_id from jobs").fetchall()}
    assert jobs == set(submitted)  # every job the client was told about, and no other
    attempts = {
        (r[0], r[1]): r[2:]
        for r in con.execute("select task_id, attempt, outcome, result ->> 'out', error from attempts").fetchall()
    }
    assert set(worker.acked) <= set(attempts)  # every result acknowledged is stored
    assert len(worker.acked) == len(set(worker.acked))
    outcome, out, error = attempts[(poison["task_id"], 1)]
    assert (outcome, out) == ("failed", None) and error == poison["error"]
    mine = [row for (task_id, _), row in attempts.items() if task_id.split(".")[0] in submitted]
    assert len(mine) == 91 and [r for r in mine if r[0] != "succeeded"] == [attempts[(poison["task_id"], 1)]]
    tasks = con.execute("select state, error from tasks where task_id = ?", [poison["task_id"]]).fetchall()
    assert tasks == [("failed", poison["error"])]
    # The job whose row was refused left no tasks running: they failed, saying why.
    orphans = con.execute(
        "select state, count(*), min(error) from tasks where job_id not in (select job_id from jobs) group by state"
    ).fetchall()
    assert [(state, n) for state, n, _ in orphans] == [("failed", 30)]
    assert orphans[0][2].startswith("could not be stored")
