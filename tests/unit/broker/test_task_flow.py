"""Retries with back-off, the DAG's release and doom, cancels, placement deadlines."""

from __future__ import annotations

import random

import pytest

from dtf_bus import defaults, protocol
from dtf_bus.task import TaskState
from tests.unit.broker.driver import assigned, cancels, published, replies, specs

pytestmark = pytest.mark.unit


def _run_to_end(driver, task, outcome: str) -> None:
    """Place the task, start it and report ``outcome`` for its current attempt."""
    out = driver.turn()
    assert [(t, a) for _, t, a in assigned(out)] == [(task.task_id, task.attempt)]
    driver.started(task.worker_id, task.task_id, task.attempt)
    driver.result(task.worker_id, task.task_id, task.attempt, outcome)


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "crashed"])
@pytest.mark.parametrize("retries", [1, 2, 3])
def test_a_failing_task_is_retried_then_fails_for_good(driver, outcome, retries):
    driver.register("w1")
    job = driver.submit(specs("a", retries=retries, retry_backoff=0.5))
    task = driver.task(job)
    for failure in range(1, retries + 1):
        _run_to_end(driver, task, outcome)
        assert task.state is TaskState.QUEUED and task.failures == failure and task.attempt == failure + 1
        assert assigned(driver.turn()) == []  # in back-off: not placed yet
        driver.advance(defaults.RETRY_BACKOFF_MAX * 1.5)
    _run_to_end(driver, task, outcome)
    assert task.state is (TaskState.TIMED_OUT if outcome == "timed_out" else TaskState.FAILED)
    assert [a.outcome for a in task.history] == [outcome] * (retries + 1)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("failures", [1, 2, 3, 4])
def test_the_back_off_doubles_with_jitter_and_is_capped(make_driver, seed, failures):
    driver = make_driver(rng=random.Random(seed))
    driver.register("w1")
    backoff = 0.4
    job = driver.submit(specs("a", retries=failures, retry_backoff=backoff))
    task = driver.task(job)
    assert assigned(driver.turn()) == [(b"w1", task.task_id, 1)]
    for failure in range(1, failures + 1):
        driver.result("w1", task.task_id, task.attempt, "failed")
        due = driver.state.delayed[0][0] - driver.now
        base = min(backoff * 2 ** (failure - 1), defaults.RETRY_BACKOFF_MAX)
        assert 0.5 * base <= due <= 1.5 * base
        driver.advance(due - 1e-6)
        assert assigned(driver.turn()) == []  # a hair early: still waiting
        driver.advance(2e-6)
        assert assigned(driver.turn()) == [(b"w1", task.task_id, failure + 1)]
    driver.result("w1", task.task_id, task.attempt, "failed")
    assert task.state is TaskState.FAILED and driver.state.delayed == []


@pytest.mark.parametrize("retries", [0, 1])
def test_a_cancelled_outcome_of_the_current_attempt_requeues_without_a_verdict(driver, retries):
    driver.register("w1")
    job = driver.submit(specs("a", retries=retries))
    task = driver.task(job)
    _run_to_end(driver, task, "cancelled")
    assert task.state is TaskState.QUEUED and task.failures == 0 and task.attempt == 2
    assert assigned(driver.turn()) == [(b"w1", task.task_id, 2)]  # at once: no back-off


# --------------------------------------------------------------------------- DAG

DAGS = {
    "chain": ([("a", []), ("b", ["a"]), ("c", ["b"])], [["a"], ["b"], ["c"]]),
    "diamond": ([("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])], [["a"], ["b", "c"], ["d"]]),
    "fan_in": ([("x", []), ("y", []), ("z", ["x", "y"])], [["x", "y"], ["z"]]),
    "listed_before_its_dependency": ([("b", ["a"]), ("a", [])], [["a"], ["b"]]),
}


@pytest.mark.parametrize("dag", DAGS)
def test_a_dag_is_released_wave_by_wave(driver, dag):
    tasks, waves = DAGS[dag]
    driver.register("w1", slots=4)
    job = driver.submit([{"name": n, "plugin": "sim", "depends_on": d} for n, d in tasks])
    by_name = {driver.state.tasks[t].name: driver.state.tasks[t] for t in driver.state.jobs[job].task_ids}
    for wave in waves:
        placed = sorted(by_name_of(driver, t) for _, t, _ in assigned(driver.turn()))
        assert placed == sorted(wave)
        for name in wave:
            driver.result("w1", by_name[name].task_id, 1)
    assert driver.state.jobs[job].done
    assert all(t.state is TaskState.SUCCEEDED for t in by_name.values())


def by_name_of(driver, task_id: str) -> str:
    return driver.state.tasks[task_id].name


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "crashed"])
@pytest.mark.parametrize("dag", ["chain", "diamond"])
def test_a_failed_dependency_cancels_everything_downstream(driver, outcome, dag):
    tasks, _ = DAGS[dag]
    driver.register("w1", slots=4)
    job = driver.submit([{"name": n, "plugin": "sim", "depends_on": d} for n, d in tasks])
    first = driver.task(job)
    driver.turn()
    driver.result("w1", first.task_id, 1, outcome)
    rest = [driver.state.tasks[t] for t in driver.state.jobs[job].task_ids[1:]]
    assert all(t.state is TaskState.CANCELLED for t in rest)
    assert rest[0].error.startswith(f"dependency {first.name!r}")
    assert driver.state.jobs[job].done and assigned(driver.turn()) == []


def test_an_open_job_takes_more_tasks_until_closed_and_is_done_only_then(driver):
    driver.register("w1")
    job = driver.submit(specs("a"), keep_open=True)
    driver.turn()
    driver.result("w1", f"{job}.0", 1)
    assert not driver.state.jobs[job].done
    driver.submit(specs("b"), job_id=job, keep_open=True)
    assert [t for _, t, _ in assigned(driver.turn())] == [f"{job}.1"]
    driver.result("w1", f"{job}.1", 1)
    out = driver.request(protocol.CLOSE_JOB, job_id=job)
    assert replies(out) == [{"job_id": job, "done": True}] and driver.state.jobs[job].done


# ------------------------------------------------------------------------ cancel


@pytest.mark.parametrize("started", [False, True])
def test_cancelling_a_job_cancels_assigned_work_on_its_worker(driver, started):
    driver.register("w1", slots=2)
    job = driver.submit(specs("a", "b", "c"))
    driver.turn()
    if started:
        driver.started("w1", f"{job}.0", 1)
    out = driver.request(protocol.CANCEL_JOB, job_id=job)
    assert sorted(cancels(out)) == [(b"w1", f"{job}.{i}", 1, "job cancelled") for i in range(2)]
    assert replies(out) == [{"job_id": job, "cancelled": 3}]
    assert all(driver.task(job, i).state is TaskState.CANCELLED for i in range(3))
    assert driver.state.registry.get("w1").inflight == {}
    assert published(out, "job_done")


# --------------------------------------------------------------- placement time


@pytest.mark.parametrize("timeout", [0.5, 5.0])
def test_a_task_nobody_can_run_fails_after_its_placement_timeout(driver, timeout):
    driver.register("w1")
    job = driver.submit([{"name": "a", "plugin": "nobody-has-it", "placement_timeout": timeout}])
    task = driver.task(job)
    driver.tick()
    assert task.state is TaskState.QUEUED
    driver.advance(timeout)
    driver.tick()
    assert task.state is TaskState.FAILED and task.error.startswith(f"not placed within {timeout:g}s")


def test_a_placement_timeout_is_met_once_placed(driver):
    driver.register("w1")
    job = driver.submit(specs("a", placement_timeout=1.0))
    driver.turn()
    driver.advance(5)
    driver.tick()
    assert driver.task(job).state is TaskState.ASSIGNED and driver.state.placement_deadlines == {}
