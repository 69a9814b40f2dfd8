"""What the state owes its store: replies only after commit, refused rows cost their task and
never an acknowledgement, and a restarted broker resumes what was committed."""

from __future__ import annotations

import random
from collections.abc import Iterator

import duckdb
import pytest

from dtf_bus import protocol
from dtf_bus.balancer.least_loaded import LeastLoaded
from dtf_bus.broker.health import Health
from dtf_bus.broker.machine import BrokerMachine
from dtf_bus.ship.store import ShipStore
from dtf_bus.store.db import SCHEMA, Store
from dtf_bus.task import TaskState
from tests.unit.broker.driver import DEAD, INTERVAL, LIVENESS, Driver, assigned, cancels, errors, published, sends

pytestmark = pytest.mark.unit

POISON = "unstorable"  # in a result: its attempt row is refused; as a job name: the job row is


@pytest.fixture(scope="module")
def refusing_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A real DuckDB file whose schema refuses some rows, as a full disk or a bad value would."""
    path = tmp_path_factory.mktemp("refusing") / "r.duckdb"
    schema = SCHEMA.replace(
        "PRIMARY KEY (task_id, attempt)",
        f"PRIMARY KEY (task_id, attempt), CHECK (result IS NULL OR NOT contains(CAST(result AS VARCHAR), '{POISON}'))",
    ).replace("    labels JSON\n);", f"    labels JSON,\n    CHECK (name <> '{POISON}')\n);")
    con = duckdb.connect(str(path))
    con.execute(schema)
    con.close()
    store = Store(path, flush_interval=0.005)
    yield store
    store.close()


def _driver(store: Store, **kwargs) -> Driver:
    machine = BrokerMachine(
        store,
        ships=ShipStore(None),
        strategy=LeastLoaded(),
        prefetch=0,
        health=Health(INTERVAL, LIVENESS, DEAD),
        rng=random.Random(1),
        **kwargs,
    )
    return Driver(machine, store)


def _result(driver: Driver, worker: str, task_id: str, value: object) -> None:
    result = {"task_id": task_id, "attempt": 1, "outcome": "succeeded", "ended_at": 1.7e9, "result": {"v": value}}
    driver.msg(worker.encode(), protocol.TASK_RESULT, results=[result])


def test_a_refused_result_fails_its_task_and_is_acknowledged_only_once_that_is_stored(refusing_store):
    driver = _driver(refusing_store)
    driver.register("w1", slots=2)
    job = driver.submit([{"name": "good", "plugin": "sim"}, {"name": "bad", "plugin": "sim"}])
    driver.turn()
    _result(driver, "w1", f"{job}.0", 1)
    _result(driver, "w1", f"{job}.1", POISON)
    out = driver.commit()
    assert [a.body["acks"] for a in sends(out, protocol.RESULT_ACK)] == [[(f"{job}.0", 1)]]
    bad = driver.task(job, 1)
    assert bad.state is TaskState.FAILED and bad.error.startswith("could not be stored")
    assert bad.result is None and driver.task(job).state is TaskState.SUCCEEDED
    assert published(out, "failed")[0]["revised"]
    later = driver.commit()  # the failure itself is stored: now the worker may forget the result
    assert [a.body["acks"] for a in sends(later, protocol.RESULT_ACK)] == [[(f"{job}.1", 1)]]


def test_a_refused_job_row_turns_its_submit_reply_into_an_error(refusing_store):
    driver = _driver(refusing_store)
    driver.register("w1")
    job = driver.submit([{"name": "a", "plugin": "sim"}], name=POISON)
    out = driver.commit()
    (error,) = errors(out)
    assert error.startswith(f"job {job} could not be stored")
    assert driver.task(job).state is TaskState.FAILED
    assert cancels(out) == [] or cancels(out)[0][3].startswith("could not be stored")


# ----------------------------------------------------------------------- restore


@pytest.fixture(scope="module")
def restart_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("restart") / "r.duckdb", flush_interval=0.005)
    yield store
    store.close()


@pytest.mark.parametrize("fate", ["returns_with_it", "returns_without_it", "never_returns"])
def test_a_restarted_broker_resumes_what_was_committed(restart_store, fate):
    before = _driver(restart_store)
    before.machine.restore(before.now, 1.7e9)  # as every broker does: numbering goes on from the store's
    before.register("w1", plugins=(fate,))  # a plugin of this test's own: the store holds others' jobs
    job = before.submit([{"name": "a", "plugin": fate}, {"name": "b", "plugin": f"{fate}-later"}])
    before.turn()
    assert before.store.flush()

    after = _driver(restart_store)
    after.now = 5000.0
    after.machine.restore(after.now, 1.7e9)
    running, queued = after.task(job, 0), after.task(job, 1)
    assert running.state is TaskState.ASSIGNED and queued.state is TaskState.QUEUED
    assert after.state.orphans["w1"][running.task_id] == 1
    if fate == "returns_with_it":
        after.register("w1", slots=2, plugins=(fate, f"{fate}-later"), running=[[running.task_id, 1]])
        assert running.state is TaskState.ASSIGNED and after.state.registry.get("w1").inflight == {running.task_id: 1}
    elif fate == "returns_without_it":
        after.register("w1", slots=2, plugins=(fate, f"{fate}-later"), running=[])
        assert running.state is TaskState.QUEUED and running.attempt == 2
    else:
        after.advance(INTERVAL * LIVENESS * 2 + 0.01)
        after.health()
        assert running.state is TaskState.QUEUED
        assert running.attempt_record(1).error == "worker w1 did not return in time"
        after.register("w2", slots=2, plugins=(fate, f"{fate}-later"))
    placed = {t for _, t, _ in assigned(after.turn())}
    assert queued.task_id in placed
    assert (running.task_id in placed) is (fate != "returns_with_it")
