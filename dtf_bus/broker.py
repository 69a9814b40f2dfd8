"""The broker: one ROUTER for workers and clients, one PUB for events, one loop that routes.

The loop reads a batch of frames, hands each to the handler for its message type, runs due
timers (heartbeats, liveness, metrics) and then asks the scheduler for placements once.
Policy lives elsewhere: placement in :mod:`dtf_bus.scheduler` and :mod:`dtf_bus.balancer`,
liveness in :mod:`dtf_bus.health`, persistence in :mod:`dtf_bus.store`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from dtf_bus import balancer, config, defaults, events, protocol, spec
from dtf_bus.health import Health
from dtf_bus.hooks import BrokerHook
from dtf_bus.registry import Registry, WorkerInfo
from dtf_bus.scheduler import Scheduler
from dtf_bus.store import Store
from dtf_bus.task import Attempt, Job, Task, TaskState

log = logging.getLogger("dtf.broker")

BATCH = 512  # frames handled between two placement rounds


def zmq_endpoint(endpoint: str) -> str:
    """Accept port 0 for "any free port", as sockets do; ZeroMQ spells it ``*``."""
    return endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint


class Timer:
    __slots__ = ("due", "fn", "period")

    def __init__(self, period: float, fn: Callable[[float], None]) -> None:
        self.period = period
        self.fn = fn
        self.due = time.monotonic() + period


class Broker:
    def __init__(
        self,
        bind: str = defaults.BROKER_ENDPOINT,
        metrics_bind: str = defaults.METRICS_ENDPOINT,
        db: str | Path = defaults.DB_PATH,
        strategy: str = defaults.STRATEGY,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        heartbeat_liveness: int = defaults.HEARTBEAT_LIVENESS,
        hooks: list[BrokerHook] | None = None,
    ) -> None:
        self.hooks = list(hooks or [])
        self.health = Health(heartbeat_interval, heartbeat_liveness)
        self.registry = Registry()
        self.scheduler = Scheduler(self.registry, balancer.load(strategy))
        self.store = Store(db)
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, Job] = {}
        self.state_counts: Counter[str] = Counter()
        self._seq = itertools.count()
        self._stopping = False
        self._placement_due = False

        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unreachable peer -> error, not silence
        self.router.setsockopt(zmq.MAXMSGSIZE, defaults.MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(zmq_endpoint(bind))
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(zmq_endpoint(metrics_bind))
        self.endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.metrics_endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.events = events.Publisher(self.pub)

        self._handlers: dict[str, Callable[[bytes, dict[str, Any]], None]] = {
            protocol.REGISTER: self._on_register,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.TASK_STARTED: self._on_task_started,
            protocol.TASK_RESULT: self._on_task_result,
            protocol.UNREGISTER: self._on_unregister,
            protocol.SUBMIT: self._on_submit,
            protocol.STATUS: self._on_status,
            protocol.WAIT: self._on_wait,
            protocol.RESULTS: self._on_results,
            protocol.WORKERS: self._on_workers,
            protocol.CANCEL_JOB: self._on_cancel_job,
            protocol.PING: self._on_ping,
        }
        check_every = max(min(heartbeat_interval / 4, 0.25), 0.01)
        self._timers = [
            Timer(heartbeat_interval, self._send_heartbeats),
            Timer(check_every, self._reap_dead_workers),
            Timer(defaults.METRICS_INTERVAL, self._tick),
        ]

    # ------------------------------------------------------------------ loop

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        log.info("broker listening on %s, events on %s", self.endpoint, self.metrics_endpoint)
        self._hook("on_start")
        try:
            while not self._stopping:
                wait = min(t.due for t in self._timers) - time.monotonic()
                if poller.poll(max(wait, 0) * 1000):
                    for _ in range(BATCH):
                        try:
                            frames = self.router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._dispatch(frames)
                now = time.monotonic()
                for timer in self._timers:
                    if timer.due <= now:
                        timer.due = now + timer.period
                        timer.fn(now)
                if self._placement_due:
                    self._placement_due = False
                    self._place()
        finally:
            self.close()

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def close(self) -> None:
        self._hook("on_stop")
        self.router.close()
        self.pub.close()
        self.ctx.term()
        self.store.close()
        log.info("broker stopped; results in %s", self.store.path)

    def _dispatch(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            log.warning("dropping message with %d frames (expected 1 after the routing id)", len(frames) - 1)
            if len(frames) > 1:
                self._send(frames[0], protocol.ERROR, {"error": "expected exactly one frame"})
            return
        peer, frame = frames
        try:
            kind, body = protocol.decode(frame)
        except protocol.ProtocolError as exc:
            log.warning("malformed message from peer %s: %s", peer.hex(), exc)
            self._send(peer, protocol.ERROR, {"req": exc.req, "error": str(exc)})
            return
        worker = self.registry.by_peer(peer)
        if worker is not None:
            worker.last_seen = time.monotonic()
        elif kind in (protocol.HEARTBEAT, protocol.TASK_STARTED, protocol.TASK_RESULT):
            # Out of order: a worker we do not know (broker restarted, or declared dead).
            self._send(peer, protocol.REREGISTER, {"reason": "unknown worker, please register"})
            return
        try:
            self._handlers[kind](peer, body)
        except _ClientError as exc:
            self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": str(exc)})
        except Exception:
            log.exception("error handling %s from %s", kind, peer.hex())
            self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": f"internal error handling {kind}"})

    def _hook(self, point: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, point)(self, *args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, point)

    def _send(self, peer: bytes, kind: str, body: dict[str, Any]) -> None:
        try:
            self.router.send_multipart((peer, protocol.encode(kind, body)), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                worker = self.registry.by_peer(peer)
                if worker is not None:
                    self._worker_lost(worker, "connection closed")
            else:
                log.warning("send %s to %s failed: %s", kind, peer.hex(), exc)

    def _reply(self, peer: bytes, body: dict[str, Any], data: dict[str, Any] | list[Any]) -> None:
        self._send(peer, protocol.REPLY, {"req": body["req"], "data": data})

    # --------------------------------------------------------------- workers

    def _on_register(self, peer: bytes, body: dict[str, Any]) -> None:
        worker_id = body["worker_id"].strip()
        caps = dict(body["capabilities"])
        hardware = caps.get("hardware", [])
        if not worker_id or body["slots"] < 1 or not isinstance(hardware, list):
            raise _ClientError("register: worker_id must be non-empty, slots >= 1, hardware a list")
        caps["hardware"] = [str(h) for h in hardware]
        worker = WorkerInfo(
            worker_id=worker_id,
            peer=peer,
            capabilities=caps,
            slots=body["slots"],
            plugins=frozenset(str(p) for p in body["plugins"]),
        )
        old = self.registry.add(worker)
        reported = {tuple(r) for r in body.get("running", []) if isinstance(r, list | tuple) and len(r) == 2}
        if old is not None:
            self.scheduler.strategy.remove_worker(old.worker_id)
            for task_id, attempt in old.inflight.items():
                if (task_id, attempt) in reported:
                    worker.inflight[task_id] = attempt  # still running there: keep it
                else:
                    self._attempt_lost(task_id, attempt, f"worker {worker_id} restarted")
        for task_id, attempt in reported:
            if worker.inflight.get(task_id) != attempt:
                self._send(peer, protocol.CANCEL, {"task_id": task_id, "attempt": attempt, "reason": "superseded"})
        self.scheduler.strategy.add_worker(worker)
        self._send(
            peer,
            protocol.REGISTERED,
            {"heartbeat_interval": self.health.interval, "heartbeat_liveness": self.health.liveness},
        )
        log.info(
            "worker %s %s (slots=%d, hardware=%s)",
            worker_id,
            "re-registered" if old else "registered",
            worker.slots,
            ",".join(worker.hardware),
        )
        self._store_worker(worker, "alive")
        self.events.publish(events.WORKER, {"event": "registered", "worker": worker.to_dict()})
        self._hook("on_worker_registered", worker)
        self._placement_due = True

    def _on_heartbeat(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        if "metrics" in body:
            worker.metrics = body["metrics"]
        self._hook("on_heartbeat", worker)

    def _on_unregister(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        if worker is not None:
            self._worker_lost(worker, "unregistered", state="left")

    def _current(self, worker: WorkerInfo, task_id: str, attempt: int) -> Task | None:
        """The task if ``attempt`` is its live attempt on ``worker``; None means stale."""
        task = self.tasks.get(task_id)
        if (
            task is None
            or task.state.final
            or task.attempt != attempt
            or task.worker_id != worker.worker_id
            or task.state not in (TaskState.ASSIGNED, TaskState.RUNNING)
        ):
            return None
        return task

    def _on_task_started(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        task = self._current(worker, body["task_id"], body["attempt"])
        if task is None:
            log.info("ignoring start of stale attempt %s#%d on %s", body["task_id"], body["attempt"], worker.worker_id)
            self._send(
                peer, protocol.CANCEL, {"task_id": body["task_id"], "attempt": body["attempt"], "reason": "superseded"}
            )
            return
        if task.state is TaskState.ASSIGNED:
            self._move(task, TaskState.RUNNING)
            task.started_at = body["started_at"]
            task.history[-1].started_at = task.started_at
            self._store_attempt(task, task.history[-1])
            self._store_task(task)

    def _on_task_result(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        task_id, attempt, outcome = body["task_id"], body["attempt"], body["outcome"]
        self._send(peer, protocol.RESULT_ACK, {"task_id": task_id, "attempt": attempt})
        if outcome not in protocol.OUTCOMES:
            raise _ClientError(f"task_result: unknown outcome {outcome!r}")
        if worker.inflight.get(task_id) == attempt:
            del worker.inflight[task_id]
            self._placement_due = True
        task = self._current(worker, task_id, attempt)
        if task is None:
            self._record_stale(worker, body)
            return
        record = task.history[-1]
        record.started_at = body.get("started_at") or record.started_at
        record.ended_at = body["ended_at"]
        record.outcome = outcome
        record.result = body.get("result")
        record.error = body.get("error")
        self._store_attempt(task, record)
        self._hook("on_attempt_result", task, record)
        worker.completed += 1
        if record.started_at is not None:
            self.scheduler.strategy.task_done(task, worker, record.ended_at - record.started_at)
        if outcome == "succeeded":
            self._finish(task, TaskState.SUCCEEDED, record)
        elif outcome == "cancelled":
            self._finish(task, TaskState.CANCELLED, record)
        elif task.failures < task.retries:
            task.failures += 1
            log.info("task %s attempt %d %s; retry %d of %d", task_id, attempt, outcome, task.failures, task.retries)
            self._requeue(task)
        else:
            final = TaskState.TIMED_OUT if outcome == "timed_out" else TaskState.FAILED
            self._finish(task, final, record)

    def _record_stale(self, worker: WorkerInfo, body: dict[str, Any]) -> None:
        task = self.tasks.get(body["task_id"])
        record = task.attempt_record(body["attempt"]) if task else None
        if record is None or record.worker_id != worker.worker_id:
            log.warning(
                "result for unknown task/attempt %s#%s from %s ignored",
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
        self._store_attempt(task, record)
        self._hook("on_attempt_result", task, record)

    def _worker_lost(self, worker: WorkerInfo, reason: str, state: str = "dead") -> None:
        """Remove a worker; its in-flight attempts are lost and their tasks requeued."""
        if self.registry.get(worker.worker_id) is not worker:
            return  # already replaced or removed
        self.registry.remove(worker.worker_id)
        self.scheduler.strategy.remove_worker(worker.worker_id)
        log.log(
            logging.WARNING if worker.inflight or state == "dead" else logging.INFO,
            "worker %s %s (%s); requeueing %d task(s)",
            worker.worker_id,
            state,
            reason,
            len(worker.inflight),
        )
        for task_id, attempt in worker.inflight.items():
            self._attempt_lost(task_id, attempt, f"worker {worker.worker_id} lost: {reason}")
        worker.inflight.clear()
        self._store_worker(worker, state)
        self.events.publish(events.WORKER, {"event": state, "worker_id": worker.worker_id, "reason": reason})
        self._hook("on_worker_lost", worker, reason)
        self._placement_due = True

    def _attempt_lost(self, task_id: str, attempt: int, reason: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.attempt != attempt or task.state.final:
            return
        record = task.history[-1]
        record.outcome = "lost"
        record.error = reason
        record.ended_at = time.time()
        self._store_attempt(task, record)
        task.lost_workers += 1
        if task.lost_workers >= defaults.MAX_LOST_WORKERS:
            self._finish(task, TaskState.FAILED, record, error=f"lost {task.lost_workers} workers ({reason})")
        else:
            self._requeue(task)

    # ------------------------------------------------------------ task state

    def _move(self, task: Task, state: TaskState) -> None:
        """Every task state change goes through here: counted, and published on events.task."""
        self.state_counts[task.state] -= 1
        task.move(state)
        self.state_counts[state] += 1
        self.events.publish(
            events.TASK,
            {
                "event": str(state),
                "task_id": task.task_id,
                "job_id": task.job_id,
                "name": task.name,
                "worker_id": task.worker_id,
                "attempt": task.attempt,
            },
        )
        self._hook("on_task_state", task)

    def _requeue(self, task: Task) -> None:
        task.attempt += 1
        task.worker_id = None
        task.started_at = None
        self._move(task, TaskState.QUEUED)
        self.scheduler.enqueue(task)
        self._store_task(task)
        self._placement_due = True

    def _finish(self, task: Task, state: TaskState, record: Attempt | None, error: str | None = None) -> None:
        task.ended_at = time.time()
        if record is not None:
            task.started_at = record.started_at
            task.result = record.result
        task.error = error or (record.error if record else None)
        self._move(task, state)
        self._store_task(task)
        job = self.jobs[task.job_id]
        job.unfinished -= 1
        if job.done:
            status = self._job_status(job)
            for peer, req in job.waiters:
                self._send(peer, protocol.REPLY, {"req": req, "data": status})
            job.waiters.clear()
            self.events.publish(events.TASK, {"event": "job_done", "job_id": job.job_id, "counts": status["counts"]})

    def _place(self) -> None:
        for task, worker in self.scheduler.place():
            now = time.time()
            task.worker_id = worker.worker_id
            task.assigned_at = now
            self._move(task, TaskState.ASSIGNED)
            record = Attempt(task.attempt, worker.worker_id, now)
            task.history.append(record)
            self._send(
                worker.peer,
                protocol.ASSIGN,
                {
                    "task_id": task.task_id,
                    "attempt": task.attempt,
                    "plugin": task.plugin,
                    "params": task.params,
                    "timeout": task.timeout,
                },
            )
            self._store_attempt(task, record)
            self._store_task(task)

    # ---------------------------------------------------------------- clients

    def _job(self, body: dict[str, Any]) -> Job:
        job = self.jobs.get(body["job_id"])
        if job is None:
            raise _ClientError(f"unknown job {body['job_id']!r}")
        return job

    def _on_submit(self, peer: bytes, body: dict[str, Any]) -> None:
        try:
            specs = spec.validate(body["tasks"])
        except spec.SpecError as exc:
            raise _ClientError(f"invalid spec: {exc}") from None
        job = Job(job_id=uuid.uuid4().hex[:12], name=body.get("name") or "job", task_ids=[])
        self.jobs[job.job_id] = job
        self.store.put("jobs", (job.job_id, job.name, job.submitted_at, len(specs)))
        for index, s in enumerate(specs):
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
                seq=next(self._seq),
                submitted_at=job.submitted_at,
            )
            self.tasks[task.task_id] = task
            job.task_ids.append(task.task_id)
            self.state_counts[TaskState.QUEUED] += 1
            self.scheduler.enqueue(task)
            self._store_task(task)
        job.unfinished = len(specs)
        log.info("job %s (%s): %d task(s) queued", job.job_id, job.name, len(specs))
        self.events.publish(events.TASK, {"event": "job_submitted", "job_id": job.job_id, "total": len(specs)})
        self._placement_due = True
        self._reply(peer, body, {"job_id": job.job_id, "total": len(specs)})

    def _job_status(self, job: Job) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        blocked: dict[tuple[str, ...], list[str]] = {}
        for task_id in job.task_ids:
            task = self.tasks[task_id]
            counts[str(task.state)] += 1
            if task.state is TaskState.QUEUED:
                reasons = self.scheduler.why_queued(task)
                if reasons:
                    blocked.setdefault(tuple(reasons), []).append(task.name)
        return {
            "job_id": job.job_id,
            "name": job.name,
            "total": len(job.task_ids),
            "done": job.done,
            "counts": dict(counts),
            "succeeded": counts["succeeded"],
            "failed": counts["failed"] + counts["timed_out"] + counts["cancelled"],
            "blocked": [{"tasks": names, "reasons": list(r)} for r, names in blocked.items()],
        }

    def _on_status(self, peer: bytes, body: dict[str, Any]) -> None:
        self._reply(peer, body, self._job_status(self._job(body)))

    def _on_wait(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        if job.done:
            self._reply(peer, body, self._job_status(job))
        elif (peer, body["req"]) not in job.waiters:
            job.waiters.append((peer, body["req"]))

    def _on_results(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self._reply(peer, body, [self.tasks[t].to_dict() for t in job.task_ids])

    def _on_workers(self, peer: bytes, body: dict[str, Any]) -> None:
        self._reply(peer, body, [w.to_dict() for w in self.registry])

    def _on_cancel_job(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        cancelled = 0
        for task_id in job.task_ids:
            task = self.tasks[task_id]
            if task.state.final:
                continue
            record = None
            if task.state is not TaskState.QUEUED:
                worker = self.registry.get(task.worker_id)
                if worker is not None and worker.inflight.pop(task_id, None) is not None:
                    self._send(
                        worker.peer,
                        protocol.CANCEL,
                        {"task_id": task_id, "attempt": task.attempt, "reason": "job cancelled"},
                    )
                record = task.history[-1]
                record.outcome = "cancelled"
                record.ended_at = time.time()
                self._store_attempt(task, record)
            self._finish(task, TaskState.CANCELLED, record, error="cancelled by user")
            cancelled += 1
        self._placement_due = True
        self._reply(peer, body, {"job_id": job.job_id, "cancelled": cancelled})

    def _on_ping(self, peer: bytes, body: dict[str, Any]) -> None:
        self._reply(peer, body, {"protocol": protocol.VERSION, "workers": len(self.registry)})

    # ----------------------------------------------------------------- timers

    def _send_heartbeats(self, now: float) -> None:
        for worker in self.registry:
            self._send(worker.peer, protocol.HEARTBEAT, {})

    def _reap_dead_workers(self, now: float) -> None:
        for worker in self.health.dead(self.registry, now):
            self._worker_lost(worker, f"no heartbeat for {now - worker.last_seen:.1f}s")

    def _tick(self, now: float) -> None:
        self._publish_metrics(now)
        self._hook("on_tick", now)

    def _publish_metrics(self, now: float) -> None:
        workers = list(self.registry)
        self.events.publish(
            events.SYSTEM_METRICS,
            {
                "workers": len(workers),
                "busy_workers": sum(1 for w in workers if w.inflight),
                "slots": sum(w.slots for w in workers),
                **{state: self.state_counts[state] for state in TaskState},
            },
        )

    # ------------------------------------------------------------ persistence

    def _store_task(self, t: Task) -> None:
        self.store.put(
            "tasks",
            (
                t.task_id,
                t.job_id,
                t.name,
                t.plugin,
                t.params,
                t.requires,
                t.priority,
                t.timeout,
                t.retries,
                str(t.state),
                t.attempt,
                t.worker_id,
                t.submitted_at,
                t.started_at,
                t.ended_at,
                t.result,
                t.error,
            ),
        )

    def _store_attempt(self, t: Task, a: Attempt) -> None:
        self.store.put(
            "attempts",
            (
                t.task_id,
                a.number,
                a.worker_id,
                a.assigned_at,
                a.started_at,
                a.ended_at,
                a.outcome,
                a.stale,
                a.result,
                a.error,
            ),
        )

    def _store_worker(self, w: WorkerInfo, state: str) -> None:
        self.store.put(
            "workers",
            (
                w.worker_id,
                w.capabilities.get("hostname"),
                w.hardware,
                w.capabilities,
                w.slots,
                sorted(w.plugins),
                w.registered_at,
                time.time(),
                state,
            ),
        )


class _ClientError(Exception):
    """A request the broker refuses; the text goes back to the sender as an ERROR."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtf-broker", description="Run the dtf broker.")
    parser.add_argument("--bind", help=f"ROUTER endpoint (default {defaults.BROKER_ENDPOINT})")
    parser.add_argument("--metrics-bind", help=f"PUB endpoint (default {defaults.METRICS_ENDPOINT})")
    parser.add_argument("--db", help=f"DuckDB file for results (default {defaults.DB_PATH})")
    parser.add_argument("--config", help="TOML config file with a [broker] section")
    parser.add_argument("--strategy", help=f"placement strategy (default {defaults.STRATEGY})")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats")
    parser.add_argument("--heartbeat-liveness", type=int, help="missed heartbeats before a worker is dead")
    parser.add_argument("--ready-file", help="write the bound endpoints here as JSON once listening")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return value if value is not None else cfg.get(name, default)

    try:
        cfg = config.section(config.load(args.config), "broker")
        interval, liveness = config.heartbeat(
            pick("heartbeat_interval", defaults.HEARTBEAT_INTERVAL),
            pick("heartbeat_liveness", defaults.HEARTBEAT_LIVENESS),
        )
    except config.ConfigError as exc:
        print(f"dtf-broker: {exc}", file=sys.stderr)
        return 2
    try:
        broker = Broker(
            bind=pick("bind", defaults.BROKER_ENDPOINT),
            metrics_bind=pick("metrics_bind", defaults.METRICS_ENDPOINT),
            db=pick("db", defaults.DB_PATH),
            strategy=pick("strategy", defaults.STRATEGY),
            heartbeat_interval=interval,
            heartbeat_liveness=liveness,
        )
    except balancer.UnknownStrategy as exc:
        print(f"dtf-broker: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"dtf-broker: cannot bind: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # duckdb raises IOException for a locked or unwritable file
        print(f"dtf-broker: cannot open results database: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, broker.stop)
    signal.signal(signal.SIGINT, broker.stop)
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "endpoint": broker.endpoint,
                    "metrics_endpoint": broker.metrics_endpoint,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                }
            )
        )
        tmp.replace(args.ready_file)
    broker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
