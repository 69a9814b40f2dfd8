"""Placement on pure data: matching rules, priority order, strategies, blocked reasons."""

import pytest

from dtf_bus.balancer import load
from dtf_bus.balancer.least_loaded import LeastLoaded
from dtf_bus.balancer.round_robin import RoundRobin
from dtf_bus.broker import matching
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.task import IllegalTransition, Task, TaskState

pytestmark = pytest.mark.unit


def worker(worker_id, hardware=("cpu",), slots=1, **caps):
    return WorkerInfo(
        worker_id, worker_id.encode(), {"hardware": list(hardware), **caps}, slots, frozenset({"sim", "shell"})
    )


def task(name, seq, priority=0, plugin="sim", **requires):
    return Task(f"j.{seq}", "j", name, plugin, {}, requires, priority, None, 0, seq)


def test_hardware_is_any_of():
    w = worker("w", hardware=("cpu", "cuda"))
    assert matching.can_run("sim", {"hardware": "cuda"}, w)
    assert matching.can_run("sim", {"hardware": ["rocm", "cuda"]}, w)
    assert matching.unmet("sim", {"hardware": "tpu"}, w) == ["hardware=tpu"]


def test_min_memory_and_equality():
    w = worker("w", memory_gb=16, gpu_model="A100", gpu_count=2)
    assert matching.can_run("sim", {"min_memory_gb": 16, "gpu_model": "a100", "gpu_count": "2"}, w)
    assert matching.unmet("sim", {"min_memory_gb": 32, "gpu_model": "H100"}, w) == [
        "min_memory_gb=32",
        "gpu_model=H100",
    ]
    assert matching.unmet("pytest", {}, w) == ["plugin=pytest"]


def test_explain_names_each_requirement():
    workers = [worker("a", memory_gb=8), worker("b", hardware=("cpu", "cuda"), memory_gb=4)]
    reasons = matching.explain("sim", {"hardware": "tpu", "min_memory_gb": 64}, workers)
    assert reasons == [
        "requires.hardware=tpu: no live worker has it (fleet has: cpu, cuda)",
        "requires.min_memory_gb=64: largest live worker has 8 GB",
    ]
    both = matching.explain("sim", {"hardware": "cuda", "min_memory_gb": 8}, workers)
    assert "no single worker meets all" in both[0]
    assert matching.explain("sim", {}, []) == ["no live workers are registered"]


def test_priority_then_submit_order():
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded())
    for t in [task("low", 0, 0), task("high", 1, 10), task("mid", 2, 5), task("high2", 3, 10)]:
        sched.enqueue(t)
    registry.add(worker("w", slots=4))
    placed = [t.name for t, _ in sched.place()]
    assert placed == ["high", "high2", "mid", "low"]


def test_capability_routing_and_blocked_tasks_wait():
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded())
    registry.add(worker("cpu1", slots=2))
    registry.add(worker("gpu1", hardware=("cpu", "cuda"), slots=1))
    gpu_task, tpu_task = task("g", 0, hardware="cuda"), task("t", 1, hardware="tpu")
    sched.enqueue(gpu_task)
    sched.enqueue(tpu_task)
    placed = sched.place()
    assert [(t.name, w.worker_id) for t, w in placed] == [("g", "gpu1")]
    assert sched.why_queued(tpu_task) == ["requires.hardware=tpu: no live worker has it (fleet has: cpu, cuda)"]
    assert sched.why_queued(gpu_task) == []


def test_blocked_lists_each_unmet_requirement_with_its_reasons_and_count():
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded())
    registry.add(worker("cpu1", slots=1))
    for seq in range(3):
        sched.enqueue(task("t", seq, hardware="tpu"))
    sched.enqueue(task("typo", 3, plugin="shel"))
    sched.enqueue(task("fine", 4))
    sched.enqueue(task("fine", 5))  # waits for a slot only: not blocked
    assert sched.place() and len(sched.queue) == 5
    assert sorted(sched.blocked(), key=lambda b: b["tasks"]) == [
        {
            "requirement": "plugin=shel",
            "tasks": 1,
            "reasons": ["plugin=shel: no live worker has it (fleet has: shell, sim)"],
        },
        {
            "requirement": "plugin=sim, hardware=tpu",
            "tasks": 3,
            "reasons": ["requires.hardware=tpu: no live worker has it (fleet has: cpu)"],
        },
    ]
    registry.add(worker("tpu1", hardware=("tpu",)))
    assert [b["requirement"] for b in sched.blocked()] == ["plugin=shel"]


def test_no_placement_beyond_slots():
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded())
    registry.add(worker("w", slots=2))
    for i in range(5):
        sched.enqueue(task(f"t{i}", i))
    assert len(sched.place()) == 2
    assert sched.place() == []


def test_least_loaded_prefers_idle_and_alternates():
    a, b = worker("a", slots=2), worker("b", slots=2)
    strategy = LeastLoaded()
    for w in (a, b):
        strategy.add_worker(w)
    a.inflight["x"] = 1
    assert strategy.choose(task("t", 0), [a, b]) is b
    a.inflight.clear()
    picks = [strategy.choose(task("t", i), [a, b]).worker_id for i in range(4)]
    assert picks in (["a", "b", "a", "b"], ["b", "a", "b", "a"])


def test_round_robin_deals_in_turn_and_waits_for_a_full_worker():
    ws = [worker(n) for n in "ab"] + [worker("c", hardware=("cpu", "cuda"))]
    strategy = RoundRobin()
    for w in ws:
        strategy.add_worker(w)
    picks = [strategy.choose(task("t", i), ws).worker_id for i in range(4)]
    assert picks == ["a", "b", "c", "a"]
    assert strategy.choose(task("t", 9), [ws[2]]) is None  # b's turn and b is full: wait
    assert strategy.choose(task("g", 10, hardware="cuda"), [ws[2]]).worker_id == "c"  # only c can


def test_strategies_load_by_entry_point():
    assert load("least_loaded").name == "least_loaded"
    with pytest.raises(LookupError, match="unknown strategy 'nope'"):
        load("nope")


def test_state_machine_rejects_illegal_moves():
    t = task("t", 0)
    t.move(TaskState.ASSIGNED)
    t.move(TaskState.RUNNING)
    t.move(TaskState.SUCCEEDED)
    assert t.state.final
    with pytest.raises(IllegalTransition):
        t.move(TaskState.QUEUED)


def test_an_attempt_a_worker_reported_is_never_handed_out_again():
    """Attempt numbers fence results: one a restarted broker's predecessor handed out (a worker
    reports it) is skipped, at once while queued, at the next requeue while in flight."""
    queued = task("q", 0)
    queued.skip_reported(1)
    assert (queued.attempt, queued.reported_attempt) == (2, 1)
    queued.skip_reported(1)  # the same report again (a burst of REGISTERs): no second skip
    assert queued.attempt == 2
    running = task("r", 1)
    running.move(TaskState.ASSIGNED)
    running.skip_reported(3)
    assert (running.attempt, running.reported_attempt) == (1, 3)  # the live attempt keeps its number


def test_registry_replaces_same_worker_id():
    registry = Registry()
    first = worker("w")
    registry.add(first)
    second = WorkerInfo("w", b"new-peer", {"hardware": ["cpu"]}, 1, frozenset({"sim"}))
    assert registry.add(second) is first
    assert registry.by_peer(b"w") is None and registry.by_peer(b"new-peer") is second
    assert len(registry) == 1


def test_waiting_low_priority_work_is_not_starved():
    """Aging: priority 0 that has waited 10 x aging seconds outranks priority 5 submitted now."""
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded())
    old = task("old-low", 0, priority=0)
    old.submitted_at -= 100  # waited 100 s, aging 10 s per level: effective priority 10
    sched.enqueue(old)
    for i in range(1, 4):
        sched.enqueue(task(f"new-high{i}", i, priority=5))
    registry.add(worker("w", slots=1))
    assert [t.name for t, _ in sched.place()] == ["old-low"]


def test_resources_are_placed_only_where_free_and_counted_until_the_task_leaves():
    registry = Registry()
    sched = Scheduler(registry, LeastLoaded(), prefetch=0)
    gpu = worker("gpu", slots=8)
    gpu.resources = {"gpus": 2}
    registry.add(gpu)
    tasks = [task("g", seq) for seq in range(4)]
    for t in tasks:
        t.resources = {"gpus": 1}
        sched.enqueue(t)
    sched.enqueue(task("cpu", 9))  # asks for none: only slots count
    placed = [t.name for t, _ in sched.place()]
    assert placed.count("g") == 2 and "cpu" in placed
    assert gpu.free_resources() == {"gpus": 0} and sched.place() == []
    del gpu.inflight[tasks[0].task_id]  # it ended (however: result, loss, steal): its GPU is free
    assert [t.task_id for t, _ in sched.place()] == [tasks[2].task_id]
    big = task("big", 10)
    big.resources = {"gpus": 3}
    assert sched.why_queued(big) == ["resources.gpus=3: the most any live worker has is 2"]
    assert matching.unmet("sim", {}, gpu, {"gpus": 3}) == ["resources.gpus=3"]
