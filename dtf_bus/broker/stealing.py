"""Work stealing: move prefetched, unstarted tasks from a busy worker to an idle one.

A worker may hold ``slots + prefetch`` tasks; the ones beyond its slots wait on it, not
started. When another capable worker sits idle and would finish such a task sooner, the
broker asks the holder to give it up (STEAL) and, on its STEAL_ACK, assigns it to the thief
under the same attempt number. Two phases, because only the holder knows whether it has
started the task. One extension owns all of it (dask's stealing.py idea): the asks in flight,
the choice of moves, the STEAL_ACK handler, and noticing a steal a task's progress outran.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from dtf_bus import defaults, events, protocol, resources
from dtf_bus.broker import matching
from dtf_bus.broker.instructions import StealRound
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.state import BrokerState
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Task, TaskState

log = logging.getLogger("dtf.broker")


class WorkStealing:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.in_flight: dict[str, tuple[str, int]] = {}  # task id -> (thief id, attempt) asked for
        self.state: BrokerState | None = None

    def attach(self, state: BrokerState) -> None:
        """Serve ``state``: its STEAL_ACK messages, its steal rounds, its tasks' state changes."""
        self.state = state
        state.handlers[protocol.STEAL_ACK] = self._on_steal_ack
        state.on(StealRound, self._steal)
        state.move_listeners.append(self._outran)

    # ---------------------------------------------------------------- choice

    def candidates(self, tasks: Mapping[str, Task]) -> list[tuple[Task, WorkerInfo, WorkerInfo]]:
        """(task, holder, thief) moves worth asking for, each noted as in flight: idle thieves,
        prefetched tasks."""
        registry, history = self.scheduler.registry, self.scheduler.history
        # Only workers holding prefetched tasks can be stolen from; finding them first keeps an
        # idle fleet at O(workers) per look instead of O(workers^2) (2,000 idle workers: 80 % of
        # a core, bench/scale.py).
        holders = [w for w in registry if len(w.inflight) > w.slots]
        if not holders:
            return []
        promised = Counter(thief for thief, _ in self.in_flight.values())
        thieves = [w for w in registry if w.idle_slots > promised[w.worker_id]]
        if not thieves:
            return []
        # Bounded, so a large fleet's look stays short: the longest backlogs, a few moves a time.
        if len(holders) > defaults.STEAL_MAX_HOLDERS:
            holders.sort(key=lambda w: len(w.inflight) - w.slots, reverse=True)
            del holders[defaults.STEAL_MAX_HOLDERS :]
        moves: list[tuple[Task, WorkerInfo, WorkerInfo]] = []
        for thief in thieves:
            if len(moves) >= defaults.STEAL_MAX_MOVES:
                break
            for _ in range(thief.idle_slots - promised[thief.worker_id]):
                best: tuple[float, Task, WorkerInfo] | None = None
                for holder in holders:
                    if holder is thief:
                        continue
                    candidate = self._stealable(holder, thief, tasks, history)
                    if candidate is not None and (best is None or candidate[0] > best[0]):
                        best = (candidate[0], candidate[1], holder)
                if best is None or len(moves) >= defaults.STEAL_MAX_MOVES:
                    break
                _, task, holder = best
                self.in_flight[task.task_id] = (thief.worker_id, task.attempt)
                moves.append((task, holder, thief))
        return moves

    def _stealable(
        self, holder: WorkerInfo, thief: WorkerInfo, tasks: Mapping[str, Task], history: Any
    ) -> tuple[float, Task] | None:
        """The task the holder would start last, if the thief would finish it sooner."""
        held = [tasks[t] for t in holder.inflight if t in tasks]
        for task in reversed(held):  # most recently assigned waits longest
            if (
                task.state is not TaskState.ASSIGNED
                or task.task_id in self.in_flight
                or task.attempt <= task.reported_attempt  # a thief may hold this number from a dead broker
                or not matching.can_run(task.plugin, task.requires, thief, task.resources)
                or (task.resources and not resources.fits(task.resources, thief.free_resources()))
            ):
                continue
            ahead = sum(history.estimate(holder, t) for t in held if t is not task)
            holder_finish = ahead / holder.slots + history.estimate(holder, task)
            thief_finish = history.estimate(thief, task)
            if thief_finish < holder_finish:
                return holder_finish - thief_finish, task
            return None
        return None

    def done(self, task: Task, thief: WorkerInfo | None) -> None:
        """The ask is over; ``thief`` is None when the task stays (or had started)."""
        self.in_flight.pop(task.task_id, None)
        if thief is not None:
            self.scheduler.count_steal(thief)

    # -------------------------------------------------------------- protocol

    def _steal(self, event: StealRound) -> None:
        """Phase 1: ask holders to give up prefetched tasks an idle worker would finish sooner."""
        state = self.state
        for task, holder, _thief in self.candidates(state.tasks):
            state.send(holder.peer, protocol.STEAL, {"task_id": task.task_id, "attempt": task.attempt})

    def _outran(self, task: Task) -> None:
        """A task changing state before its holder answered: the ask is moot."""
        if task.task_id in self.in_flight:
            self.done(task, None)

    def _on_steal_ack(self, peer: bytes, body: dict[str, Any]) -> None:
        """Phase 2: the holder gave the task up (it had not started it), or it had started."""
        state = self.state
        holder = state.registry.by_peer(peer)
        asked = self.in_flight.pop(body["task_id"], None)
        task = state.tasks.get(body["task_id"])
        if asked is None or task is None:
            return
        thief = state.registry.get(asked[0])
        if not body["ok"] or state.current(holder, task.task_id, body["attempt"]) is None:
            self.done(task, None)
            return
        holder.inflight.pop(task.task_id, None)
        if (
            thief is None
            or thief.state != "alive"
            or (task.resources and not resources.fits(task.resources, thief.free_resources()))
        ):
            self.done(task, None)
            # The thief left, or what the task needs was taken on it meanwhile (a placement or
            # another steal since the ask): the attempt never started anywhere.
            state.requeue(task)
            return
        now = state.wall
        task.worker_id = thief.worker_id
        task.assigned_at = now
        record = task.history[-1]
        record.worker_id = thief.worker_id
        record.assigned_at = now
        thief.take(task.task_id, task.attempt, task.resources)
        self.done(task, thief)
        state.send_assign(thief, [task])
        state.store_attempt(task, record)
        state.store_task(task)
        state.publish(
            events.TASK,
            {"event": "stolen", "task_id": task.task_id, "from": holder.worker_id, "worker_id": thief.worker_id},
        )
        log.debug("task %s stolen from %s by %s", task.task_id, holder.worker_id, thief.worker_id)
