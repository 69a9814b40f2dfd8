"""What the broker's state owes its store: restore at start, durable replies, refused rows,
and releasing finished jobs from memory once DuckDB holds them.

A state-machine extension (:mod:`dtf_bus.broker.state`). Durability rule: anything the broker
acknowledges (a submitted job, a worker's result, a finished job to a waiting client) is
committed to DuckDB first. Such replies wait in the state's outbox, are sealed with a store
mark at the end of each batch (:class:`BatchDone`) and sent once the store's writer reports that
mark committed (:class:`StoreCommitted`).
"""

from __future__ import annotations

import itertools
import logging

from dtf_bus import defaults, events, memory, protocol
from dtf_bus.broker.instructions import Archived, BatchDone, StoreCommitted, Tick
from dtf_bus.broker.state import BrokerState, Reply
from dtf_bus.store import recovery
from dtf_bus.store.db import StoreFailure
from dtf_bus.task import Job, Task, TaskState

log = logging.getLogger("dtf.broker")


class Persistence:
    def __init__(self, state: BrokerState) -> None:
        self.state = state
        state.on(Tick, self._release_finished)
        state.on(BatchDone, self._seal_batch)
        state.on(StoreCommitted, self._release_durable)
        state.on(Archived, self._archived)

    # ---------------------------------------------------------------- restore

    def restore(self, now: float, wall: float, bindings_grace: bool) -> float | None:
        """Resume from the database: unfinished jobs come back as they were committed. Returns
        when worker ids bound before the restart are released (``bindings_grace``: CURVE on)."""
        state = self.state
        state.now, state.wall = now, wall
        cursor = state.store.cursor()
        state.seq = itertools.count(recovery.next_seq(cursor))
        state.history.load(recovery.load_durations(cursor))
        bindings_due = None
        if bindings_grace:
            state.guard.bindings.update(recovery.load_worker_keys(cursor))
            # A bound worker that died while we were down is never removed as dead: release
            # its id if it has not registered by the time a silent worker would be dead.
            bindings_due = now + state.health.interval * state.health.dead_liveness
        jobs, tasks = recovery.load_unfinished(cursor)
        self.adopt(jobs, tasks)
        grace = state.health.return_grace
        state.orphans_deadline = now + grace
        for task in tasks:
            if task.state is TaskState.QUEUED:
                state.track_dependencies(task)
                if task.placement_timeout is not None:  # the same deadline, counted from its submit
                    left = task.submitted_at + task.placement_timeout - wall
                    state.placement_deadlines[task.task_id] = now + max(left, 0.0)
            elif task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                state.orphans.setdefault(task.worker_id, {})[task.task_id] = task.attempt
        if tasks:
            log.info(
                "restored %d unfinished job(s): %d queued, %d waiting %.1fs for their workers to return",
                len(jobs),
                state.state_counts[TaskState.QUEUED],
                sum(len(v) for v in state.orphans.values()),
                grace,
            )
            state.placement_due = True
        return bindings_due

    def adopt(self, jobs: list[Job], tasks: list[Task], count: bool = True) -> None:
        """Jobs read from DuckDB (a restart, or the archive) join those in memory."""
        state = self.state
        for job in jobs:
            state.jobs[job.job_id] = job
            state.summaries.pop(job.job_id, None)  # in memory again: answered from the job itself
            if job.done:
                state.finished_jobs.append((state.now + state.finished_job_ttl, job.job_id, 0))
        for task in tasks:
            state.tasks[task.task_id] = task
            if task.state.final:
                state.jobs[task.job_id].finished.append(task.task_id)  # in finish order below: follow's cursor
            if count:
                state.state_counts[task.state] += 1
                if not task.state.final:
                    state.live_by_submitter[state.jobs[task.job_id].submitter] += 1
        for job in jobs:
            job.finished.sort(key=lambda task_id: state.tasks[task_id].ended_at or 0.0)

    def _archived(self, event: Archived) -> None:
        """Jobs the archive thread read back: adopt each (released again after the TTL) and
        answer the request that wanted it, as if the job had been in memory all along."""
        state = self.state
        for loaded in event.loaded:
            if loaded.error is not None:
                state.send(loaded.peer, protocol.ERROR, {"req": loaded.body.get("req"), "error": loaded.error})
                continue
            if not loaded.kind:  # a plain read: its value is the answer
                state.reply(loaded.peer, loaded.body, loaded.reply)
                continue
            job_id = loaded.body["job_id"]
            if job_id not in state.jobs:
                if not loaded.jobs:
                    error = f"unknown job {job_id!r}"
                    state.send(loaded.peer, protocol.ERROR, {"req": loaded.body.get("req"), "error": error})
                    continue
                self.adopt(loaded.jobs, loaded.tasks, count=False)
            state.dispatch(loaded.peer, loaded.kind, loaded.body, deferred=True)

    def _release_finished(self, event: Tick) -> None:
        """Forget jobs finished over finished_job_ttl ago: DuckDB holds them, and a job of
        100,000 tasks must not pin its memory for the broker's life."""
        state = self.state
        released = 0
        durable = state.durable_seen
        while state.finished_jobs and state.finished_jobs[0][0] <= state.now and state.finished_jobs[0][2] <= durable:
            job = state.jobs.pop(state.finished_jobs.popleft()[1], None)
            if job is None:
                continue
            # Its status stays answerable from memory (a few hundred bytes), its tasks do not.
            state.summaries[job.job_id] = state.job_status(job)
            if len(state.summaries) > defaults.JOB_SUMMARIES_KEPT:
                state.summaries.popitem(last=False)
            for task_id in job.task_ids:
                state.tasks.pop(task_id, None)
            released += len(job.task_ids)
            state.hook("on_job_released", job)
        if released >= defaults.TRIM_AFTER_TASKS:
            memory.trim()

    # ------------------------------------------------------------ durability

    def _seal_batch(self, event: BatchDone) -> None:
        state = self.state
        if state.awaiting or state.acks:
            state.unreleased.append((state.store.mark(state.awaiting_urgent), state.awaiting, state.acks))
            state.awaiting, state.acks, state.awaiting_urgent = [], {}, False

    def _release_durable(self, event: StoreCommitted) -> None:
        state = self.state
        durable, refused = state.store.durable()  # refused rows first: never acknowledged
        if refused:
            self._unstored(refused)
        state.durable_seen = durable  # what finished jobs may be released against (refusals handled)
        while state.unreleased and state.unreleased[0][0] <= durable:
            _, replies, acks = state.unreleased.popleft()
            for peer, kind, body in replies:
                state.send(peer, kind, body)
            for peer, results in acks.items():
                if results:
                    state.send(peer, protocol.RESULT_ACK, {"acks": results})

    def _unstored(self, refused: list[StoreFailure]) -> None:
        """Rows DuckDB refused (the store logged which and why): their tasks fail with the
        store's error, and what waited on those rows waits for that failure to be committed
        instead (results' acks, job statuses), or is refused (the submit of a job whose row was
        refused): nothing is acknowledged that DuckDB does not hold. A task refused again once
        failed so is only logged; its result stays with its worker, unacknowledged."""
        state = self.state
        doomed: dict[str, tuple[str, int | None]] = {}  # task id -> (error, attempt whose row was refused)
        lost_jobs: dict[str, str] = {}
        for failure in refused:
            error = f"could not be stored: {failure.error}"
            if failure.table == "jobs" and failure.key[0] in state.jobs:
                lost_jobs[failure.key[0]] = error
                for task_id in state.jobs[failure.key[0]].task_ids:
                    doomed.setdefault(task_id, (error, None))
            elif failure.table in ("tasks", "attempts") and failure.key[0] in state.tasks:
                doomed.setdefault(failure.key[0], (error, failure.key[1] if failure.table == "attempts" else None))
        again = {t for t in doomed if (state.tasks[t].error or "").startswith("could not be stored")}
        for task_id, (error, attempt) in doomed.items():
            if task_id not in again:
                self._fail_unstored(state.tasks[task_id], error, attempt)
        affected = {state.tasks[t].job_id for t in doomed}
        state.awaiting[:] = [self._revise_reply(reply, affected, lost_jobs)[0] for reply in state.awaiting]
        for _, replies, acks in state.unreleased:
            for peer, results in acks.items():
                held = [r for r in results if r[0] in doomed]
                if held:
                    results[:] = [r for r in results if r[0] not in doomed]
                    state.acks.setdefault(peer, []).extend(r for r in held if r[0] not in again)
            kept = []
            for reply in replies:
                reply, hold = self._revise_reply(reply, affected, lost_jobs)
                (state.awaiting if hold else kept).append(reply)
            replies[:] = kept
        state.awaiting_urgent = True

    def _revise_reply(self, reply: Reply, affected: set[str], lost: dict[str, str]) -> tuple[Reply, bool]:
        """A pending reply about a job hit by refused rows: an error for a job whose own row was
        refused; a job status made afresh, and held (True) until the failures are committed."""
        peer, kind, body = reply
        data = body.get("data")
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if job_id in lost:
            return (peer, protocol.ERROR, {"req": body["req"], "error": f"job {job_id} {lost[job_id]}"}), False
        if job_id in affected and job_id in self.state.jobs and "counts" in data:
            return (peer, kind, {**body, "data": self.state.job_status(self.state.jobs[job_id])}), True
        return reply, False

    def _fail_unstored(self, task: Task, error: str, attempt: int | None) -> None:
        """Fail a task whose row, its job's or its current attempt's DuckDB refused. A refused
        attempt keeps no result, the likeliest cause, so that the failure itself can be stored;
        a refused row of a superseded attempt costs only that record."""
        state = self.state
        record = task.attempt_record(task.attempt if attempt is None else attempt)
        if record is not None and (attempt is not None or record.outcome == "assigned"):
            if attempt is not None:
                record.result = None
            record.outcome = "failed" if record.outcome in ("assigned", "succeeded") else record.outcome
            record.error, record.ended_at = error, record.ended_at or state.wall
            state.store_attempt(task, record)
        if attempt is not None and attempt != task.attempt:
            return
        if not task.state.final:
            worker = state.registry.get(task.worker_id) if task.worker_id else None
            if worker is not None and worker.inflight.pop(task.task_id, None) is not None:
                cancel = {"task_id": task.task_id, "attempt": task.attempt, "reason": error}
                state.send(worker.peer, protocol.CANCEL, cancel)
            state.finish(task, TaskState.FAILED, record, error=error)
            state.scheduler.queue.prune()
            state.placement_due = True
            return
        # Final already (its result came with the refused row): a verdict revised, not a state
        # transition, so the counts move here rather than through move(); watchers are told.
        state.state_counts[task.state] -= 1
        task.state = TaskState.FAILED
        state.state_counts[task.state] += 1
        task.result, task.error = None, error
        state.store_task(task)
        revised = {"event": "failed", "revised": True, "task_id": task.task_id, "job_id": task.job_id, "error": error}
        state.publish(events.TASK, {**revised, "name": task.name, "worker_id": task.worker_id})
