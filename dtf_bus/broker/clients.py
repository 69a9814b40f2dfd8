"""Client requests: submit, status, wait, results, follow, cancel, close, queries, workers,
drain, ping.

A state-machine extension (:mod:`dtf_bus.broker.state`). A request the broker refuses raises
:class:`~dtf_bus.broker.state.ClientError` (its text goes back as an ERROR); one about a job
no longer in memory raises :class:`~dtf_bus.broker.state.NotHeld` and is answered once the
archive thread has read the job back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import uuid
from typing import Any

from dtf_bus import events, protocol, spec
from dtf_bus.analysis import requests
from dtf_bus.broker import matching
from dtf_bus.broker.instructions import LoopTurn
from dtf_bus.broker.lifecycle import WorkerLifecycle
from dtf_bus.broker.state import BrokerState, ClientError, NotHeld
from dtf_bus.runmeta import MetaError, validate_meta
from dtf_bus.security import roles
from dtf_bus.store import rows
from dtf_bus.store.results import test_history
from dtf_bus.task import Job, Task, TaskState

log = logging.getLogger("dtf.broker")


class Clients:
    def __init__(self, state: BrokerState, lifecycle: WorkerLifecycle, ships: Any) -> None:
        """``ships``: the store of shipped code (dtf_bus.ship.store.ShipStore)."""
        self.state = state
        self.lifecycle = lifecycle
        self.ships = ships
        self._follow_seq = itertools.count()
        state.handlers.update(
            {
                protocol.SUBMIT: self._on_submit,
                protocol.STATUS: self._on_status,
                protocol.WAIT: self._on_wait,
                protocol.RESULTS: self._on_results,
                protocol.WORKERS: self._on_workers,
                protocol.CANCEL_JOB: self._on_cancel_job,
                protocol.CLOSE_JOB: self._on_close_job,
                protocol.FOLLOW: self._on_follow,
                protocol.TEST_HISTORY: self._on_test_history,
                protocol.QUERY: self._on_query,
                protocol.DRAIN_WORKER: self._on_drain_worker,
                protocol.BALANCER_STATS: lambda peer, body: state.reply(peer, body, state.scheduler.stats()),
                protocol.PING: self._on_ping,
            }
        )
        state.on(LoopTurn, self._answer_followers)

    def _job(self, body: dict[str, Any]) -> Job:
        """The request's job; one not in memory is read off the loop (raises NotHeld)."""
        job = self.state.jobs.get(body["job_id"])
        if job is None:
            raise NotHeld
        return job

    @staticmethod
    def submitter(body: dict[str, Any]) -> str:
        """Who submits: the CURVE key's name; the broker's own key (its HTTP API) names the API
        key it acts for. Without CURVE there is no identity, only what the client claims."""
        who = body.get("_who")
        if who is None:
            return body.get("submitter") or "anonymous"
        name = who[0]
        return body.get("submitter") or name if name == "broker" else name

    def _admit(self, submitter: str, count: int) -> None:
        """Refuse a job that would take the broker past its task cap or the submitter past its quota."""
        state = self.state
        live = state.state_counts[TaskState.QUEUED] + state.state_counts[TaskState.ASSIGNED]
        live += state.state_counts[TaskState.RUNNING]
        if live + count > state.max_live_tasks:
            raise ClientError(
                f"submit refused: the broker holds {live} unfinished tasks and takes at most {state.max_live_tasks} "
                f"(--max-live-tasks); {count} more do not fit, try again when some have finished"
            )
        mine = state.live_by_submitter[submitter]
        if mine + count > state.submitter_quota:
            raise ClientError(
                f"submit refused: {submitter} has {mine} unfinished tasks and may hold at most "
                f"{state.submitter_quota} (--submitter-quota); {count} more do not fit"
            )

    def _on_submit(self, peer: bytes, body: dict[str, Any]) -> None:
        state = self.state
        try:
            specs = spec.validate(body["tasks"])
        except spec.SpecError as exc:
            raise ClientError(f"invalid spec: {exc}") from None
        try:
            meta = validate_meta(body.get("meta"))
        except MetaError as exc:
            raise ClientError(f"invalid metadata: {exc}") from None
        submitter = self.submitter(body)
        if (unshipped := self.ships.missing(specs)) is not None:
            raise ClientError(f"invalid spec: {unshipped}")
        self._admit(submitter, len(specs))
        if body.get("job_id"):
            job = self._open_job(body, specs)
        else:
            job = Job(
                uuid.uuid4().hex[:12],
                body.get("name") or "job",
                [],
                submitter=submitter,
                meta=meta,
                submitted_at=state.wall,
            )
            state.jobs[job.job_id] = job
        job.open = bool(body.get("keep_open"))
        state.live_by_submitter[job.submitter] += len(specs)
        first = len(job.task_ids)
        state.store.put("jobs", rows.job_row(job, first + len(specs)))
        ids = {s["name"]: f"{job.job_id}.{first + index}" for index, s in enumerate(specs)}
        for index, s in enumerate(specs, first):
            task = Task(
                task_id=f"{job.job_id}.{index}",
                job_id=job.job_id,
                name=s["name"],
                plugin=s["plugin"],
                params=s["params"],
                requires=s["requires"],
                priority=s["priority"],
                timeout=s["timeout"],
                retries=s["retries"],
                retry_backoff=s["retry_backoff"],
                seq=next(state.seq),
                submitted_at=job.submitted_at,
                depends_on=[ids[name] for name in s["depends_on"]],
                placement_timeout=s["placement_timeout"],
                resources=s["resources"],
            )
            if task.placement_timeout is not None:
                state.placement_deadlines[task.task_id] = state.now + task.placement_timeout
            state.tasks[task.task_id] = task
            job.task_ids.append(task.task_id)
            state.state_counts[TaskState.QUEUED] += 1
            state.store_task(task)
        for task_id in job.task_ids[first:]:  # once all exist: a dependency may be listed after its dependent
            state.track_dependencies(state.tasks[task_id])
        job.unfinished += len(specs)
        log.info("job %s (%s) from %s: %d task(s) queued", job.job_id, job.name, submitter, len(specs))
        state.publish(events.TASK, {"event": "job_submitted", "job_id": job.job_id, "total": len(specs)})
        state.hook("on_job_submitted", job)
        state.placement_due = True
        reply = {"job_id": job.job_id, "total": len(specs)}
        warnings = self._placement_warnings(job.task_ids[first:])
        if warnings:
            reply["warnings"] = warnings
        state.send_durable(peer, protocol.REPLY, {"req": body["req"], "data": reply}, urgent=True)

    def _placement_warnings(self, task_ids: list[str]) -> list[str]:
        """One line per kind of task no live worker can run, said at submit (a typo'd plugin or
        requirement key must not look like a queue that is merely slow), with did-you-mean."""
        state = self.state
        scheduler = state.scheduler
        # Usually every queued kind has a worker: then only tasks still waiting on others need a
        # look, and a large submit skips a requirement key per task (O(kinds), not O(tasks)).
        if all(scheduler.capable(key, head) for key, head in scheduler.queue.heads()) and not any(
            state.tasks[task_id].waiting_on for task_id in task_ids
        ):
            return []
        kinds: dict[str, list[Task]] = {}
        for task_id in task_ids:
            task = state.tasks[task_id]
            kinds.setdefault(matching.requirement_key(task.plugin, task.requires, task.resources), []).append(task)
        warnings = []
        for tasks in kinds.values():
            reasons = scheduler.why_queued(tasks[0])
            if not reasons:
                continue
            names = ", ".join(t.name for t in tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
            hints = matching.suggestions(tasks[0].plugin, tasks[0].requires, state.seen_plugins, state.seen_keys)
            warnings.append(
                f"{len(tasks)} task(s) ({names}) cannot run on any live worker: {'; '.join(reasons + hints)}"
            )
        return warnings

    def _open_job(self, body: dict[str, Any], specs: list[dict[str, Any]]) -> Job:
        """The job a submit adds to: open, the sender's own (or an admin's), names still unique."""
        job = self._job(body)
        if not job.open:
            raise ClientError(f"job {job.job_id} is closed: it takes no more tasks")
        self._check_owner(body, job, "submit to")
        taken = {self.state.tasks[t].name for t in job.task_ids}
        clash = next((s["name"] for s in specs if s["name"] in taken), None)
        if clash is not None:
            raise ClientError(f"invalid spec: task {clash!r}: duplicate name (job {job.job_id} has one already)")
        return job

    @staticmethod
    def _check_owner(body: dict[str, Any], job: Job, action: str) -> None:
        """With CURVE, only the job's submitter or an admin key may change it."""
        who = body.get("_who")
        if who is not None and who[1] != roles.ADMIN and who[0] != job.submitter:
            raise ClientError(
                f"{action} job {job.job_id}: it was submitted by {job.submitter!r}; "
                "only that key or an admin key may change it"
            )

    def _on_close_job(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self._check_owner(body, job, "close")
        if job.open:
            job.open = False
            if job.done:
                self.state.job_done(job)
        self.state.reply(peer, body, {"job_id": job.job_id, "done": job.done})

    # ---------------------------------------------------------------- follow

    def _on_follow(self, peer: bytes, body: dict[str, Any]) -> None:
        """Tasks finished since the cursor: now if there are any (or the job is done), else
        once some finish or ``wait`` seconds have passed (a long poll)."""
        job = self._job(body)
        progressed = "progress_since" in body and job.progress_base + len(job.progress) > body["progress_since"]
        if len(job.finished) > body["since"] or progressed or job.done or not body.get("wait"):
            self._reply_follow(job, peer, body)
            return
        job.followers[:] = [f for f in job.followers if f[0] != peer]  # one follow per connection
        job.followers.append((peer, body))
        expiry = (self.state.now + body["wait"], next(self._follow_seq), job.job_id)
        heapq.heappush(self.state.follow_expiry, expiry)

    def _reply_follow(self, job: Job, peer: bytes, body: dict[str, Any]) -> None:
        state = self.state
        since = body["since"]
        data: dict[str, Any] = {
            "tasks": [state.tasks[t].to_dict() for t in job.finished[since:]],
            "next": len(job.finished),
            "done": job.done,
        }
        if "progress_since" in body:
            start = max(body["progress_since"] - job.progress_base, 0)
            data["progress"] = job.progress[start:]
            data["progress_next"] = job.progress_base + len(job.progress)
        if body.get("status"):  # O(tasks of the job): asked for about once a second, not per reply
            status = state.job_status(job)
            data.update(counts=status["counts"], blocked=status["blocked"], unplaceable=status["unplaceable"])
        state.reply(peer, body, data)

    def _answer_followers(self, event: LoopTurn) -> None:
        """Once per loop turn: every follower of a job with news (or whose wait ran out)."""
        state = self.state
        if not (state.follow_due or state.follow_expiry):
            return
        due = list(state.follow_due)
        state.follow_due.clear()
        while state.follow_expiry and state.follow_expiry[0][0] <= state.now:
            due.append(heapq.heappop(state.follow_expiry)[2])
        for job_id in due:
            job = state.jobs.get(job_id)
            if job is not None:
                for peer, body in job.followers:
                    self._reply_follow(job, peer, body)
                job.followers.clear()

    # ----------------------------------------------------------------- reads

    def _on_test_history(self, peer: bytes, body: dict[str, Any]) -> None:
        rootdir = body["rootdir"]
        if not self.state.archive.query(peer, body, lambda cursor: test_history(cursor, rootdir), "the test history"):
            raise ClientError("the broker is busy reading its results store; try again")

    def _on_query(self, peer: bytes, body: dict[str, Any]) -> None:
        try:
            read = requests.reader(body["what"], body.get("args") or {})
        except requests.QueryError as exc:
            raise ClientError(str(exc)) from None
        if not self.state.archive.query(peer, body, read, f"the {body['what']} query"):
            raise ClientError("the broker is busy reading its results store; try again")

    def _on_status(self, peer: bytes, body: dict[str, Any]) -> None:
        summary = self.state.summaries.get(body["job_id"])
        self.state.reply(peer, body, summary if summary is not None else self.state.job_status(self._job(body)))

    def _on_wait(self, peer: bytes, body: dict[str, Any]) -> None:
        summary = self.state.summaries.get(body["job_id"])
        if summary is not None:
            self.state.reply(peer, body, summary)
            return
        job = self._job(body)
        if job.done:
            self.state.reply(peer, body, self.state.job_status(job))
        else:  # one wait per connection (its latest request): a flood of waits cannot grow the list
            job.waiters[:] = [w for w in job.waiters if w[0] != peer]
            job.waiters.append((peer, body["req"]))

    def _on_results(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self.state.reply(peer, body, [self.state.tasks[t].to_dict() for t in job.task_ids])

    def _on_workers(self, peer: bytes, body: dict[str, Any]) -> None:
        self.state.reply(peer, body, [w.to_dict() for w in self.state.registry])

    # --------------------------------------------------------------- changes

    def _on_cancel_job(self, peer: bytes, body: dict[str, Any]) -> None:
        state = self.state
        job = self._job(body)
        self._check_owner(body, job, "cancel")
        cancelled = 0
        for task_id in job.task_ids:
            task = state.tasks[task_id]
            if task.state.final:
                continue
            record = None
            if task.state is not TaskState.QUEUED:
                worker = state.registry.get(task.worker_id)
                if worker is not None and worker.inflight.pop(task_id, None) is not None:
                    state.send(
                        worker.peer,
                        protocol.CANCEL,
                        {"task_id": task_id, "attempt": task.attempt, "reason": "job cancelled"},
                    )
                record = task.history[-1]
                record.outcome = "cancelled"
                record.ended_at = state.wall
                state.store_attempt(task, record)
            state.finish(task, TaskState.CANCELLED, record, error="cancelled by user")
            cancelled += 1
        state.scheduler.queue.prune()
        state.placement_due = True
        state.reply(peer, body, {"job_id": job.job_id, "cancelled": cancelled})

    def _on_drain_worker(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.state.registry.get(body["worker_id"])
        if worker is None:
            raise ClientError(f"unknown worker {body['worker_id']!r}")
        self.lifecycle.set_draining(worker, "requested by a client")
        self.state.send(worker.peer, protocol.DRAIN, {"reason": "requested by a client"})
        self.state.reply(peer, body, {"worker_id": worker.worker_id, "running": len(worker.inflight)})

    def _on_ping(self, peer: bytes, body: dict[str, Any]) -> None:
        state = self.state
        state.reply(
            peer,
            body,
            {
                "protocol": protocol.VERSION,
                "workers": len(state.registry),
                "strategy": state.scheduler.strategy.name,
                "heartbeat_interval": state.health.interval_for(len(state.registry)),
                "heartbeat_liveness": state.health.liveness,
                "dead_liveness": state.health.dead_liveness,
                "max_lost_workers": state.max_lost_workers,
                # What the broker holds: finished jobs leave after --finished-job-ttl.
                "jobs_in_memory": len(state.jobs),
                "tasks_in_memory": len(state.tasks),
                "ship": self.ships.stats(),  # shipped code: archives held, bytes received and sent
            },
        )
