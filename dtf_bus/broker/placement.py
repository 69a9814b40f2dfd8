"""Placement on the broker: turn the scheduler's choices into attempts and ASSIGN messages,
and fail tasks that no live worker took within their ``placement_timeout``.

A state-machine extension (:mod:`dtf_bus.broker.state`). Which task goes to which worker is the
scheduler's business (:mod:`dtf_bus.broker.scheduler`, :mod:`dtf_bus.balancer`); this module
records the decision (a new attempt, fenced by its number) and sends it, once per loop turn.
"""

from __future__ import annotations

from dtf_bus import defaults
from dtf_bus.broker.instructions import LoopTurn, Tick
from dtf_bus.broker.state import BrokerState
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.task import Attempt, Task, TaskState


class Placement:
    def __init__(self, state: BrokerState) -> None:
        """Register after the other extensions: placement comes last in a loop turn."""
        self.state = state
        state.on(LoopTurn, self._place_if_due)
        state.on(Tick, self._expire_unplaceable)

    def _place_if_due(self, turn: LoopTurn) -> None:
        """Once per loop turn, after the frames read: place if anything changed since."""
        if self.state.placement_due:
            self.place()

    def place(self) -> None:
        """Assign what the scheduler places; each worker gets its share in one ASSIGN."""
        state = self.state
        state.placement_due = False
        batches: dict[str, tuple[WorkerInfo, list[Task]]] = {}
        now = state.wall
        placed = state.scheduler.place()
        if len(placed) == defaults.PLACE_BATCH:
            state.placement_due = True  # more next time round, after reading what has arrived
        for task, worker in placed:
            task.worker_id = worker.worker_id
            task.assigned_at = now
            record = Attempt(task.attempt, worker.worker_id, now)
            task.history.append(record)
            state.move(task, TaskState.ASSIGNED)
            batches.setdefault(worker.worker_id, (worker, []))[1].append(task)
            state.store_attempt(task, record)
            state.store_task(task)
        for worker, tasks in batches.values():
            state.send_assign(worker, tasks)

    def _expire_unplaceable(self, tick: Tick) -> None:
        """Tasks with a placement_timeout that no live worker could take in time end failed."""
        state = self.state
        for task_id, deadline in list(state.placement_deadlines.items()):
            task = state.tasks.get(task_id)
            if task is None or task.state is not TaskState.QUEUED:
                del state.placement_deadlines[task_id]  # placed (or over): the deadline is met
            elif state.now >= deadline and not task.waiting_on:
                reasons = state.scheduler.why_queued(task)
                if reasons:
                    del state.placement_deadlines[task_id]
                    state.finish(
                        task,
                        TaskState.FAILED,
                        None,
                        error=f"not placed within {task.placement_timeout:g}s: {'; '.join(reasons)}",
                    )
