"""Worker lifecycle on the broker: register, heartbeat, missing, back, drain, lost.

A state-machine extension (:mod:`dtf_bus.broker.state`): it owns the worker-facing message
kinds and the liveness events. Every way a worker can stop serving us (silence past the dead
limit, a closed connection, a full pipe, UNREGISTER, a revoked key) ends in :meth:`lost`, and
every way its attempts are given up goes through one loop, :meth:`_give_up`. The policy of
who is silent lives in :mod:`dtf_bus.broker.health`; the registry in :mod:`dtf_bus.broker.workers`.
"""

from __future__ import annotations

import logging
from typing import Any

from dtf_bus import events, protocol
from dtf_bus.broker.instructions import Disconnected, HealthCheck, Heartbeats, Message, Revoked, SendFailed
from dtf_bus.broker.state import BrokerState, ClientError
from dtf_bus.broker.workers import WorkerInfo
from dtf_bus.security import roles
from dtf_bus.store import rows

log = logging.getLogger("dtf.broker")

# Sent only by a registered worker: from anyone else, out of order (the broker restarted, or
# declared the worker dead), answered with REREGISTER.
SESSION_KINDS = frozenset(
    (
        protocol.HEARTBEAT,
        protocol.TASK_STARTED,
        protocol.TASK_RESULT,
        protocol.TASK_PROGRESS,
        protocol.DRAIN,
        protocol.STEAL_ACK,
    )
)
CONNECTION_CLOSED = "connection closed"  # how a worker whose process or socket died is lost
SEND_QUEUE_FULL = "not reading its messages"  # a send to it hit the high-water mark


class WorkerLifecycle:
    def __init__(self, state: BrokerState) -> None:
        self.state = state
        self.by_fd: dict[int, WorkerInfo] = {}  # connection descriptor -> worker, for socket-monitor events
        self.bindings_due: float | None = None  # when worker ids bound before a restart are released
        state.gate = self.admit
        state.handlers.update(
            {
                protocol.REGISTER: self._on_register,
                protocol.HEARTBEAT: self._on_heartbeat,
                protocol.UNREGISTER: self._on_unregister,
                protocol.DRAIN: self._on_drain,
            }
        )
        state.on(SendFailed, self._on_send_failed)
        state.on(Disconnected, self._on_disconnected)
        state.on(Heartbeats, self._send_heartbeats)
        state.on(HealthCheck, self._check_health)
        state.on(Revoked, self._on_revoked)

    def admit(self, message: Message) -> bool:
        """Every message first: any message proves its worker alive; a session message from a
        peer we do not know is out of order; with CURVE, the key's role must allow the kind."""
        state, peer, kind, body = self.state, message.peer, message.kind, message.body
        worker = state.registry.by_peer(peer)
        if worker is not None:
            worker.last_seen = state.now
            if worker.state == "missing":
                self._back(worker)
        elif kind in SESSION_KINDS:
            # Out of order: a worker we do not know (broker restarted, or declared dead).
            state.send(peer, protocol.REREGISTER, {"reason": "unknown worker, please register"})
            return False
        if state.guard is not None and kind in roles.ALLOWED:
            name, role = state.guard.identity(message.key)
            refusal = roles.refusal(role, name, kind)
            if refusal is not None:
                state.guard.refused(name, refusal)
                state.send(peer, protocol.ERROR, {"req": body.get("req"), "error": refusal})
                return False
            body["_key"], body["_who"] = message.key, (name, role)
        return True

    # ------------------------------------------------------------- messages

    def _on_register(self, peer: bytes, body: dict[str, Any]) -> None:
        state = self.state
        worker_id = body["worker_id"].strip()
        caps = dict(body["capabilities"])
        hardware = caps.get("hardware", [])
        if not worker_id or body["slots"] < 1 or not isinstance(hardware, list):
            raise ClientError("register: worker_id must be non-empty, slots >= 1, hardware a list")
        current = state.registry.by_peer(peer)
        if current is not None and current.worker_id != worker_id:
            raise ClientError(f"register: this connection is worker {current.worker_id!r}; one id per connection")
        new_binding = False
        if state.guard is not None:
            new_binding = state.guard.key_of(worker_id) is None
            refusal = state.guard.bind(worker_id, body.get("_key"))
            if refusal is not None:
                raise ClientError(f"register: {refusal}")
            if new_binding:  # durable, so a restarted broker still knows whose id it is
                state.store.put("worker_keys", rows.worker_key_row(worker_id, body["_key"], state.wall))
        caps["hardware"] = [str(h) for h in hardware]
        state.seen_plugins.update(str(p) for p in body["plugins"])
        state.seen_keys.update(caps)
        interval = state.health.interval_for(len(state.registry) + 1)
        worker = WorkerInfo(
            worker_id=worker_id,
            peer=peer,
            capabilities=caps,
            slots=body["slots"],
            plugins=frozenset(str(p) for p in body["plugins"]),
            registered_at=state.wall,
            last_seen=state.now,
            fd=body.get("_fd"),
            heartbeat_interval=interval,
            prefetch=state.scheduler.initial_prefetch,
            resources=body.get("resources") or {},
        )
        old = state.registry.add(worker)
        if worker.fd is not None:
            previous = self.by_fd.get(worker.fd)
            self.by_fd[worker.fd] = worker
            if previous is not None and previous is not old and state.registry.get(previous.worker_id) is previous:
                state.send(previous.peer, protocol.HEARTBEAT, {})  # its connection must be gone: probe
        # Attempts this worker says it holds: running or queued on it, and finished with the result
        # not yet acknowledged (``finished``: those are coming, never cancelled; an older worker
        # lists them under ``running``).
        running = {tuple(r) for r in body.get("running", []) if isinstance(r, list | tuple) and len(r) == 2}
        reported = running | {tuple(r) for r in body.get("finished", []) if isinstance(r, list | tuple) and len(r) == 2}
        held = dict(old.inflight) if old is not None else {}
        held.update(state.orphans.pop(worker_id, {}))
        if old is not None:
            state.scheduler.strategy.remove_worker(old.worker_id)
        # Its own connection (it answers each REREGISTER of a burst): what it omits crossed it.
        same_connection = old is not None and old.peer == peer
        for task_id, attempt in held.items():
            if (task_id, attempt) in reported or same_connection:
                task = state.tasks.get(task_id)  # still there (or on its way): keep it, and what it holds
                worker.take(task_id, attempt, task.resources if task is not None else {})
            else:
                # Its process restarted under the task: evidence, as a death is.
                state.attempt_lost(
                    task_id, attempt, f"worker {worker_id} re-registered without it", died=f"{worker_id} (restarted)"
                )
        for task_id, attempt in reported:
            if worker.inflight.get(task_id) != attempt:
                if (task_id, attempt) in running:  # at most slots + prefetch of them: a finished one needs none
                    state.send(peer, protocol.CANCEL, {"task_id": task_id, "attempt": attempt, "reason": "superseded"})
                if task_id in state.tasks and isinstance(attempt, int):
                    state.tasks[task_id].skip_reported(attempt)  # a number never handed out again
        worker.reported = dict(worker.inflight)
        state.scheduler.strategy.add_worker(worker)
        registered = {"heartbeat_interval": interval, "heartbeat_liveness": state.health.liveness}
        if state.guard is not None and new_binding:
            state.send_durable(peer, protocol.REGISTERED, registered, urgent=True)  # the binding survives a crash
        else:
            state.send(peer, protocol.REGISTERED, registered)
        log.info(
            "worker %s %s (slots=%d, hardware=%s, holding %d task(s))",
            worker_id,
            "re-registered" if old else "registered",
            worker.slots,
            ",".join(worker.hardware),
            len(worker.inflight),
        )
        state.store_worker(worker, "alive")
        state.publish(events.WORKER, {"event": "registered", "worker": worker.to_dict()})
        state.hook("on_worker_registered", worker)
        state.placement_due = True

    def _on_heartbeat(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.state.registry.by_peer(peer)
        if worker is None:
            return
        if "metrics" in body:
            worker.metrics = body["metrics"]
        self.state.hook("on_heartbeat", worker)

    def _on_unregister(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.state.registry.by_peer(peer)
        if worker is not None:
            self.lost(worker, "unregistered", state="left")

    def _on_drain(self, peer: bytes, body: dict[str, Any]) -> None:
        """The worker got SIGTERM: it finishes what it has and takes nothing new."""
        self.set_draining(self.state.registry.by_peer(peer), body.get("reason", "worker is draining"))

    def set_draining(self, worker: WorkerInfo, reason: str) -> None:
        if worker.state != "draining":
            worker.state = "draining"
            log.info("worker %s draining (%s); %d task(s) to finish", worker.worker_id, reason, len(worker.inflight))
            self.state.store_worker(worker, "draining")
            self.state.publish(events.WORKER, {"event": "draining", "worker_id": worker.worker_id})

    # ------------------------------------------------------------- liveness

    def _back(self, worker: WorkerInfo) -> None:
        """A missing worker spoke again: serve it, and stop what it ran for us before."""
        log.info("worker %s is back after being missing", worker.worker_id)
        worker.state = "alive"
        for task_id, attempt in worker.abandoned.items():
            cancel = {"task_id": task_id, "attempt": attempt, "reason": "superseded"}
            self.state.send(worker.peer, protocol.CANCEL, cancel)
        worker.abandoned.clear()
        self.state.store_worker(worker, "alive")
        self.state.publish(events.WORKER, {"event": "back", "worker_id": worker.worker_id})
        self.state.placement_due = True

    def _missing(self, worker: WorkerInfo, silent: float) -> None:
        """Silent past the liveness limit: requeue its tasks now, keep its registration a while."""
        reason = f"no heartbeat for {silent:.1f}s"
        log.warning("worker %s missing (%s); requeueing %d task(s)", worker.worker_id, reason, len(worker.inflight))
        worker.state = "missing"
        worker.abandoned.update(worker.inflight)
        # A silent worker may be stopped or cut off and come back: no evidence against the task.
        self._give_up(worker, f"worker {worker.worker_id} missing: {reason}", died=None)
        self.state.store_worker(worker, "missing")
        self.state.publish(events.WORKER, {"event": "missing", "worker_id": worker.worker_id, "reason": reason})
        self.state.placement_due = True

    def lost(self, worker: WorkerInfo, reason: str, state: str = "dead") -> None:
        """Remove a worker; its in-flight attempts are lost and their tasks requeued."""
        core = self.state
        if core.registry.get(worker.worker_id) is not worker:
            return  # already replaced or removed
        core.registry.remove(worker.worker_id)
        if worker.fd is not None and self.by_fd.get(worker.fd) is worker:
            del self.by_fd[worker.fd]
        core.scheduler.strategy.remove_worker(worker.worker_id)
        log.log(
            logging.WARNING if worker.inflight or state == "dead" else logging.INFO,
            "worker %s %s (%s); requeueing %d task(s)",
            worker.worker_id,
            state,
            reason,
            len(worker.inflight),
        )
        # Only a process or connection that died under a task is evidence against it (poison),
        # and only for the tasks it was running: the oldest `slots` it held (it starts them first).
        died = f"{worker.worker_id} ({reason})" if state == "dead" and reason == CONNECTION_CLOSED else None
        self._give_up(worker, f"worker {worker.worker_id} {state}: {reason}", died=died)
        core.store_worker(worker, state)
        if core.guard is not None and core.guard.release(worker.worker_id):
            # gone: its id is free again
            core.store.put("worker_keys", rows.worker_key_row(worker.worker_id, None, core.wall))
        core.publish(events.WORKER, {"event": state, "worker_id": worker.worker_id, "reason": reason})
        core.hook("on_worker_lost", worker, reason)
        core.placement_due = True

    def _give_up(self, worker: WorkerInfo, reason: str, died: str | None) -> None:
        """The one requeue loop: every attempt the worker held is lost. ``died`` is evidence
        against the oldest ``slots`` of them (those it was running), None for none."""
        for index, (task_id, attempt) in enumerate(list(worker.inflight.items())):
            evidence = died if index < worker.slots else None
            self.state.attempt_lost(task_id, attempt, reason, died=evidence)
        worker.inflight.clear()

    # --------------------------------------------------------------- events

    def _on_send_failed(self, event: SendFailed) -> None:
        worker = self.state.registry.by_peer(event.peer)
        if worker is None:
            return
        if event.kind == protocol.REGISTERED and event.reason == CONNECTION_CLOSED:
            self._unanswered(worker)
        else:
            self.lost(worker, event.reason)

    def _unanswered(self, worker: WorkerInfo) -> None:
        """Its REGISTERED found the connection closed: the worker gave up waiting for the answer
        (a broker slow to answer, as one just restarted under load) and registers again on a new
        connection, saying what it holds. What it reported waits for that, as after a restart,
        instead of being requeued and run twice (a finished result rerun); if it does not come
        back within the grace, the health check requeues it. Anything assigned with the
        REGISTERED never reached it: requeued now, and no evidence against those tasks."""
        state = self.state
        parked = {t: a for t, a in worker.reported.items() if worker.inflight.get(t) == a}
        for task_id in parked:
            del worker.inflight[task_id]
        if parked:
            state.orphans.setdefault(worker.worker_id, {}).update(parked)
            state.orphans_deadline = max(state.orphans_deadline, state.now + state.health.return_grace)
        self.lost(worker, "its REGISTERED found the connection closed; waiting for it to register again")

    def _on_disconnected(self, event: Disconnected) -> None:
        worker = self.by_fd.pop(event.fd, None)
        if worker is not None and self.state.registry.get(worker.worker_id) is worker:
            # The descriptor may already serve a new connection: a probe tells. Sending to a
            # closed peer fails (unreachable), which comes back as SendFailed: lost.
            self.state.send(worker.peer, protocol.HEARTBEAT, {})

    def _on_revoked(self, event: Revoked) -> None:
        for worker_id in event.worker_ids:
            worker = self.state.registry.get(worker_id)
            if worker is not None:
                self.lost(worker, "its CURVE key was revoked")

    def _send_heartbeats(self, event: Heartbeats) -> None:
        interval = self.state.health.interval_for(len(self.state.registry))
        for worker in self.state.registry:
            self.state.send(worker.peer, protocol.HEARTBEAT, {"interval": interval})
            # A send that fails loses the worker (SendFailed), so the interval told is this one.
            worker.heartbeat_interval = interval

    def _check_health(self, event: HealthCheck) -> None:
        state, now = self.state, self.state.now
        backlog = event.backlog_since
        if backlog is not None and now - backlog < state.health.interval * state.health.dead_liveness:
            return  # frames wait unread, heartbeats perhaps among them: no worker is judged silent now
        missing, dead = state.health.check(state.registry, now)
        for worker in missing:
            self._missing(worker, now - worker.last_seen)
        for worker in dead:
            self.lost(worker, f"no heartbeat for {now - worker.last_seen:.1f}s")
        if self.bindings_due is not None and now >= self.bindings_due:
            self.bindings_due = None
            for worker_id in [w for w in state.guard.bindings if state.registry.get(w) is None]:
                state.guard.release(worker_id)
                state.store.put("worker_keys", rows.worker_key_row(worker_id, None, state.wall))
        if state.orphans and now >= state.orphans_deadline:
            for worker_id, held in state.orphans.items():
                for task_id, attempt in held.items():
                    state.attempt_lost(task_id, attempt, f"worker {worker_id} did not return in time")
            state.orphans.clear()
