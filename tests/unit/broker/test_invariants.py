"""Random runs of the state machine, checked after every event against what must always hold:
whatever order workers come, go, fall silent, answer late or twice, the books stay straight."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dtf_bus import protocol
from dtf_bus.broker.instructions import SendFailed
from dtf_bus.broker.lifecycle import CONNECTION_CLOSED, SEND_QUEUE_FULL
from dtf_bus.task import TaskState
from tests.unit.broker.driver import INTERVAL, LIVENESS, Driver, assigned

pytestmark = pytest.mark.unit

WORKERS = ["w0", "w1", "w2"]
LIVE = (TaskState.ASSIGNED, TaskState.RUNNING)


def check(driver: Driver, job_ids: list[str]) -> None:
    state = driver.state
    counts = Counter(t.state for t in state.tasks.values())
    assert {k: v for k, v in state.state_counts.items() if v} == {k: v for k, v in counts.items() if v}
    held: dict[str, tuple[str, int]] = {}
    for worker in state.registry:
        for task_id, attempt in worker.inflight.items():
            assert task_id not in held, f"{task_id} held by two workers"
            held[task_id] = (worker.worker_id, attempt)
    for task in state.tasks.values():
        if task.state in LIVE and state.registry.get(task.worker_id) is not None:
            worker = state.registry.get(task.worker_id)
            if worker.state != "missing":
                assert held.get(task.task_id) == (task.worker_id, task.attempt), task.task_id
        if task.task_id in held:
            assert task.state in LIVE and held[task.task_id] == (task.worker_id, task.attempt)
        numbers = [a.number for a in task.history]
        assert numbers == sorted(set(numbers)), f"attempt numbers reused: {numbers}"
        assert task.attempt >= (numbers[-1] if numbers else 1)
    for job_id in job_ids:
        job = state.jobs[job_id]
        finals = sum(state.tasks[t].state.final for t in job.task_ids)
        assert job.unfinished == len(job.task_ids) - finals
        assert sorted(job.finished) == sorted(t for t in job.task_ids if state.tasks[t].state.final)


def step(driver: Driver, rng: random.Random, sent: list[tuple[bytes, str, int]]) -> None:
    """One random stimulus: the kinds of thing a real fleet does, stale and duplicate included."""
    roll = rng.random()
    worker = rng.choice(WORKERS)
    if roll < 0.15:
        running = [[t, a] for p, t, a in sent if p == worker.encode() and rng.random() < 0.7]
        driver.register(worker, slots=rng.choice([1, 2]), running=running)
    elif roll < 0.5 and sent:
        peer, task_id, attempt = rng.choice(sent)
        if rng.random() < 0.3:
            driver.started(peer.decode(), task_id, attempt, peer=peer)
        else:
            outcome = rng.choice(["succeeded", "succeeded", "failed", "crashed", "timed_out"])
            driver.result(peer.decode(), task_id, attempt, outcome, peer=peer)
    elif roll < 0.6:
        driver.event(SendFailed(worker.encode(), rng.choice([CONNECTION_CLOSED, SEND_QUEUE_FULL])))
    elif roll < 0.65:
        driver.msg(worker.encode(), protocol.UNREGISTER)
    elif roll < 0.75:
        driver.advance(rng.choice([0.1, INTERVAL, INTERVAL * LIVENESS * 1.1]))
        driver.health()
    elif roll < 0.8:
        driver.msg(worker.encode(), protocol.HEARTBEAT)
    elif roll < 0.85:
        out = driver.steal_round()
        for steal in [s for s in out if s.kind == protocol.STEAL]:
            ok = rng.random() < 0.7
            body = {"task_id": steal.body["task_id"], "attempt": steal.body["attempt"], "ok": ok}
            sent.extend(assigned(driver.msg(steal.peer, protocol.STEAL_ACK, **body)))
    else:
        driver.advance(rng.random())
    sent.extend(assigned(driver.turn()))


@pytest.mark.parametrize("seed", range(60))
def test_the_books_stay_straight_through_any_run(make_driver, seed):
    rng = random.Random(seed)
    driver = make_driver(rng=random.Random(seed), max_lost_workers=rng.choice([2, 3]))
    for worker in WORKERS[:2]:
        driver.register(worker, slots=2)
    driver.state.registry.get("w0").prefetch = 2
    jobs = []
    for n in range(2):
        names = [f"t{i}" for i in range(rng.randint(2, 6))]
        tasks = [
            {
                "name": name,
                "plugin": "sim",
                "retries": rng.choice([0, 1, 2]),
                "retry_backoff": 0.1,
                **({"depends_on": [names[i - 1]]} if i and rng.random() < 0.3 else {}),
            }
            for i, name in enumerate(names)
        ]
        jobs.append(driver.submit(tasks, name=f"job{n}"))
    sent: list[tuple[bytes, str, int]] = assigned(driver.turn())
    for _ in range(120):
        step(driver, rng, sent)
        check(driver, jobs)
