"""The broker's state machine: tasks, jobs, their DAG, retries and attempt fencing.

:meth:`BrokerState.handle` takes one event (:mod:`dtf_bus.broker.instructions`) and the time,
and returns the instructions it decided on; it opens no socket and reads no clock. Extensions
(worker lifecycle, stealing, clients, persistence: :mod:`dtf_bus.broker.machine` wires them)
register the message kinds and events they own, as dask's scheduler extensions do.

Fencing: every assignment carries an attempt number; a message about any other attempt than
the task's current one on that worker is stale (:meth:`BrokerState.current`) and never moves
the task. Durability: replies that promise something (a submitted job, a result, a finished
job) wait in the outbox until the store has committed what they promise.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from dtf_bus import defaults, events, logs, protocol
from dtf_bus.broker import status
from dtf_bus.broker.health import Health
from dtf_bus.broker.instructions import Instruction, LoopTurn, Message, Publish, Send, Stopping, Tick
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.store import rows
from dtf_bus.store.db import Store
from dtf_bus.task import Attempt, Job, Task, TaskState

log = logging.getLogger("dtf.broker")

Reply = tuple[bytes, str, dict[str, Any]]  # (peer, kind, body) of a reply held for durability
Acks = dict[bytes, list[tuple[str, int]]]  # peer -> (task id, attempt) results to acknowledge


class ClientError(Exception):
    """A request the broker refuses; the text goes back to the sender as an ERROR."""


class NotHeld(Exception):
    """The request's job is not in memory: it is read back on the archive thread first."""


def no_hook(point: str, *args: Any) -> None:
    """No hooks: a state machine built alone (unit tests)."""


class BrokerState:
    def __init__(
        self,
        registry: Registry,
        scheduler: Scheduler,
        history: Durations,
        store: Store,
        health: Health,
        *,
        max_lost_workers: int = defaults.MAX_LOST_WORKERS,
        max_live_tasks: int = defaults.MAX_LIVE_TASKS,
        submitter_quota: int = defaults.SUBMITTER_QUOTA,
        finished_job_ttl: float = defaults.FINISHED_JOB_TTL,
        guard: Any = None,
        archive: Any = None,
        hook: Callable[..., None] = no_hook,
        wanted: Callable[[bytes], bool] = lambda topic: True,
        rng: random.Random | None = None,
    ) -> None:
        """``guard``: the CURVE KeyGuard, or None without CURVE; ``archive``: reads jobs no
        longer in memory back from DuckDB; ``hook(point, *args)`` calls the broker's hooks;
        ``wanted(topic)``: whether anyone subscribes to an event topic (skip building it if not)."""
        self.registry = registry
        self.scheduler = scheduler
        self.history = history
        self.store = store
        self.health = health
        self.guard = guard
        self.archive = archive
        self.hook = hook
        self.wanted = wanted
        self.rng = rng or random.Random()
        self.max_lost_workers = max_lost_workers
        # Bounds on what clients may make the broker hold (defaults.py): unfinished tasks in all
        # and per submitter; finished jobs leave memory finished_job_ttl seconds after their end.
        self.max_live_tasks = max_live_tasks
        self.submitter_quota = submitter_quota
        self.finished_job_ttl = finished_job_ttl
        self.now = 0.0  # monotonic seconds, as handed to handle()
        self.wall = 0.0  # seconds since the epoch, for what is stored and shown
        self.out: list[Instruction] = []
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, Job] = {}
        self.state_counts: Counter[str] = Counter()
        self.seq: Iterator[int] = itertools.count()  # submit order; restored past the stored ones
        self.live_by_submitter: Counter[str] = Counter()
        # (release due, job id, store mark): released once due and its rows are all committed,
        # so a request that reads it back from DuckDB sees its final state.
        self.finished_jobs: collections.deque[tuple[float, str, int]] = collections.deque()
        self.durable_seen = 0  # the store's durable mark as of the last release of replies
        self.summaries: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()  # released jobs
        self.follow_due: set[str] = set()  # jobs whose followers have news, answered once per loop turn
        self.follow_expiry: list[tuple[float, int, str]] = []  # (deadline, seq, job id) of follow waits
        self.placement_deadlines: dict[str, float] = {}  # task id -> monotonic deadline (placement_timeout)
        # Every plugin name and capability key any worker offered in this broker's life, for
        # did-you-mean hints when a submitted task asks for one nobody has.
        self.seen_plugins: set[str] = set()
        self.seen_keys: set[str] = set()
        self.dependents: dict[str, list[str]] = {}  # task id -> ids of tasks that wait for it
        self.delayed: list[tuple[float, int, Task]] = []  # (due, seq, task): retries in back-off
        self.orphans: dict[str, dict[str, int]] = {}  # worker id -> attempts restored from the db
        self.orphans_deadline = 0.0
        self.durations_dirty: set[tuple[str, str, str]] = set()  # learned durations not yet stored
        self.placement_due = False
        # Replies that promise durability: collected per batch, then released by store marks.
        # Results are acknowledged per worker, all of a batch's in one RESULT_ACK.
        self.awaiting: list[Reply] = []
        self.acks: Acks = {}
        self.awaiting_urgent = False
        self.unreleased: collections.deque[tuple[int, list[Reply], Acks]] = collections.deque()
        self._redelivered = logs.RateLimited(log, logging.INFO)  # one line per worker and minute
        # Extensions add to these: message kind -> handler, event type -> handlers (in order),
        # a check every message passes first, and what a task's state change must tell.
        self.handlers: dict[str, Callable[[bytes, dict[str, Any]], None]] = {
            protocol.TASK_STARTED: self._on_task_started,
            protocol.TASK_RESULT: self._on_task_result,
            protocol.TASK_PROGRESS: self._on_task_progress,
        }
        self.events: dict[type, list[Callable[[Any], None]]] = {
            Message: [self._on_message],
            Tick: [lambda tick: self.store_durations()],
            LoopTurn: [lambda turn: self.release_delayed()],
            Stopping: [lambda stopping: self.store_durations()],
        }
        self.gate: Callable[[Message], bool] = lambda message: True
        self.move_listeners: list[Callable[[Task], None]] = []

    # ------------------------------------------------------------- stimulus

    def handle(self, event: Any, now: float, wall: float | None = None) -> list[Instruction]:
        """Handle one event at monotonic time ``now`` (``wall``: epoch time, default ``now``)."""
        self.now = now
        self.wall = now if wall is None else wall
        for handler in self.events[type(event)]:
            handler(event)
        out, self.out = self.out, []
        return out

    def on(self, event_type: type, handler: Callable[[Any], None]) -> None:
        """Call ``handler(event)`` for each event of this type, after those registered before."""
        self.events.setdefault(event_type, []).append(handler)

    def _on_message(self, message: Message) -> None:
        if not self.gate(message):
            return
        if message.kind not in self.handlers:  # valid, but only ever sent by the broker (assign, reply...)
            log.warning("unexpected %s message from peer %s", message.kind, message.peer.hex())
            self.send(message.peer, protocol.ERROR, {"error": f"the broker does not take {message.kind} messages"})
            return
        self.dispatch(message.peer, message.kind, message.body)

    def dispatch(self, peer: bytes, kind: str, body: dict[str, Any], deferred: bool = False) -> None:
        """Run the handler of ``kind``; a refusal or a bug of ours goes back as an ERROR."""
        try:
            self.handlers[kind](peer, body)
        except NotHeld:
            # A job not in memory: read on the archive thread, answered when it is back (Archived).
            if deferred or not self.archive.load(peer, kind, body):
                why = "the broker is busy reading jobs from its results store; try again"
                self.send(peer, protocol.ERROR, {"req": body.get("req"), "error": why})
        except ClientError as exc:
            self.send(peer, protocol.ERROR, {"req": body.get("req"), "error": str(exc)})
        except Exception:
            log.exception("error handling %s from %s", kind, peer.hex())
            self.send(peer, protocol.ERROR, {"req": body.get("req"), "error": f"internal error handling {kind}"})

    def next_due(self) -> float | None:
        """The earliest retry or follow deadline (monotonic), for the loop's poll timeout."""
        dues = [d[0][0] for d in (self.delayed, self.follow_expiry) if d]
        return min(dues) if dues else None

    # ------------------------------------------------------------------ output

    def send(self, peer: bytes, kind: str, body: dict[str, Any]) -> None:
        self.out.append(Send(peer, kind, body))

    def reply(self, peer: bytes, body: dict[str, Any], data: dict[str, Any] | list[Any]) -> None:
        self.out.append(Send(peer, protocol.REPLY, {"req": body["req"], "data": data}))

    def send_durable(self, peer: bytes, kind: str, body: dict[str, Any], urgent: bool = False) -> None:
        """Send once everything stored so far is committed (acknowledge only what survives)."""
        self.awaiting.append((peer, kind, body))
        self.awaiting_urgent = self.awaiting_urgent or urgent

    def publish(self, topic: bytes, body: dict[str, Any]) -> None:
        self.out.append(Publish(topic, body))

    # ------------------------------------------------------------- task flow

    def current(self, worker: WorkerInfo, task_id: str, attempt: int) -> Task | None:
        """The task if ``attempt`` is its live attempt on ``worker``; None means stale."""
        task = self.tasks.get(task_id)
        if (
            task is None
            or task.attempt != attempt
            or task.worker_id != worker.worker_id
            or task.state not in (TaskState.ASSIGNED, TaskState.RUNNING)
        ):
            return None
        return task

    def _on_task_started(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        task = self.current(worker, body["task_id"], body["attempt"])
        if task is None:
            log.info("ignoring start of stale attempt %s#%d on %s", body["task_id"], body["attempt"], worker.worker_id)
            self.send(
                peer, protocol.CANCEL, {"task_id": body["task_id"], "attempt": body["attempt"], "reason": "superseded"}
            )
            return
        if task.state is TaskState.ASSIGNED:
            # Not stored: recovery treats assigned and running alike, and the final rows carry
            # the start time, so a row here would be one more write per task for nothing.
            task.started_at = body["started_at"]
            task.history[-1].started_at = task.started_at
            self.move(task, TaskState.RUNNING)

    def _on_task_result(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        # Acknowledged once committed: until then the worker keeps the results and resends them.
        acks = self.acks.setdefault(peer, [])
        for result in body["results"]:
            acks.append((result["task_id"], result["attempt"]))
            try:
                self._task_result(worker, result)
            except Exception:  # a bug of ours must not cost the other results of the batch
                log.exception("error handling the result of %s#%d", result["task_id"], result["attempt"])

    def _on_task_progress(self, peer: bytes, body: dict[str, Any]) -> None:
        """Running tasks' progress, kept for the job's followers (not stored: results are)."""
        worker = self.registry.by_peer(peer)
        for update in body["updates"]:
            task = self.current(worker, update["task_id"], update["attempt"])
            if task is None:
                continue  # stale, or already finished: its result holds it all
            job = self.jobs[task.job_id]
            job.progress.append({"task_id": task.task_id, "name": task.name, "data": update["data"]})
            if len(job.progress) > defaults.PROGRESS_KEEP:
                drop = len(job.progress) - defaults.PROGRESS_KEEP
                del job.progress[:drop]
                job.progress_base += drop
            if job.followers:
                self.follow_due.add(job.job_id)

    def _task_result(self, worker: WorkerInfo, body: dict[str, Any]) -> None:
        task_id, attempt, outcome = body["task_id"], body["attempt"], body["outcome"]
        if worker.inflight.get(task_id) == attempt:
            del worker.inflight[task_id]
            self.placement_due = True
        task = self.current(worker, task_id, attempt)
        if task is None:
            self._record_stale(worker, body)
            return
        record = task.history[-1]
        record.started_at = body.get("started_at") or record.started_at
        record.ended_at = body["ended_at"]
        record.outcome = outcome
        record.result = body.get("result")
        record.error = body.get("error")
        self.store_attempt(task, record)
        self.hook("on_attempt_result", task, record)
        worker.completed += 1
        if record.started_at is not None:
            self.scheduler.task_done(task, worker, record.ended_at - record.started_at)
            self.durations_dirty.add((worker.worker_id, task.plugin, task.key))
        if outcome == "succeeded":
            self.finish(task, TaskState.SUCCEEDED, record)
        elif outcome == "cancelled":
            # Workers cancel only when told; still current, this attempt was superseded by a broker
            # that died before storing that (job cancels are final here already): no verdict.
            self.requeue(task)
        elif task.failures < task.retries:
            task.failures += 1
            self._retry_later(task, outcome)
        else:
            final = TaskState.TIMED_OUT if outcome == "timed_out" else TaskState.FAILED
            self.finish(task, final, record)

    def _record_stale(self, worker: WorkerInfo, body: dict[str, Any]) -> None:
        task = self.tasks.get(body["task_id"])
        record = task.attempt_record(body["attempt"]) if task else None
        if record is None or record.worker_id != worker.worker_id:
            self._redelivered(
                worker.worker_id,
                "result for %s#%s from %s ignored: not an attempt the broker holds (a re-delivery for a"
                " task already final and released, or never assigned there)",
                body["task_id"],
                body["attempt"],
                worker.worker_id,
            )
            return
        if record.outcome not in ("assigned", "lost") or record.stale:
            return  # a re-delivery of a result already recorded (the ack was lost)
        log.info(
            "stale result for %s attempt %d from %s ignored (task is %s, attempt %d)",
            task.task_id,
            record.number,
            worker.worker_id,
            task.state,
            task.attempt,
        )
        record.stale = True
        record.outcome = body["outcome"]
        record.ended_at = body["ended_at"]
        record.result = body.get("result")
        record.error = body.get("error")
        self.store_attempt(task, record)
        self.hook("on_attempt_result", task, record)

    def attempt_lost(self, task_id: str, attempt: int, reason: str, died: str | None = None) -> None:
        """The attempt's worker is gone, and the task is requeued. ``died`` ("worker (how)") when
        the worker's process or connection died while running it: evidence that the task kills
        workers, which fails it as poison after ``max_lost_workers`` such deaths."""
        task = self.tasks.get(task_id)
        if task is None or task.attempt != attempt or task.state.final:
            return
        record = task.history[-1]
        record.outcome = "lost"
        record.error = reason
        record.ended_at = self.wall
        self.store_attempt(task, record)
        if died is not None:
            task.lost_workers += 1
            task.lost_on.append(died)
        if task.lost_workers >= self.max_lost_workers:
            how = ", ".join(task.lost_on) or reason
            self.finish(task, TaskState.FAILED, record, error=f"lost {task.lost_workers} workers running it: {how}")
        else:
            self.requeue(task)

    # ------------------------------------------------------------ task state

    def move(self, task: Task, state: TaskState) -> None:
        """Every task state change goes through here: counted, and published on events.task."""
        for listener in self.move_listeners:  # stealing: a steal this change outran
            listener(task)
        self.state_counts[task.state] -= 1
        task.move(state)
        self.state_counts[state] += 1
        if self.wanted(events.TASK):
            self.publish(
                events.TASK,
                {
                    "event": str(state),
                    "task_id": task.task_id,
                    "job_id": task.job_id,
                    "name": task.name,
                    "worker_id": task.worker_id,
                    "attempt": task.attempt,
                    # a task that ended within STARTED_REPORT_DELAY was never "running" on the channel
                    "started_at": task.started_at,
                },
            )
        self.hook("on_task_state", task)

    def requeue(self, task: Task, enqueue: bool = True) -> None:
        task.attempt = max(task.attempt, task.reported_attempt) + 1
        task.worker_id = None
        task.started_at = None
        self.move(task, TaskState.QUEUED)
        if enqueue:
            self.scheduler.enqueue(task)
            self.placement_due = True
        self.store_task(task)

    def _retry_later(self, task: Task, outcome: str) -> None:
        """Requeue after an exponential back-off with jitter, so a failing dependency (a full
        disk, a flaky service) is not hammered by every retry at once."""
        base = min(task.retry_backoff * 2 ** (task.failures - 1), defaults.RETRY_BACKOFF_MAX)
        delay = base * self.rng.uniform(0.5, 1.5)
        log.info(
            "task %s attempt %d %s; retry %d of %d in %.2fs",
            task.task_id,
            task.attempt,
            outcome,
            task.failures,
            task.retries,
            delay,
        )
        self.requeue(task, enqueue=False)
        heapq.heappush(self.delayed, (self.now + delay, task.seq, task))

    def release_delayed(self) -> None:
        while self.delayed and self.delayed[0][0] <= self.now:
            task = heapq.heappop(self.delayed)[2]
            if task.state is TaskState.QUEUED:
                self.scheduler.enqueue(task)
                self.placement_due = True

    def finish(self, task: Task, state: TaskState, record: Attempt | None, error: str | None = None) -> None:
        task.ended_at = self.wall
        if record is not None:
            task.started_at = record.started_at
            task.result = record.result
        task.error = error or (record.error if record else None)
        self.move(task, state)
        self.store_task(task)
        self._dependencies_done(task)
        job = self.jobs[task.job_id]
        job.unfinished -= 1
        job.finished.append(task.task_id)
        if job.followers:
            self.follow_due.add(job.job_id)
        self.live_by_submitter[job.submitter] -= 1
        if self.live_by_submitter[job.submitter] <= 0:
            del self.live_by_submitter[job.submitter]
        if job.done:
            self.job_done(job)

    def job_done(self, job: Job) -> None:
        self.finished_jobs.append((self.now + self.finished_job_ttl, job.job_id, self.store.mark()))
        status = self.job_status(job)
        for peer, req in job.waiters:
            self.send_durable(peer, protocol.REPLY, {"req": req, "data": status}, urgent=True)
        job.waiters.clear()
        if job.followers:
            self.follow_due.add(job.job_id)
        self.publish(events.TASK, {"event": "job_done", "job_id": job.job_id, "counts": status["counts"]})

    def track_dependencies(self, task: Task) -> None:
        """Queue a task now, or once the tasks it depends on have succeeded."""
        if task.depends_on:
            task.waiting_on = {d for d in task.depends_on if self.tasks[d].state is not TaskState.SUCCEEDED}
            for dep in task.waiting_on:
                self.dependents.setdefault(dep, []).append(task.task_id)
        if not task.waiting_on:
            self.scheduler.enqueue(task)
            self.placement_due = True

    def _dependencies_done(self, task: Task) -> None:
        """A finished task frees its dependents, or dooms them if it did not succeed."""
        for dep_id in self.dependents.pop(task.task_id, []):
            dependent = self.tasks[dep_id]
            if dependent.state.final:
                continue
            if task.state is TaskState.SUCCEEDED:
                dependent.waiting_on.discard(task.task_id)
                if not dependent.waiting_on:
                    self.scheduler.enqueue(dependent)
                    self.placement_due = True
            else:
                self.finish(dependent, TaskState.CANCELLED, None, error=f"dependency {task.name!r} {task.state}")

    def send_assign(self, worker: WorkerInfo, tasks: list[Task]) -> None:
        self.send(
            worker.peer,
            protocol.ASSIGN,
            {
                "tasks": [
                    {
                        "task_id": task.task_id,
                        "attempt": task.attempt,
                        "plugin": task.plugin,
                        "params": task.params,
                        "timeout": task.timeout,
                        **({"resources": task.resources} if task.resources else {}),
                    }
                    for task in tasks
                ]
            },
        )

    def job_status(self, job: Job) -> dict[str, Any]:
        return status.job_status(job, self.tasks, self.scheduler)

    # ------------------------------------------------------------- store rows

    def store_task(self, t: Task) -> None:
        self.store.put("tasks", rows.task_row(t))

    def store_attempt(self, t: Task, a: Attempt) -> None:
        self.store.put("attempts", rows.attempt_row(t, a))

    def store_durations(self) -> None:
        """Learned durations go to the store once per tick, not once per task."""
        for key in self.durations_dirty:
            stat = self.history.stats[key]
            self.store.put("task_durations", rows.duration_row(*key, stat.mean, stat.n, self.wall))
        self.durations_dirty.clear()

    def store_worker(self, w: WorkerInfo, state: str) -> None:
        self.store.put("workers", rows.worker_row(w, state))
