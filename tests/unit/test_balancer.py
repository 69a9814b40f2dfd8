"""Strategies, the task analyzer and steal selection on pure data."""

import pytest

from dtf_bus import config, defaults
from dtf_bus.balancer import load
from dtf_bus.balancer.affinity import Affinity
from dtf_bus.balancer.performance_based import PerformanceBased
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.stealing import WorkStealing
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.task import Task, TaskState

pytestmark = pytest.mark.unit


def worker(worker_id, speed=1.0, slots=1, prefetch=0, hardware=("cpu",)):
    w = WorkerInfo(worker_id, worker_id.encode(), {"hardware": list(hardware), "speed": speed}, slots,
                   frozenset({"sim"}), prefetch=prefetch)  # fmt: skip
    return w


def task(name, seq=0, seconds=None, **params):
    if seconds is not None:
        params["seconds"] = seconds
    return Task(f"j.{seq}", "j", name, "sim", params, {}, 0, None, 0, seq)


def test_durations_learns_and_falls_back():
    h = Durations(alpha=0.5)
    fast, slow, new = worker("fast", speed=4), worker("slow", speed=1), worker("new", speed=2)
    assert h.estimate(slow, task("build", seconds=8)) == 8.0  # sim param / speed
    assert h.estimate(fast, task("build", seconds=8)) == 2.0
    assert h.estimate(slow, task("other")) == 1.0  # nothing known: the default
    h.record(fast, task("unit[0]"), 2.0)
    h.record(fast, task("unit[1]"), 4.0)  # ewma 3.0, and [i] copies share a key
    assert task("unit[7]").key == "unit"
    assert h.estimate(fast, task("unit[9]")) == 3.0
    assert h.estimate(new, task("unit[9]")) == 6.0  # seen on fast (speed 4) only: scaled to speed 2
    assert h.best(task("unit[2]"), [fast, slow]) == 3.0 and h.best(task("zzz"), [fast]) is None


def test_durations_persists_through_load():
    h = Durations()
    h.load([("w1", "sim", "unit", 2.5, 10)], speeds={"w1": 1.0})
    assert h.estimate(worker("w1"), task("unit[0]")) == 2.5
    assert h.estimate(worker("w2", speed=2), task("unit[0]")) == 1.25


def test_performance_based_prefers_fast_worker_until_its_backlog_says_otherwise():
    h = Durations()
    strategy = PerformanceBased(history=h)
    fast, slow = worker("fast", speed=4, prefetch=4), worker("slow", speed=1)
    for w in (fast, slow):
        strategy.add_worker(w)
    picks = []
    for i in range(6):
        t = task(f"t{i}", i, seconds=4)
        chosen = strategy.choose(t, [fast, slow])
        chosen.inflight[t.task_id] = 1
        picks.append(chosen.worker_id)
    # fast finishes a 4 s task in 1 s: it takes four before idle slow (4 s) is as good.
    assert picks[:4] == ["fast"] * 4 and "slow" in picks[4:]


def test_performance_based_keeps_a_task_for_a_full_worker_that_would_finish_it_sooner():
    strategy = PerformanceBased(history=Durations())
    fast, slow = worker("fast", speed=4, prefetch=1), worker("slow", speed=1, prefetch=2)
    for w in (fast, slow):
        strategy.add_worker(w)
    for i, w in enumerate((fast, fast, slow)):  # fast: one running, one queued; slow: one running
        assert strategy.choose(task(f"t{i}", i, seconds=4), [w]) is w
        w.inflight[f"j.{i}"] = 1
    assert fast.free_slots == 0 and slow.idle_slots == 0 and slow.free_slots > 0
    # On slow it would wait 4 s, then take 4 s; fast, though full, finishes it in 3 s.
    assert strategy.choose(task("long", 3, seconds=4), [slow]) is None
    # Short ones too: 2 s of backlog + 0.125 s on fast against 4 s + 0.5 s on slow.
    assert strategy.choose(task("short", 4, seconds=0.5), [slow]) is None
    # Once fast's backlog is longer than slow's wait, slow takes it.
    fast.inflight.update({"j.8": 1, "j.9": 1})
    strategy._held["fast"].update({"j.8": 4.0, "j.9": 4.0})
    assert strategy.choose(task("later", 5, seconds=4), [slow]) is slow
    # An idle slot is never left for a full worker: a task that would start now is placed.
    idle = worker("idle", speed=1)
    strategy.add_worker(idle)
    assert strategy.choose(task("now", 6, seconds=4), [idle]) is idle
    # Only workers that can run it count: a full cuda-only worker does not hold back a cpu task.
    strategy.remove_worker("fast")
    gpu = worker("gpu", speed=4, hardware=("cuda",))
    strategy.add_worker(gpu)
    gpu.inflight["j.10"] = 1
    cpu_task = Task("j.7", "j", "cpu", "sim", {"seconds": 4}, {"hardware": "cpu"}, 0, None, 0, 7)
    assert gpu.free_slots == 0 and strategy.choose(cpu_task, [slow]) is slow


def test_affinity_is_sticky_but_never_waits():
    strategy = Affinity()
    a, b = worker("a", slots=2), worker("b", slots=2)
    for w in (a, b):
        strategy.add_worker(w)
    first = strategy.choose(task("x", 0, affinity="resnet"), [a, b])
    first.inflight["j.0"] = 1
    assert strategy.choose(task("y", 1, affinity="resnet"), [a, b]) is first
    other = b if first is a else a
    assert strategy.choose(task("z", 2, affinity="resnet"), [other]) is other  # home full: elsewhere
    strategy.remove_worker(first.worker_id)
    assert strategy.choose(task("w", 3, affinity="resnet"), [a, b]) is not None


def test_all_strategies_load_by_name_with_history():
    h = Durations()
    for name in ("round_robin", "least_loaded", "performance_based", "affinity"):
        assert load(name, h).name == name
    assert load("performance_based", h).history is h


def test_steal_moves_a_prefetched_task_to_an_idle_faster_worker():
    registry = Registry()
    h = Durations()
    sched = Scheduler(registry, PerformanceBased(history=h), h)
    stealing = WorkStealing(sched)
    busy = worker("busy", speed=1, slots=1, prefetch=3)
    registry.add(busy)
    tasks = {}
    for i in range(4):
        t = task(f"t{i}", i, seconds=2)
        sched.enqueue(t)
        tasks[t.task_id] = t
    for t, _ in sched.place():
        t.state = TaskState.ASSIGNED
    tasks["j.0"].state = TaskState.RUNNING  # the one it started
    assert len(busy.inflight) == 4
    assert stealing.candidates(tasks) == []  # no idle worker yet
    idle = worker("idle", speed=2, slots=2)
    registry.add(idle)
    moves = stealing.candidates(tasks)
    assert [(t.task_id, f.worker_id, to.worker_id) for t, f, to in moves] == [
        ("j.3", "busy", "idle"),
        ("j.2", "busy", "idle"),
    ]
    assert stealing.candidates(tasks) == []  # already asked for: not asked twice
    stealing.done(moves[0][0], idle)
    assert sched.stats()["steals"] == 1


def test_steal_leaves_a_task_whose_attempt_a_worker_reported():
    """After a broker restart a worker may still hold (cancelled, winding down) the attempt
    number a task runs under here, handed out by the dead broker: moved to that worker under the
    same number, the cancelled run's result would count. Such a task stays with its holder."""
    registry = Registry()
    h = Durations()
    sched = Scheduler(registry, PerformanceBased(history=h), h)
    stealing = WorkStealing(sched)
    busy = worker("busy", slots=1, prefetch=1)
    registry.add(busy)
    tasks = {}
    for i in range(2):
        t = task(f"t{i}", i, seconds=2)
        sched.enqueue(t)
        tasks[t.task_id] = t
    for t, _ in sched.place():
        t.state = TaskState.ASSIGNED
    tasks["j.0"].state = TaskState.RUNNING
    registry.add(worker("idle", speed=2))
    tasks["j.1"].reported_attempt = tasks["j.1"].attempt
    assert stealing.candidates(tasks) == []
    tasks["j.1"].reported_attempt = 0
    assert [t.task_id for t, _, _ in stealing.candidates(tasks)] == ["j.1"]


def test_auto_prefetch_follows_task_durations():
    registry = Registry()
    auto = Scheduler(registry, load("least_loaded"), prefetch=None)
    fixed = Scheduler(registry, load("least_loaded"), prefetch=3)
    assert auto.initial_prefetch == 1 and fixed.initial_prefetch == 3
    w, f = worker("w", prefetch=auto.initial_prefetch), worker("f", prefetch=3)
    for i in range(20):  # a stream of 0.1 ms tasks: the round trip would dominate, so queue more
        auto.task_done(task(f"short[{i}]"), w, 0.0001)
        fixed.task_done(task(f"short[{i}]"), f, 0.0001)
    assert w.prefetch == defaults.PREFETCH_MAX
    assert f.prefetch == 3  # a fixed --prefetch is left alone
    for i in range(20):  # tasks of seconds: one queued is plenty, more would be hoarding
        auto.task_done(task(f"long[{i}]"), w, 2.0)
    assert w.prefetch == 1


def test_prefetch_setting_is_auto_or_a_count():
    assert config.prefetch(None) is None and config.prefetch("auto") is None
    assert config.prefetch(4) == 4 and config.prefetch("0") == 0
    for bad in (-1, "lots", True, 1.5):
        with pytest.raises(config.ConfigError, match="prefetch must be auto or an integer"):
            config.prefetch(bad)


def test_placement_and_steal_rounds_are_bounded():
    """A round never does more than its bound, however much could be placed or stolen: the
    broker's loop must get back to reading heartbeats."""
    registry = Registry()
    sched = Scheduler(registry, load("least_loaded"), prefetch=20)
    for i in range(5):
        registry.add(worker(f"w{i}", prefetch=20))
    for i in range(200):
        sched.enqueue(task(f"t[{i}]", seq=i))
    first = sched.place(limit=30)
    assert len(first) == 30 and len(sched.queue) == 170
    second = sched.place(limit=1000)
    assert len(second) == 5 * 21 - 30  # then up to the free capacity
    tasks = {t.task_id: t for t, _ in first + second}
    for t in tasks.values():
        t.state = TaskState.ASSIGNED
    for i in range(100):  # idle thieves galore: the moves asked for in one look stay bounded
        registry.add(worker(f"idle{i}", speed=4))
    assert 0 < len(WorkStealing(sched).candidates(tasks)) <= defaults.STEAL_MAX_MOVES


def test_large_fleets_show_sampled_strategies_a_few_candidates():
    """Least load among a random PLACE_SAMPLE (the power of d choices) keeps placement O(1) in
    the fleet size; strict strategies (round_robin) still see every free worker."""
    seen: dict[str, list[int]] = {"least_loaded": [], "round_robin": []}
    for name, sizes in seen.items():
        registry = Registry()
        strategy = load(name)
        sched = Scheduler(registry, strategy, prefetch=0)
        for i in range(100):
            w = worker(f"w{i}")
            registry.add(w)
            strategy.add_worker(w)
        choose = strategy.choose
        strategy.choose = lambda task, candidates, choose=choose, sizes=sizes: (
            sizes.append(len(candidates)) or choose(task, candidates)
        )
        for i in range(100):
            sched.enqueue(task(f"t[{i}]", seq=i))
        placed = sched.place(limit=100)
        assert len({w.worker_id for _, w in placed}) == 100  # one task per worker, each full after it
    assert max(seen["least_loaded"]) == defaults.PLACE_SAMPLE
    assert seen["round_robin"][:3] == [100, 99, 98]  # every free worker, the full ones pruned
