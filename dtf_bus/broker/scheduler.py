"""Placement: match queued tasks to workers with free capacity, through the chosen strategy.

The broker calls :meth:`Scheduler.place` once per batch of messages; it returns the
assignments to send. Which workers can run which requirement key is cached until the
registry changes, so a placement costs one look at each key's head, not a queue scan.

Work stealing, which moves prefetched tasks between workers, is an extension of its own:
:mod:`dtf_bus.broker.stealing`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from dtf_bus import defaults, resources
from dtf_bus.balancer import Strategy
from dtf_bus.broker import matching
from dtf_bus.broker.queue import TaskQueue
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.task import Task


class Scheduler:
    def __init__(
        self,
        registry: Registry,
        strategy: Strategy,
        history: Durations | None = None,
        prefetch: int | None = defaults.PREFETCH,
    ) -> None:
        self.registry = registry
        self.strategy = strategy
        self.history = history or Durations()
        self.prefetch = prefetch  # None: auto, sized per worker by _adapt_prefetch
        self.queue = TaskQueue()
        self._capable: dict[str, list[WorkerInfo]] = {}
        self._capable_version = -1
        # Decision counters, served to the monitoring API.
        self.assignments: Counter[str] = Counter()
        self.steal_count = 0
        self._wait_total = 0.0
        self._wait_count = 0
        self._efficiency_total = 0.0
        self._efficiency_count = 0
        self._best: dict[tuple[str, str, str], tuple[float, float]] = {}  # kind -> (best, when)

    def enqueue(self, task: Task) -> None:
        task.queued_at = time.time()
        self.queue.push(matching.requirement_key(task.plugin, task.requires, task.resources), task)

    def capable(self, key: str, task: Task) -> list[WorkerInfo]:
        if self._capable_version != self.registry.version:
            self._capable.clear()
            self._capable_version = self.registry.version
        workers = self._capable.get(key)
        if workers is None:
            workers = [w for w in self.registry if matching.can_run(task.plugin, task.requires, w, task.resources)]
            self._capable[key] = workers
        return workers

    def place(self, limit: int = defaults.PLACE_BATCH) -> list[tuple[Task, WorkerInfo]]:
        """Assign queued tasks to free capable capacity, best task first, at most ``limit``
        (the caller asks again when it got that many)."""
        placements: list[tuple[Task, WorkerInfo]] = []
        free = min(self.registry.free_slots(), limit)
        now = time.time()
        deferred: set[str] = set()  # keys whose head the strategy chose to hold back this round
        # Per key, the capable workers with room: listed once a round, a worker dropped when it fills.
        room: dict[str, list[WorkerInfo]] = {}
        sampled = getattr(self.strategy, "sampled", False)
        while free > 0 and len(self.queue):
            for key, task in self.queue.heads():
                if key in deferred:
                    continue
                candidates = room.get(key)
                if candidates is None:
                    candidates = room[key] = [w for w in self.capable(key, task) if w.free_slots > 0]
                if candidates and task.resources:  # what they hold changes with each placement
                    candidates = [w for w in candidates if resources.fits(task.resources, w.free_resources())]
                    if not candidates:  # nothing frees up within a round: not looked at again in it
                        deferred.add(key)
                if candidates:
                    break
            else:
                return placements  # nothing queued can run on any free slot
            if sampled and len(candidates) > defaults.PLACE_SAMPLE:
                # The power of d choices: the best of a random few is nearly as good as the best
                # of all, and keeps a placement O(1) in the size of the fleet.
                worker = self.strategy.choose(task, random.sample(candidates, defaults.PLACE_SAMPLE))
            else:
                worker = self.strategy.choose(task, candidates)
            if worker is None:
                deferred.add(key)
                continue
            self.queue.pop(key)
            worker.take(task.task_id, task.attempt, task.resources)
            if worker.free_slots <= 0:
                for listed in room.values():
                    if worker in listed:
                        listed.remove(worker)
            placements.append((task, worker))
            self.assignments[worker.worker_id] += 1
            self._wait_total += now - task.queued_at
            self._wait_count += 1
            free -= 1
        return placements

    def task_done(self, task: Task, worker: WorkerInfo, duration: float) -> None:
        best = self._best_known(task)
        self.history.record(worker, task, duration)
        self.strategy.task_done(task, worker, duration)
        if self.prefetch is None:
            self._adapt_prefetch(worker)
        if best is not None and duration > 0:
            self._efficiency_total += min(best / duration, 1.0)
            self._efficiency_count += 1

    def _best_known(self, task: Task) -> float | None:
        """The best duration learned for this kind of task among the workers that can run it:
        a scan of the fleet, so refreshed once per EFFICIENCY_REFRESH per kind, not per task."""
        rkey = matching.requirement_key(task.plugin, task.requires, task.resources)
        cache_key = (task.plugin, task.key, rkey)
        now = time.monotonic()
        cached = self._best.get(cache_key)
        if cached is not None and now - cached[1] < defaults.EFFICIENCY_REFRESH:
            return cached[0]
        if len(self._best) >= 10_000:  # many kinds (a test per task): forget the old ones
            self._best.clear()
        best = self.history.best(task, self.capable(rkey, task))
        if best is not None:  # nothing learned yet: ask again next time
            self._best[cache_key] = (best, now)
        return best

    @property
    def initial_prefetch(self) -> int:
        """A newly registered worker's prefetch: auto starts at 1 until durations are known."""
        return 1 if self.prefetch is None else self.prefetch

    def _adapt_prefetch(self, worker: WorkerInfo) -> None:
        """Auto prefetch: queue enough on the worker to cover PREFETCH_COVER seconds of its
        recent task durations (a round trip on a busy LAN), between 1 and PREFETCH_MAX. Called
        after task_done() taught the model, so the worker's mean is known."""
        mean = self.history.worker_mean(worker.worker_id) or 0.0
        per_slot = defaults.PREFETCH_COVER / max(mean, 1e-6)
        worker.prefetch = max(1, min(defaults.PREFETCH_MAX, round(per_slot * worker.slots)))

    def why_queued(self, task: Task) -> list[str]:
        """Reasons a queued task cannot be placed; empty when it only waits for a free slot."""
        key = matching.requirement_key(task.plugin, task.requires, task.resources)
        if self.capable(key, task):
            return []
        return matching.explain(task.plugin, task.requires, self.registry, task.resources)

    def blocked(self) -> list[dict[str, Any]]:
        """Queued work no live worker can run, per requirement key, with the reasons: what the
        dashboard shows instead of a drain estimate. O(keys), so it can run every tick."""
        found = []
        for key, task in self.queue.heads():
            if not self.capable(key, task):
                reasons = matching.explain(task.plugin, task.requires, self.registry, task.resources)
                what = ", ".join(
                    [
                        f"plugin={task.plugin}",
                        *(f"{k}={v}" for k, v in sorted(task.requires.items())),
                        *(f"resources.{k}={v}" for k, v in sorted(task.resources.items())),
                    ]
                )
                found.append({"requirement": what, "tasks": self.queue.size(key), "reasons": reasons})
        return found

    def count_steal(self, thief: WorkerInfo) -> None:
        """A steal succeeded (:mod:`dtf_bus.broker.stealing`): counted as the thief's assignment."""
        self.steal_count += 1
        self.assignments[thief.worker_id] += 1

    # ---------------------------------------------------------- observability

    def stats(self) -> dict[str, Any]:
        workers = list(self.registry)
        slots = sum(w.slots for w in workers)
        running = sum(min(len(w.inflight), w.slots) for w in workers)
        return {
            "strategy": self.strategy.name,
            "assignments": dict(self.assignments),
            "steals": self.steal_count,
            "queued": len(self.queue),
            "avg_queue_wait_s": self._wait_total / self._wait_count if self._wait_count else 0.0,
            "utilisation": running / slots if slots else 0.0,
            "assignment_efficiency": (
                self._efficiency_total / self._efficiency_count if self._efficiency_count else None
            ),
        }
