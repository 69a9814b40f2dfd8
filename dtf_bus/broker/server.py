"""The broker: one ROUTER for workers and clients, one PUB for events, one loop that routes.

The loop reads a batch of frames, hands each to the handler for its message type, runs due
timers (heartbeats, liveness, metrics, delayed retries) and then asks the scheduler for
placements once. Policy lives elsewhere: placement in :mod:`dtf_bus.broker.scheduler` and
:mod:`dtf_bus.balancer`, liveness in :mod:`dtf_bus.broker.health`, persistence in
:mod:`dtf_bus.store.db`, restart recovery in :mod:`dtf_bus.store.recovery`.

Durability rule: anything the broker acknowledges (a submitted job, a worker's result, a
finished job to a waiting client) is committed to DuckDB first. Such replies wait in
``_awaiting`` until the store's writer reports the commit through ``store.notify_fd``.
"""

from __future__ import annotations

import collections
import gc
import heapq
import itertools
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from dtf_bus import balancer, defaults, events, logs, memory, protocol, resources, spec
from dtf_bus.analysis import requests
from dtf_bus.broker import matching
from dtf_bus.broker.health import Health
from dtf_bus.broker.hooks import BrokerHook
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry, WorkerInfo
from dtf_bus.durations import Durations
from dtf_bus.runmeta import MetaError, validate_meta
from dtf_bus.security import curve as security
from dtf_bus.security import roles
from dtf_bus.ship.store import ShipStore
from dtf_bus.store import recovery, rows
from dtf_bus.store.archive import Archive
from dtf_bus.store.db import Store, StoreFailure
from dtf_bus.store.results import ResultRows, test_history
from dtf_bus.task import Attempt, Job, Task, TaskState

log = logging.getLogger("dtf.broker")

BATCH = 512  # frames handled between two placement rounds
# Sent only by a registered worker: from anyone else, out of order (the broker restarted, or
# declared the worker dead), answered with REREGISTER.
_SESSION_KINDS = frozenset(
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
# Plain ints: pyzmq's flag enums cost an enum operation per frame on the hottest path.
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)


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
        dead_liveness: int = defaults.DEAD_LIVENESS,
        max_lost_workers: int = defaults.MAX_LOST_WORKERS,
        prefetch: int | None = defaults.PREFETCH,
        steal: bool = True,
        hooks: list[BrokerHook] | None = None,
        curve_secret: str | Path | None = None,
        authorized_keys: str | Path | None = None,
        insecure: bool = False,
        max_live_tasks: int = defaults.MAX_LIVE_TASKS,
        submitter_quota: int = defaults.SUBMITTER_QUOTA,
        finished_job_ttl: float = defaults.FINISHED_JOB_TTL,
        db_memory_limit: str | None = defaults.STORE_MEMORY_LIMIT,
        ship_store_bytes: int = defaults.SHIP_STORE_BYTES,
    ) -> None:
        """``insecure``: allow a non-loopback endpoint without CURVE (refused otherwise)."""
        if authorized_keys and not curve_secret:
            raise security.SecurityError("--authorized-keys needs --curve-secret (the broker's own keypair)")
        if not curve_secret:
            security.refuse_if_exposed([bind, metrics_bind], insecure)
        self.hooks: list[BrokerHook] = [ResultRows(), *(hooks or [])]  # test/benchmark rows by default
        self.health = Health(heartbeat_interval, heartbeat_liveness, max(dead_liveness, heartbeat_liveness))
        self.max_lost_workers = max_lost_workers
        self.registry = Registry()
        self.history = Durations()
        self.scheduler = Scheduler(self.registry, balancer.load(strategy, self.history), self.history, prefetch)
        self._steals: dict[str, tuple[str, int]] = {}  # task id -> (thief id, attempt) asked for
        self._durations_dirty: set[tuple[str, str, str]] = set()  # learned durations not yet stored
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, Job] = {}
        self.state_counts: Counter[str] = Counter()
        # Bounds on what clients may make the broker hold (defaults.py): unfinished tasks in all
        # and per submitter; finished jobs leave memory finished_job_ttl seconds after their end.
        self.max_live_tasks = max_live_tasks
        self.submitter_quota = submitter_quota
        self.finished_job_ttl = finished_job_ttl
        self._live_by_submitter: Counter[str] = Counter()
        # (release due, job id, store mark): released once due and its rows are all committed,
        # so a request that reads it back from DuckDB sees its final state.
        self._finished_jobs: collections.deque[tuple[float, str, int]] = collections.deque()
        self._durable_seen = 0  # the store's durable mark as of the last _release_durable
        self._unwritable: set[bytes] = set()  # worker peers a send found full (_drop_unwritable)
        self._summaries: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()  # released jobs
        self._backlog_since: float | None = None  # frames waited unread since then (see _check_health)
        self._follow_due: set[str] = set()  # jobs whose followers have news, answered once per loop turn
        self._follow_expiry: list[tuple[float, int, str]] = []  # (deadline, seq, job id) of follow waits
        self._follow_seq = itertools.count()
        self._bindings_due: float | None = None  # when worker ids bound before a restart are released
        self._placement_deadlines: dict[str, float] = {}  # task id -> monotonic deadline (placement_timeout)
        # Every plugin name and capability key any worker offered in this broker's life, for
        # did-you-mean hints when a submitted task asks for one nobody has.
        self._seen_plugins: set[str] = set()
        self._seen_keys: set[str] = set()
        self._malformed = logs.RateLimited(log)  # a peer sending garbage in a loop must not flood the log
        # A worker back from an outage re-sends every unacknowledged result and our sends to a
        # vanished peer fail one by one: thousands of lines each time, so one per worker and minute.
        self._redelivered = logs.RateLimited(log, logging.INFO)
        self._send_failed = logs.RateLimited(log)
        self._stopping = False
        self._placement_due = False
        self._by_fd: dict[int, WorkerInfo] = {}
        self._dependents: dict[str, list[str]] = {}  # task id -> ids of tasks that wait for it
        self._delayed: list[tuple[float, int, Task]] = []  # (due, seq, task): retries in back-off
        self._orphans: dict[str, dict[str, int]] = {}  # worker id -> attempts restored from the db
        self._orphans_deadline = 0.0
        # Replies that promise durability: collected per batch, then released by store marks.
        # Results are acknowledged per worker, all of a batch's in one RESULT_ACK.
        self._awaiting: list[tuple[bytes, str, dict[str, Any]]] = []
        self._acks: dict[bytes, list[tuple[str, int]]] = {}
        self._awaiting_urgent = False
        self._unreleased: collections.deque[
            tuple[int, list[tuple[bytes, str, dict[str, Any]]], dict[bytes, list[tuple[str, int]]]]
        ] = collections.deque()

        self.ctx = zmq.Context()
        # CURVE on both sockets, admitting only authorized keys (dtf_bus.security.curve); None: plaintext.
        self.guard = security.KeyGuard(self.ctx, curve_secret, authorized_keys) if curve_secret else None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unreachable peer -> error, not silence
        self.router.setsockopt(zmq.MAXMSGSIZE, defaults.MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        if self.guard is not None:
            self.guard.secure(self.router)
        self.router.bind(zmq_endpoint(bind))
        # A closed TCP connection shows here within a millisecond; heartbeats are only the net.
        self.monitor = self.router.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | (security.HANDSHAKE_FAILED_EVENTS if self.guard else 0)
        )
        self.pub = self.ctx.socket(zmq.XPUB)  # XPUB: it tells us which topics anyone wants
        self.pub.setsockopt(zmq.LINGER, 0)
        if self.guard is not None:
            self.guard.secure(self.pub)
        self.pub.bind(zmq_endpoint(metrics_bind))
        self.endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.metrics_endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.events = events.Publisher(self.pub)
        self.store = Store(db, memory_limit=db_memory_limit)
        self.archive = Archive(self.store)
        self.ships = ShipStore(ShipStore.beside(db), ship_store_bytes)  # shipped code (dtf_bus/ship/store.py)
        self._restore()

        self._handlers: dict[str, Callable[[bytes, dict[str, Any]], None]] = {
            protocol.REGISTER: self._on_register,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.TASK_STARTED: self._on_task_started,
            protocol.TASK_RESULT: self._on_task_result,
            protocol.TASK_PROGRESS: self._on_task_progress,
            protocol.UNREGISTER: self._on_unregister,
            protocol.DRAIN: self._on_drain,
            protocol.STEAL_ACK: self._on_steal_ack,
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
            protocol.BALANCER_STATS: lambda peer, body: self._reply(peer, body, self.scheduler.stats()),
            protocol.PING: self._on_ping,
            **self.ships.handlers(self._send),  # ship_have, ship_put, ship_get
        }
        self._gc_thaw_due = time.monotonic() + defaults.GC_THAW_INTERVAL
        self._heartbeat_timer = Timer(heartbeat_interval, self._send_heartbeats)
        self._timers = [
            self._heartbeat_timer,
            # Checked ten times per interval, so detection lags the limit by at most 10 %.
            Timer(max(min(heartbeat_interval / 10, 0.25), 0.01), self._check_health),
            Timer(defaults.METRICS_INTERVAL, self._tick),
            Timer(defaults.GC_FREEZE_INTERVAL, self._freeze_heap),
            *([Timer(defaults.KEYS_RELOAD_INTERVAL, self._check_keys)] if self.guard else []),
        ]
        if steal:
            self._timers.append(Timer(defaults.STEAL_INTERVAL, self._steal))

    # ------------------------------------------------------------------ loop

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self.store.notify_fd, zmq.POLLIN)
        poller.register(self.archive.notify_fd, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        log.info("broker listening on %s, events on %s", self.endpoint, self.metrics_endpoint)
        self._hook("on_start")
        try:
            while not self._stopping:
                due = min(t.due for t in self._timers)
                if self._delayed:
                    due = min(due, self._delayed[0][0])
                if self._follow_expiry:
                    due = min(due, self._follow_expiry[0][0])
                ready = dict(poller.poll(max(due - time.monotonic(), 0) * 1000))
                if self.router in ready:
                    self._read_frames()
                if self.monitor in ready:
                    self._on_socket_events()
                if self.pub in ready:
                    self.events.read_subscriptions()
                now = time.monotonic()
                for timer in self._timers:
                    if timer.due <= now:
                        timer.due = now + timer.period
                        timer.fn(now)
                self._release_delayed(now)
                if self._follow_due or self._follow_expiry:
                    self._answer_followers(now)
                if self._placement_due:
                    self._placement_due = False
                    self._place()
                if self._unwritable:
                    self._drop_unwritable()
                if self._awaiting or self._acks:
                    self._unreleased.append((self.store.mark(self._awaiting_urgent), self._awaiting, self._acks))
                    self._awaiting, self._acks, self._awaiting_urgent = [], {}, False
                if self.archive.notify_fd in ready:
                    self._archived()
                if self.store.notify_fd in ready:
                    self.store.drain_notify()
                    self._release_durable()
        finally:
            self.close()

    def _read_frames(self) -> None:
        """Handle up to BATCH frames within LOOP_BATCH_BUDGET seconds, so timers (heartbeats
        among them) run between batches however large the messages; note when frames are left."""
        deadline = time.monotonic() + defaults.LOOP_BATCH_BUDGET
        for _ in range(BATCH):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._backlog_since = None
                return
            self._dispatch(frames)
            if time.monotonic() > deadline:
                break
        if self._backlog_since is None:
            self._backlog_since = time.monotonic()

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def close(self) -> None:
        self._hook("on_stop")
        self._store_durations()
        self.store.flush()
        self._release_durable()
        self.router.disable_monitor()
        self.monitor.close()
        self.router.close()
        self.pub.close()
        if self.guard is not None:
            self.guard.close()
        self.ctx.term()
        self.archive.close()
        self.store.close()
        self.ships.close()
        log.info("broker stopped; results in %s", self.store.path)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        if self.guard is not None and self.guard.revoked and self.guard.cut_off(peer, frames[-1]):
            return  # a connection whose key was revoked after its handshake: no reply, no service
        if len(frames) != 2:
            self._malformed(peer, "dropping message with %d frames (expected 1 after the routing id)", len(frames) - 1)
            self._send(peer, protocol.ERROR, {"error": "expected exactly one frame"})
            return
        try:
            kind, body = protocol.decode(frames[1].buffer)
        except protocol.ProtocolError as exc:
            self._malformed(peer, "malformed message from peer %s: %s", peer.hex(), exc)
            self._send(peer, protocol.ERROR, {"req": exc.req, "error": str(exc)})
            return
        worker = self.registry.by_peer(peer)
        if worker is not None:
            worker.last_seen = time.monotonic()
            if worker.state == "missing":
                self._worker_back(worker)
        elif kind in _SESSION_KINDS:
            # Out of order: a worker we do not know (broker restarted, or declared dead).
            self._send(peer, protocol.REREGISTER, {"reason": "unknown worker, please register"})
            return
        if self.guard is not None and kind in roles.ALLOWED:
            key = frames[1].get("User-Id")  # the peer's CURVE key, set by our ZAP handler
            name, role = self.guard.identity(key)
            refusal = roles.refusal(role, name, kind)
            if refusal is not None:
                self.guard.refused(name, refusal)
                self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": refusal})
                return
            body["_key"], body["_who"] = key, (name, role)
        if kind == protocol.REGISTER:
            body["_fd"] = frames[1].get(zmq.SRCFD)
        if kind not in self._handlers:  # valid, but only ever sent by the broker (assign, reply...)
            log.warning("unexpected %s message from peer %s", kind, peer.hex())
            self._send(peer, protocol.ERROR, {"error": f"the broker does not take {kind} messages"})
            return
        self._handle(peer, kind, body)

    def _handle(self, peer: bytes, kind: str, body: dict[str, Any], deferred: bool = False) -> None:
        try:
            self._handlers[kind](peer, body)
        except _NotHeld:
            # A job not in memory: read on the archive thread, answered when it is back (_archived).
            if deferred or not self.archive.load(peer, kind, body):
                why = "the broker is busy reading jobs from its results store; try again"
                self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": why})
        except _ClientError as exc:
            self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": str(exc)})
        except Exception:
            log.exception("error handling %s from %s", kind, peer.hex())
            self._send(peer, protocol.ERROR, {"req": body.get("req"), "error": f"internal error handling {kind}"})

    def _archived(self) -> None:
        """Jobs the archive thread read back: adopt each (released again after the TTL) and
        answer the request that wanted it, as if the job had been in memory all along."""
        for loaded in self.archive.taken():
            if loaded.error is not None:
                self._send(loaded.peer, protocol.ERROR, {"req": loaded.body.get("req"), "error": loaded.error})
                continue
            if not loaded.kind:  # a plain read: its value is the answer
                self._reply(loaded.peer, loaded.body, loaded.reply)
                continue
            job_id = loaded.body["job_id"]
            if job_id not in self.jobs:
                if not loaded.jobs:
                    error = f"unknown job {job_id!r}"
                    self._send(loaded.peer, protocol.ERROR, {"req": loaded.body.get("req"), "error": error})
                    continue
                self._adopt(loaded.jobs, loaded.tasks, count=False)
            self._handle(loaded.peer, loaded.kind, loaded.body, deferred=True)

    def _hook(self, point: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, point)(self, *args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, point)

    def _send(self, peer: bytes, kind: str, body: dict[str, Any]) -> bool:
        try:
            self.router.send(peer, _MORE)
            self.router.send(protocol.encode(kind, body), _LAST)
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                worker = self.registry.by_peer(peer)
                if worker is not None:
                    self._worker_lost(worker, CONNECTION_CLOSED)
            elif exc.errno == zmq.EAGAIN and self.registry.by_peer(peer) is not None:
                # A worker not reading its messages (the pipe is at its high-water mark): what was
                # not sent (an ASSIGN, a REGISTERED) must not be believed delivered, so its tasks go
                # elsewhere and it registers afresh; after the current message (see _drop_unwritable).
                self._unwritable.add(peer)
                self._send_failed(peer, "send %s to %s failed: %s", kind, peer.hex(), exc)
            else:
                self._send_failed(peer, "send %s to %s failed: %s", kind, peer.hex(), exc)
            return False

    def _drop_unwritable(self) -> None:
        """Workers a send found full: lost (not as evidence against their tasks: they were only
        slow), so nothing stays assigned on the word of a message that was never sent."""
        for peer in self._unwritable:
            worker = self.registry.by_peer(peer)
            if worker is not None:
                self._worker_lost(worker, SEND_QUEUE_FULL)
        self._unwritable.clear()

    def _reply(self, peer: bytes, body: dict[str, Any], data: dict[str, Any] | list[Any]) -> None:
        self._send(peer, protocol.REPLY, {"req": body["req"], "data": data})

    def _send_durable(self, peer: bytes, kind: str, body: dict[str, Any], urgent: bool = False) -> None:
        """Send once everything stored so far is committed (acknowledge only what survives)."""
        self._awaiting.append((peer, kind, body))
        self._awaiting_urgent = self._awaiting_urgent or urgent

    def _release_durable(self) -> None:
        durable, refused = self.store.durable()  # refused rows first: never acknowledged
        if refused:
            self._unstored(refused)
        self._durable_seen = durable  # what finished jobs may be released against (refusals handled)
        while self._unreleased and self._unreleased[0][0] <= durable:
            _, replies, acks = self._unreleased.popleft()
            for peer, kind, body in replies:
                self._send(peer, kind, body)
            for peer, results in acks.items():
                if results:
                    self._send(peer, protocol.RESULT_ACK, {"acks": results})

    def _on_socket_events(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] != zmq.EVENT_DISCONNECTED:
                self.guard.handshake_failed(event)
                continue
            worker = self._by_fd.pop(event["value"], None)
            if worker is not None and self.registry.get(worker.worker_id) is worker:
                # The descriptor may already serve a new connection: a probe tells. Sending to a
                # closed peer fails with EHOSTUNREACH, which _send turns into _worker_lost.
                self._send(worker.peer, protocol.HEARTBEAT, {})

    # --------------------------------------------------------------- workers

    def _on_register(self, peer: bytes, body: dict[str, Any]) -> None:
        worker_id = body["worker_id"].strip()
        caps = dict(body["capabilities"])
        hardware = caps.get("hardware", [])
        if not worker_id or body["slots"] < 1 or not isinstance(hardware, list):
            raise _ClientError("register: worker_id must be non-empty, slots >= 1, hardware a list")
        current = self.registry.by_peer(peer)
        if current is not None and current.worker_id != worker_id:
            raise _ClientError(f"register: this connection is worker {current.worker_id!r}; one id per connection")
        new_binding = False
        if self.guard is not None:
            new_binding = self.guard.key_of(worker_id) is None
            refusal = self.guard.bind(worker_id, body.get("_key"))
            if refusal is not None:
                raise _ClientError(f"register: {refusal}")
            if new_binding:  # durable, so a restarted broker still knows whose id it is
                self.store.put("worker_keys", rows.worker_key_row(worker_id, body["_key"]))
        caps["hardware"] = [str(h) for h in hardware]
        self._seen_plugins.update(str(p) for p in body["plugins"])
        self._seen_keys.update(caps)
        interval = self.health.interval_for(len(self.registry) + 1)
        worker = WorkerInfo(
            worker_id=worker_id,
            peer=peer,
            capabilities=caps,
            slots=body["slots"],
            plugins=frozenset(str(p) for p in body["plugins"]),
            fd=body.get("_fd"),
            heartbeat_interval=interval,
            prefetch=self.scheduler.initial_prefetch,
            resources=body.get("resources") or {},
        )
        old = self.registry.add(worker)
        if worker.fd is not None:
            previous = self._by_fd.get(worker.fd)
            self._by_fd[worker.fd] = worker
            if previous is not None and previous is not old and self.registry.get(previous.worker_id) is previous:
                self._send(previous.peer, protocol.HEARTBEAT, {})  # its connection must be gone: probe
        # Attempts this worker says it holds: running or queued on it, and finished with the result
        # not yet acknowledged (``finished``: those are coming, never cancelled; an older worker
        # lists them under ``running``).
        running = {tuple(r) for r in body.get("running", []) if isinstance(r, list | tuple) and len(r) == 2}
        reported = running | {tuple(r) for r in body.get("finished", []) if isinstance(r, list | tuple) and len(r) == 2}
        held = dict(old.inflight) if old is not None else {}
        held.update(self._orphans.pop(worker_id, {}))
        if old is not None:
            self.scheduler.strategy.remove_worker(old.worker_id)
        # Its own connection (it answers each REREGISTER of a burst): what it omits crossed it.
        same_connection = old is not None and old.peer == peer
        for task_id, attempt in held.items():
            if (task_id, attempt) in reported or same_connection:
                task = self.tasks.get(task_id)  # still there (or on its way): keep it, and what it holds
                worker.take(task_id, attempt, task.resources if task is not None else {})
            else:
                # Its process restarted under the task: evidence, as a death is.
                self._attempt_lost(
                    task_id, attempt, f"worker {worker_id} re-registered without it", died=f"{worker_id} (restarted)"
                )
        for task_id, attempt in reported:
            if worker.inflight.get(task_id) != attempt:
                if (task_id, attempt) in running:  # at most slots + prefetch of them: a finished one needs none
                    self._send(peer, protocol.CANCEL, {"task_id": task_id, "attempt": attempt, "reason": "superseded"})
                if task_id in self.tasks and isinstance(attempt, int):
                    self.tasks[task_id].skip_reported(attempt)  # a number never handed out again
        self.scheduler.strategy.add_worker(worker)
        registered = {"heartbeat_interval": interval, "heartbeat_liveness": self.health.liveness}
        if self.guard is not None and new_binding:
            self._send_durable(peer, protocol.REGISTERED, registered, urgent=True)  # the binding survives a crash
        else:
            self._send(peer, protocol.REGISTERED, registered)
        log.info(
            "worker %s %s (slots=%d, hardware=%s, holding %d task(s))",
            worker_id,
            "re-registered" if old else "registered",
            worker.slots,
            ",".join(worker.hardware),
            len(worker.inflight),
        )
        self._store_worker(worker, "alive")
        self.events.publish(events.WORKER, {"event": "registered", "worker": worker.to_dict()})
        self._hook("on_worker_registered", worker)
        self._placement_due = True

    def _on_heartbeat(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        if worker is None:  # _worker_back's sends found the old connection gone: the worker was just removed
            return
        if "metrics" in body:
            worker.metrics = body["metrics"]
        self._hook("on_heartbeat", worker)

    def _on_unregister(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        if worker is not None:
            self._worker_lost(worker, "unregistered", state="left")

    def _on_drain(self, peer: bytes, body: dict[str, Any]) -> None:
        """The worker got SIGTERM: it finishes what it has and takes nothing new."""
        self._set_draining(self.registry.by_peer(peer), body.get("reason", "worker is draining"))

    def _set_draining(self, worker: WorkerInfo, reason: str) -> None:
        if worker.state != "draining":
            worker.state = "draining"
            log.info("worker %s draining (%s); %d task(s) to finish", worker.worker_id, reason, len(worker.inflight))
            self._store_worker(worker, "draining")
            self.events.publish(events.WORKER, {"event": "draining", "worker_id": worker.worker_id})

    def _worker_back(self, worker: WorkerInfo) -> None:
        """A missing worker spoke again: serve it, and stop what it ran for us before."""
        log.info("worker %s is back after being missing", worker.worker_id)
        worker.state = "alive"
        for task_id, attempt in worker.abandoned.items():
            self._send(worker.peer, protocol.CANCEL, {"task_id": task_id, "attempt": attempt, "reason": "superseded"})
        worker.abandoned.clear()
        self._store_worker(worker, "alive")
        self.events.publish(events.WORKER, {"event": "back", "worker_id": worker.worker_id})
        self._placement_due = True

    def _worker_missing(self, worker: WorkerInfo, silent: float) -> None:
        """Silent past the liveness limit: requeue its tasks now, keep its registration a while."""
        reason = f"no heartbeat for {silent:.1f}s"
        log.warning("worker %s missing (%s); requeueing %d task(s)", worker.worker_id, reason, len(worker.inflight))
        worker.state = "missing"
        worker.abandoned.update(worker.inflight)
        for task_id, attempt in list(worker.inflight.items()):
            # A silent worker may be stopped or cut off and come back: no evidence against the task.
            self._attempt_lost(task_id, attempt, f"worker {worker.worker_id} missing: {reason}")
        worker.inflight.clear()
        self._store_worker(worker, "missing")
        self.events.publish(events.WORKER, {"event": "missing", "worker_id": worker.worker_id, "reason": reason})
        self._placement_due = True

    def _worker_lost(self, worker: WorkerInfo, reason: str, state: str = "dead") -> None:
        """Remove a worker; its in-flight attempts are lost and their tasks requeued."""
        if self.registry.get(worker.worker_id) is not worker:
            return  # already replaced or removed
        self.registry.remove(worker.worker_id)
        if worker.fd is not None and self._by_fd.get(worker.fd) is worker:
            del self._by_fd[worker.fd]
        self.scheduler.strategy.remove_worker(worker.worker_id)
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
        died = state == "dead" and reason == CONNECTION_CLOSED
        for index, (task_id, attempt) in enumerate(list(worker.inflight.items())):
            evidence = f"{worker.worker_id} ({reason})" if died and index < worker.slots else None
            self._attempt_lost(task_id, attempt, f"worker {worker.worker_id} {state}: {reason}", died=evidence)
        worker.inflight.clear()
        self._store_worker(worker, state)
        if self.guard is not None and self.guard.release(worker.worker_id):
            self.store.put("worker_keys", rows.worker_key_row(worker.worker_id, None))  # gone: its id is free again
        self.events.publish(events.WORKER, {"event": state, "worker_id": worker.worker_id, "reason": reason})
        self._hook("on_worker_lost", worker, reason)
        self._placement_due = True

    # ----------------------------------------------------------- task flow

    def _current(self, worker: WorkerInfo, task_id: str, attempt: int) -> Task | None:
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
        task = self._current(worker, body["task_id"], body["attempt"])
        if task is None:
            log.info("ignoring start of stale attempt %s#%d on %s", body["task_id"], body["attempt"], worker.worker_id)
            self._send(
                peer, protocol.CANCEL, {"task_id": body["task_id"], "attempt": body["attempt"], "reason": "superseded"}
            )
            return
        if task.state is TaskState.ASSIGNED:
            # Not stored: recovery treats assigned and running alike, and the final rows carry
            # the start time, so a row here would be one more write per task for nothing.
            task.started_at = body["started_at"]
            task.history[-1].started_at = task.started_at
            self._move(task, TaskState.RUNNING)

    def _on_task_result(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.by_peer(peer)
        # Acknowledged once committed: until then the worker keeps the results and resends them.
        acks = self._acks.setdefault(peer, [])
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
            task = self._current(worker, update["task_id"], update["attempt"])
            if task is None:
                continue  # stale, or already finished: its result holds it all
            job = self.jobs[task.job_id]
            job.progress.append({"task_id": task.task_id, "name": task.name, "data": update["data"]})
            if len(job.progress) > defaults.PROGRESS_KEEP:
                drop = len(job.progress) - defaults.PROGRESS_KEEP
                del job.progress[:drop]
                job.progress_base += drop
            if job.followers:
                self._follow_due.add(job.job_id)

    def _task_result(self, worker: WorkerInfo, body: dict[str, Any]) -> None:
        task_id, attempt, outcome = body["task_id"], body["attempt"], body["outcome"]
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
            self.scheduler.task_done(task, worker, record.ended_at - record.started_at)
            self._durations_dirty.add((worker.worker_id, task.plugin, task.key))
        if outcome == "succeeded":
            self._finish(task, TaskState.SUCCEEDED, record)
        elif outcome == "cancelled":
            # Workers cancel only when told; still current, this attempt was superseded by a broker
            # that died before storing that (job cancels are final here already): no verdict.
            self._requeue(task)
        elif task.failures < task.retries:
            task.failures += 1
            self._retry_later(task, outcome)
        else:
            final = TaskState.TIMED_OUT if outcome == "timed_out" else TaskState.FAILED
            self._finish(task, final, record)

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
        self._store_attempt(task, record)
        self._hook("on_attempt_result", task, record)

    def _attempt_lost(self, task_id: str, attempt: int, reason: str, died: str | None = None) -> None:
        """The attempt's worker is gone, and the task is requeued. ``died`` ("worker (how)") when
        the worker's process or connection died while running it: evidence that the task kills
        workers, which fails it as poison after ``max_lost_workers`` such deaths."""
        task = self.tasks.get(task_id)
        if task is None or task.attempt != attempt or task.state.final:
            return
        record = task.history[-1]
        record.outcome = "lost"
        record.error = reason
        record.ended_at = time.time()
        self._store_attempt(task, record)
        if died is not None:
            task.lost_workers += 1
            task.lost_on.append(died)
        if task.lost_workers >= self.max_lost_workers:
            how = ", ".join(task.lost_on) or reason
            self._finish(task, TaskState.FAILED, record, error=f"lost {task.lost_workers} workers running it: {how}")
        else:
            self._requeue(task)

    # ------------------------------------------------------------ task state

    def _move(self, task: Task, state: TaskState) -> None:
        """Every task state change goes through here: counted, and published on events.task."""
        if self._steals.pop(task.task_id, None) is not None:  # a steal it outran
            self.scheduler.steal_done(task, None)
        self.state_counts[task.state] -= 1
        task.move(state)
        self.state_counts[state] += 1
        if self.events.wanted(events.TASK):
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
        if self.hooks:
            self._hook("on_task_state", task)

    def _requeue(self, task: Task, enqueue: bool = True) -> None:
        task.attempt = max(task.attempt, task.reported_attempt) + 1
        task.worker_id = None
        task.started_at = None
        self._move(task, TaskState.QUEUED)
        if enqueue:
            self.scheduler.enqueue(task)
            self._placement_due = True
        self._store_task(task)

    def _retry_later(self, task: Task, outcome: str) -> None:
        """Requeue after an exponential back-off with jitter, so a failing dependency (a full
        disk, a flaky service) is not hammered by every retry at once."""
        base = min(task.retry_backoff * 2 ** (task.failures - 1), defaults.RETRY_BACKOFF_MAX)
        delay = base * random.uniform(0.5, 1.5)
        log.info(
            "task %s attempt %d %s; retry %d of %d in %.2fs",
            task.task_id,
            task.attempt,
            outcome,
            task.failures,
            task.retries,
            delay,
        )
        self._requeue(task, enqueue=False)
        heapq.heappush(self._delayed, (time.monotonic() + delay, task.seq, task))

    def _release_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            task = heapq.heappop(self._delayed)[2]
            if task.state is TaskState.QUEUED:
                self.scheduler.enqueue(task)
                self._placement_due = True

    def _finish(self, task: Task, state: TaskState, record: Attempt | None, error: str | None = None) -> None:
        task.ended_at = time.time()
        if record is not None:
            task.started_at = record.started_at
            task.result = record.result
        task.error = error or (record.error if record else None)
        self._move(task, state)
        self._store_task(task)
        self._dependencies_done(task)
        job = self.jobs[task.job_id]
        job.unfinished -= 1
        job.finished.append(task.task_id)
        if job.followers:
            self._follow_due.add(job.job_id)
        self._live_by_submitter[job.submitter] -= 1
        if self._live_by_submitter[job.submitter] <= 0:
            del self._live_by_submitter[job.submitter]
        if job.done:
            self._job_done(job)

    def _job_done(self, job: Job) -> None:
        self._finished_jobs.append((time.monotonic() + self.finished_job_ttl, job.job_id, self.store.mark()))
        status = self._job_status(job)
        for peer, req in job.waiters:
            self._send_durable(peer, protocol.REPLY, {"req": req, "data": status}, urgent=True)
        job.waiters.clear()
        if job.followers:
            self._follow_due.add(job.job_id)
        self.events.publish(events.TASK, {"event": "job_done", "job_id": job.job_id, "counts": status["counts"]})

    def _track_dependencies(self, task: Task) -> None:
        """Queue a task now, or once the tasks it depends on have succeeded."""
        if task.depends_on:
            task.waiting_on = {d for d in task.depends_on if self.tasks[d].state is not TaskState.SUCCEEDED}
            for dep in task.waiting_on:
                self._dependents.setdefault(dep, []).append(task.task_id)
        if not task.waiting_on:
            self.scheduler.enqueue(task)
            self._placement_due = True

    def _dependencies_done(self, task: Task) -> None:
        """A finished task frees its dependents, or dooms them if it did not succeed."""
        for dep_id in self._dependents.pop(task.task_id, []):
            dependent = self.tasks[dep_id]
            if dependent.state.final:
                continue
            if task.state is TaskState.SUCCEEDED:
                dependent.waiting_on.discard(task.task_id)
                if not dependent.waiting_on:
                    self.scheduler.enqueue(dependent)
                    self._placement_due = True
            else:
                self._finish(dependent, TaskState.CANCELLED, None, error=f"dependency {task.name!r} {task.state}")

    def _place(self) -> None:
        """Assign what the scheduler places; each worker gets its share in one ASSIGN."""
        batches: dict[str, tuple[WorkerInfo, list[Task]]] = {}
        now = time.time()
        placed = self.scheduler.place()
        if len(placed) == defaults.PLACE_BATCH:
            self._placement_due = True  # more next time round, after reading what has arrived
        for task, worker in placed:
            task.worker_id = worker.worker_id
            task.assigned_at = now
            record = Attempt(task.attempt, worker.worker_id, now)
            task.history.append(record)
            self._move(task, TaskState.ASSIGNED)
            batches.setdefault(worker.worker_id, (worker, []))[1].append(task)
            self._store_attempt(task, record)
            self._store_task(task)
        for worker, tasks in batches.values():
            self._send_assign(worker, tasks)

    def _send_assign(self, worker: WorkerInfo, tasks: list[Task]) -> None:
        self._send(
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

    # ---------------------------------------------------------------- clients

    def _job(self, body: dict[str, Any]) -> Job:
        """The request's job; one not in memory is read off the loop (raises _NotHeld)."""
        job = self.jobs.get(body["job_id"])
        if job is None:
            raise _NotHeld
        return job

    @staticmethod
    def _submitter(body: dict[str, Any]) -> str:
        """Who submits: the CURVE key's name; the broker's own key (its HTTP API) names the API
        key it acts for. Without CURVE there is no identity, only what the client claims."""
        who = body.get("_who")
        if who is None:
            return body.get("submitter") or "anonymous"
        name = who[0]
        return body.get("submitter") or name if name == "broker" else name

    def _admit(self, submitter: str, count: int) -> None:
        """Refuse a job that would take the broker past its task cap or the submitter past its quota."""
        live = self.state_counts[TaskState.QUEUED] + self.state_counts[TaskState.ASSIGNED]
        live += self.state_counts[TaskState.RUNNING]
        if live + count > self.max_live_tasks:
            raise _ClientError(
                f"submit refused: the broker holds {live} unfinished tasks and takes at most {self.max_live_tasks} "
                f"(--max-live-tasks); {count} more do not fit, try again when some have finished"
            )
        mine = self._live_by_submitter[submitter]
        if mine + count > self.submitter_quota:
            raise _ClientError(
                f"submit refused: {submitter} has {mine} unfinished tasks and may hold at most "
                f"{self.submitter_quota} (--submitter-quota); {count} more do not fit"
            )

    def _on_submit(self, peer: bytes, body: dict[str, Any]) -> None:
        try:
            specs = spec.validate(body["tasks"])
        except spec.SpecError as exc:
            raise _ClientError(f"invalid spec: {exc}") from None
        try:
            meta = validate_meta(body.get("meta"))
        except MetaError as exc:
            raise _ClientError(f"invalid metadata: {exc}") from None
        submitter = self._submitter(body)
        if (unshipped := self.ships.missing(specs)) is not None:
            raise _ClientError(f"invalid spec: {unshipped}")
        self._admit(submitter, len(specs))
        if body.get("job_id"):
            job = self._open_job(body, specs)
        else:
            job = Job(uuid.uuid4().hex[:12], body.get("name") or "job", [], submitter=submitter, meta=meta)
            self.jobs[job.job_id] = job
        job.open = bool(body.get("keep_open"))
        self._live_by_submitter[job.submitter] += len(specs)
        first = len(job.task_ids)
        self.store.put("jobs", rows.job_row(job, first + len(specs)))
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
                seq=next(self._seq),
                submitted_at=job.submitted_at,
                depends_on=[ids[name] for name in s["depends_on"]],
                placement_timeout=s["placement_timeout"],
                resources=s["resources"],
            )
            if task.placement_timeout is not None:
                self._placement_deadlines[task.task_id] = time.monotonic() + task.placement_timeout
            self.tasks[task.task_id] = task
            job.task_ids.append(task.task_id)
            self.state_counts[TaskState.QUEUED] += 1
            self._store_task(task)
        for task_id in job.task_ids[first:]:  # once all exist: a dependency may be listed after its dependent
            self._track_dependencies(self.tasks[task_id])
        job.unfinished += len(specs)
        log.info("job %s (%s) from %s: %d task(s) queued", job.job_id, job.name, submitter, len(specs))
        self.events.publish(events.TASK, {"event": "job_submitted", "job_id": job.job_id, "total": len(specs)})
        self._hook("on_job_submitted", job)
        self._placement_due = True
        reply = {"job_id": job.job_id, "total": len(specs)}
        warnings = self._placement_warnings(job.task_ids[first:])
        if warnings:
            reply["warnings"] = warnings
        self._send_durable(peer, protocol.REPLY, {"req": body["req"], "data": reply}, urgent=True)

    def _placement_warnings(self, task_ids: list[str]) -> list[str]:
        """One line per kind of task no live worker can run, said at submit (a typo'd plugin or
        requirement key must not look like a queue that is merely slow), with did-you-mean."""
        kinds: dict[str, list[Task]] = {}
        for task_id in task_ids:
            task = self.tasks[task_id]
            kinds.setdefault(matching.requirement_key(task.plugin, task.requires, task.resources), []).append(task)
        warnings = []
        for tasks in kinds.values():
            reasons = self.scheduler.why_queued(tasks[0])
            if not reasons:
                continue
            names = ", ".join(t.name for t in tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
            hints = matching.suggestions(tasks[0].plugin, tasks[0].requires, self._seen_plugins, self._seen_keys)
            warnings.append(
                f"{len(tasks)} task(s) ({names}) cannot run on any live worker: {'; '.join(reasons + hints)}"
            )
        return warnings

    def _expire_unplaceable(self) -> None:
        """Tasks with a placement_timeout that no live worker could take in time end failed."""
        now = time.monotonic()
        for task_id, deadline in list(self._placement_deadlines.items()):
            task = self.tasks.get(task_id)
            if task is None or task.state is not TaskState.QUEUED:
                del self._placement_deadlines[task_id]  # placed (or over): the deadline is met
            elif now >= deadline and not task.waiting_on:
                reasons = self.scheduler.why_queued(task)
                if reasons:
                    del self._placement_deadlines[task_id]
                    self._finish(
                        task,
                        TaskState.FAILED,
                        None,
                        error=f"not placed within {task.placement_timeout:g}s: {'; '.join(reasons)}",
                    )

    def _open_job(self, body: dict[str, Any], specs: list[dict[str, Any]]) -> Job:
        """The job a submit adds to: open, the sender's own (or an admin's), names still unique."""
        job = self._job(body)
        if not job.open:
            raise _ClientError(f"job {job.job_id} is closed: it takes no more tasks")
        self._check_owner(body, job, "submit to")
        taken = {self.tasks[t].name for t in job.task_ids}
        clash = next((s["name"] for s in specs if s["name"] in taken), None)
        if clash is not None:
            raise _ClientError(f"invalid spec: task {clash!r}: duplicate name (job {job.job_id} has one already)")
        return job

    def _check_owner(self, body: dict[str, Any], job: Job, action: str) -> None:
        """With CURVE, only the job's submitter or an admin key may change it."""
        who = body.get("_who")
        if who is not None and who[1] != roles.ADMIN and who[0] != job.submitter:
            raise _ClientError(
                f"{action} job {job.job_id}: it was submitted by {job.submitter!r}; "
                "only that key or an admin key may change it"
            )

    def _on_close_job(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self._check_owner(body, job, "close")
        if job.open:
            job.open = False
            if job.done:
                self._job_done(job)
        self._reply(peer, body, {"job_id": job.job_id, "done": job.done})

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
        heapq.heappush(self._follow_expiry, (time.monotonic() + body["wait"], next(self._follow_seq), job.job_id))

    def _reply_follow(self, job: Job, peer: bytes, body: dict[str, Any]) -> None:
        since = body["since"]
        data: dict[str, Any] = {
            "tasks": [self.tasks[t].to_dict() for t in job.finished[since:]],
            "next": len(job.finished),
            "done": job.done,
        }
        if "progress_since" in body:
            start = max(body["progress_since"] - job.progress_base, 0)
            data["progress"] = job.progress[start:]
            data["progress_next"] = job.progress_base + len(job.progress)
        if body.get("status"):  # O(tasks of the job): asked for about once a second, not per reply
            status = self._job_status(job)
            data.update(counts=status["counts"], blocked=status["blocked"], unplaceable=status["unplaceable"])
        self._reply(peer, body, data)

    def _answer_followers(self, now: float) -> None:
        """Once per loop turn: every follower of a job with news (or whose wait ran out)."""
        due = list(self._follow_due)
        self._follow_due.clear()
        while self._follow_expiry and self._follow_expiry[0][0] <= now:
            due.append(heapq.heappop(self._follow_expiry)[2])
        for job_id in due:
            job = self.jobs.get(job_id)
            if job is not None:
                for peer, body in job.followers:
                    self._reply_follow(job, peer, body)
                job.followers.clear()

    def _on_test_history(self, peer: bytes, body: dict[str, Any]) -> None:
        rootdir = body["rootdir"]
        if not self.archive.query(peer, body, lambda cursor: test_history(cursor, rootdir), "the test history"):
            raise _ClientError("the broker is busy reading its results store; try again")

    def _on_query(self, peer: bytes, body: dict[str, Any]) -> None:
        try:
            read = requests.reader(body["what"], body.get("args") or {})
        except requests.QueryError as exc:
            raise _ClientError(str(exc)) from None
        if not self.archive.query(peer, body, read, f"the {body['what']} query"):
            raise _ClientError("the broker is busy reading its results store; try again")

    def _job_status(self, job: Job) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        blocked: dict[tuple[str, ...], list[str]] = {}
        unplaceable: list[str] = []  # no live worker could run it now
        for task_id in job.task_ids:
            task = self.tasks[task_id]
            counts[str(task.state)] += 1
            if task.state is TaskState.QUEUED:
                if task.waiting_on:
                    names = ", ".join(sorted(self.tasks[d].name for d in task.waiting_on))
                    reasons = [f"waiting for dependencies: {names}"]
                else:
                    reasons = self.scheduler.why_queued(task)
                    if reasons:
                        unplaceable.append(task_id)
                if reasons:
                    blocked.setdefault(tuple(reasons), []).append(task.name)
        return {
            "job_id": job.job_id,
            "name": job.name,
            "submitter": job.submitter,
            "meta": job.meta,
            "total": len(job.task_ids),
            "done": job.done,
            "open": job.open,
            "counts": dict(counts),
            "succeeded": counts["succeeded"],
            "failed": counts["failed"] + counts["timed_out"],
            "cancelled": counts["cancelled"],
            "blocked": [{"tasks": names, "reasons": list(r)} for r, names in blocked.items()],
            "unplaceable": unplaceable,
        }

    def _on_status(self, peer: bytes, body: dict[str, Any]) -> None:
        summary = self._summaries.get(body["job_id"])
        self._reply(peer, body, summary if summary is not None else self._job_status(self._job(body)))

    def _on_wait(self, peer: bytes, body: dict[str, Any]) -> None:
        summary = self._summaries.get(body["job_id"])
        if summary is not None:
            self._reply(peer, body, summary)
            return
        job = self._job(body)
        if job.done:
            self._reply(peer, body, self._job_status(job))
        else:  # one wait per connection (its latest request): a flood of waits cannot grow the list
            job.waiters[:] = [w for w in job.waiters if w[0] != peer]
            job.waiters.append((peer, body["req"]))

    def _on_results(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self._reply(peer, body, [self.tasks[t].to_dict() for t in job.task_ids])

    def _on_workers(self, peer: bytes, body: dict[str, Any]) -> None:
        self._reply(peer, body, [w.to_dict() for w in self.registry])

    def _on_cancel_job(self, peer: bytes, body: dict[str, Any]) -> None:
        job = self._job(body)
        self._check_owner(body, job, "cancel")
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
        self.scheduler.queue.prune()
        self._placement_due = True
        self._reply(peer, body, {"job_id": job.job_id, "cancelled": cancelled})

    def _on_drain_worker(self, peer: bytes, body: dict[str, Any]) -> None:
        worker = self.registry.get(body["worker_id"])
        if worker is None:
            raise _ClientError(f"unknown worker {body['worker_id']!r}")
        self._set_draining(worker, "requested by a client")
        self._send(worker.peer, protocol.DRAIN, {"reason": "requested by a client"})
        self._reply(peer, body, {"worker_id": worker.worker_id, "running": len(worker.inflight)})

    # ------------------------------------------------------------- stealing

    def _steal(self, now: float) -> None:
        """Phase 1: ask holders to give up prefetched tasks an idle worker would finish sooner."""
        for task, holder, thief in self.scheduler.steals(self.tasks):
            self._steals[task.task_id] = (thief.worker_id, task.attempt)
            self._send(holder.peer, protocol.STEAL, {"task_id": task.task_id, "attempt": task.attempt})

    def _on_steal_ack(self, peer: bytes, body: dict[str, Any]) -> None:
        """Phase 2: the holder gave the task up (it had not started it), or it had started."""
        holder = self.registry.by_peer(peer)
        asked = self._steals.pop(body["task_id"], None)
        task = self.tasks.get(body["task_id"])
        if asked is None or task is None:
            return
        thief = self.registry.get(asked[0])
        if not body["ok"] or self._current(holder, task.task_id, body["attempt"]) is None:
            self.scheduler.steal_done(task, None)
            return
        holder.inflight.pop(task.task_id, None)
        if (
            thief is None
            or thief.state != "alive"
            or (task.resources and not resources.fits(task.resources, thief.free_resources()))
        ):
            self.scheduler.steal_done(task, None)
            # The thief left, or what the task needs was taken on it meanwhile (a placement or
            # another steal since the ask): the attempt never started anywhere.
            self._requeue(task)
            return
        now = time.time()
        task.worker_id = thief.worker_id
        task.assigned_at = now
        record = task.history[-1]
        record.worker_id = thief.worker_id
        record.assigned_at = now
        thief.take(task.task_id, task.attempt, task.resources)
        self.scheduler.steal_done(task, thief)
        self._send_assign(thief, [task])
        self._store_attempt(task, record)
        self._store_task(task)
        self.events.publish(
            events.TASK,
            {"event": "stolen", "task_id": task.task_id, "from": holder.worker_id, "worker_id": thief.worker_id},
        )
        log.debug("task %s stolen from %s by %s", task.task_id, holder.worker_id, thief.worker_id)

    def _on_ping(self, peer: bytes, body: dict[str, Any]) -> None:
        self._reply(
            peer,
            body,
            {
                "protocol": protocol.VERSION,
                "workers": len(self.registry),
                "strategy": self.scheduler.strategy.name,
                "heartbeat_interval": self.health.interval_for(len(self.registry)),
                "heartbeat_liveness": self.health.liveness,
                "dead_liveness": self.health.dead_liveness,
                "max_lost_workers": self.max_lost_workers,
                # What the broker holds: finished jobs leave after --finished-job-ttl.
                "jobs_in_memory": len(self.jobs),
                "tasks_in_memory": len(self.tasks),
                "ship": self.ships.stats(),  # shipped code: archives held, bytes received and sent
            },
        )

    # ----------------------------------------------------------------- timers

    def _send_heartbeats(self, now: float) -> None:
        interval = self.health.interval_for(len(self.registry))
        self._heartbeat_timer.period = interval
        for worker in self.registry:
            if self._send(worker.peer, protocol.HEARTBEAT, {"interval": interval}):
                worker.heartbeat_interval = interval

    def _check_health(self, now: float) -> None:
        backlog = self._backlog_since
        if backlog is not None and now - backlog < self.health.interval * self.health.dead_liveness:
            return  # frames wait unread, heartbeats perhaps among them: no worker is judged silent now
        missing, dead = self.health.check(self.registry, now)
        for worker in missing:
            self._worker_missing(worker, now - worker.last_seen)
        for worker in dead:
            self._worker_lost(worker, f"no heartbeat for {now - worker.last_seen:.1f}s")
        if self._bindings_due is not None and now >= self._bindings_due:
            self._bindings_due = None
            for worker_id in [w for w in self.guard.bindings if self.registry.get(w) is None]:
                self.guard.release(worker_id)
                self.store.put("worker_keys", rows.worker_key_row(worker_id, None))
        if self._orphans and now >= self._orphans_deadline:
            for worker_id, held in self._orphans.items():
                for task_id, attempt in held.items():
                    self._attempt_lost(task_id, attempt, f"worker {worker_id} did not return after a broker restart")
            self._orphans.clear()

    def _tick(self, now: float) -> None:
        self._store_durations()
        if self._placement_deadlines:
            self._expire_unplaceable()
        self._release_finished(now)
        self._hook("on_tick", now)  # metrics.system and the rest: dtf_bus.monitor.monitor

    def _freeze_heap(self, now: float) -> None:
        """Keep full garbage collections short however many tasks are held (defaults.py).
        The young generations are collected before each freeze, so short-lived cycles are not
        frozen; at a thaw one full collection reclaims whatever cyclic garbage was."""
        if now >= self._gc_thaw_due:
            self._gc_thaw_due = now + defaults.GC_THAW_INTERVAL
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
            gc.freeze()

    def _check_keys(self, now: float) -> None:
        """The authorized keys changed (or SIGHUP): cut off every connection of a revoked key."""
        revoked_workers = self.guard.reload_if_changed()
        if revoked_workers is None:
            return
        for worker_id in revoked_workers:
            worker = self.registry.get(worker_id)
            if worker is not None:
                self._worker_lost(worker, "its CURVE key was revoked")
        # Subscribers handshook once: rebinding PUB drops them all; the authorized reconnect.
        self.guard.rebind(self.pub, self.metrics_endpoint)

    # ------------------------------------------------------------ persistence

    def _restore(self) -> None:
        """Resume from the database: unfinished jobs come back as they were committed."""
        cursor = self.store.cursor()
        self._seq = itertools.count(recovery.next_seq(cursor))
        self.history.load(recovery.load_durations(cursor))
        if self.guard is not None:
            self.guard.bindings.update(recovery.load_worker_keys(cursor))
            # A bound worker that died while we were down is never removed as dead: release
            # its id if it has not registered by the time a silent worker would be dead.
            self._bindings_due = time.monotonic() + self.health.interval * self.health.dead_liveness
        jobs, tasks = recovery.load_unfinished(cursor)
        self._adopt(jobs, tasks)
        grace = self.health.interval * self.health.liveness * 2
        self._orphans_deadline = time.monotonic() + grace
        now, mono = time.time(), time.monotonic()
        for task in tasks:
            if task.state is TaskState.QUEUED:
                self._track_dependencies(task)
                if task.placement_timeout is not None:  # the same deadline, counted from its submit
                    left = task.submitted_at + task.placement_timeout - now
                    self._placement_deadlines[task.task_id] = mono + max(left, 0.0)
            elif task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                self._orphans.setdefault(task.worker_id, {})[task.task_id] = task.attempt
        if tasks:
            log.info(
                "restored %d unfinished job(s): %d queued, %d waiting %.1fs for their workers to return",
                len(jobs),
                self.state_counts[TaskState.QUEUED],
                sum(len(v) for v in self._orphans.values()),
                grace,
            )
            self._placement_due = True

    def _adopt(self, jobs: list[Job], tasks: list[Task], count: bool = True) -> None:
        """Jobs read from DuckDB (a restart, or the archive) join those in memory."""
        for job in jobs:
            self.jobs[job.job_id] = job
            self._summaries.pop(job.job_id, None)  # in memory again: answered from the job itself
            if job.done:
                self._finished_jobs.append((time.monotonic() + self.finished_job_ttl, job.job_id, 0))
        for task in tasks:
            self.tasks[task.task_id] = task
            if task.state.final:
                self.jobs[task.job_id].finished.append(task.task_id)  # in finish order below: follow's cursor
            if count:
                self.state_counts[task.state] += 1
                if not task.state.final:
                    self._live_by_submitter[self.jobs[task.job_id].submitter] += 1
        for job in jobs:
            job.finished.sort(key=lambda task_id: self.tasks[task_id].ended_at or 0.0)

    def _release_finished(self, now: float) -> None:
        """Forget jobs finished over finished_job_ttl ago: DuckDB holds them, and a job of
        100,000 tasks must not pin its memory for the broker's life."""
        released = 0
        durable = self._durable_seen
        while self._finished_jobs and self._finished_jobs[0][0] <= now and self._finished_jobs[0][2] <= durable:
            job = self.jobs.pop(self._finished_jobs.popleft()[1], None)
            if job is None:
                continue
            # Its status stays answerable from memory (a few hundred bytes), its tasks do not.
            self._summaries[job.job_id] = self._job_status(job)
            if len(self._summaries) > defaults.JOB_SUMMARIES_KEPT:
                self._summaries.popitem(last=False)
            for task_id in job.task_ids:
                self.tasks.pop(task_id, None)
            released += len(job.task_ids)
            self._hook("on_job_released", job)
        if released >= defaults.TRIM_AFTER_TASKS:
            memory.trim()

    def _store_task(self, t: Task) -> None:
        self.store.put("tasks", rows.task_row(t))

    def _store_attempt(self, t: Task, a: Attempt) -> None:
        self.store.put("attempts", rows.attempt_row(t, a))

    def _store_durations(self) -> None:
        """Learned durations go to the store once per tick, not once per task."""
        for key in self._durations_dirty:
            stat = self.history.stats[key]
            self.store.put("task_durations", rows.duration_row(*key, stat.mean, stat.n))
        self._durations_dirty.clear()

    def _store_worker(self, w: WorkerInfo, state: str) -> None:
        self.store.put("workers", rows.worker_row(w, state))

    def _unstored(self, refused: list[StoreFailure]) -> None:
        """Rows DuckDB refused (the store logged which and why): their tasks fail with the
        store's error, and what waited on those rows waits for that failure to be committed
        instead (results' acks, job statuses), or is refused (the submit of a job whose row was
        refused): nothing is acknowledged that DuckDB does not hold. A task refused again once
        failed so is only logged; its result stays with its worker, unacknowledged."""
        doomed: dict[str, tuple[str, int | None]] = {}  # task id -> (error, attempt whose row was refused)
        lost_jobs: dict[str, str] = {}
        for failure in refused:
            error = f"could not be stored: {failure.error}"
            if failure.table == "jobs" and failure.key[0] in self.jobs:
                lost_jobs[failure.key[0]] = error
                for task_id in self.jobs[failure.key[0]].task_ids:
                    doomed.setdefault(task_id, (error, None))
            elif failure.table in ("tasks", "attempts") and failure.key[0] in self.tasks:
                doomed.setdefault(failure.key[0], (error, failure.key[1] if failure.table == "attempts" else None))
        again = {t for t in doomed if (self.tasks[t].error or "").startswith("could not be stored")}
        for task_id, (error, attempt) in doomed.items():
            if task_id not in again:
                self._fail_unstored(self.tasks[task_id], error, attempt)
        affected = {self.tasks[t].job_id for t in doomed}
        self._awaiting[:] = [self._revise_reply(reply, affected, lost_jobs)[0] for reply in self._awaiting]
        for _, replies, acks in self._unreleased:
            for peer, results in acks.items():
                held = [r for r in results if r[0] in doomed]
                if held:
                    results[:] = [r for r in results if r[0] not in doomed]
                    self._acks.setdefault(peer, []).extend(r for r in held if r[0] not in again)
            kept = []
            for reply in replies:
                reply, hold = self._revise_reply(reply, affected, lost_jobs)
                (self._awaiting if hold else kept).append(reply)
            replies[:] = kept
        self._awaiting_urgent = True

    def _revise_reply(
        self, reply: tuple[bytes, str, dict[str, Any]], affected: set[str], lost: dict[str, str]
    ) -> tuple[tuple[bytes, str, dict[str, Any]], bool]:
        """A pending reply about a job hit by refused rows: an error for a job whose own row was
        refused; a job status made afresh, and held (True) until the failures are committed."""
        peer, kind, body = reply
        data = body.get("data")
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if job_id in lost:
            return (peer, protocol.ERROR, {"req": body["req"], "error": f"job {job_id} {lost[job_id]}"}), False
        if job_id in affected and job_id in self.jobs and "counts" in data:
            return (peer, kind, {**body, "data": self._job_status(self.jobs[job_id])}), True
        return reply, False

    def _fail_unstored(self, task: Task, error: str, attempt: int | None) -> None:
        """Fail a task whose row, its job's or its current attempt's DuckDB refused. A refused
        attempt keeps no result, the likeliest cause, so that the failure itself can be stored;
        a refused row of a superseded attempt costs only that record."""
        record = task.attempt_record(task.attempt if attempt is None else attempt)
        if record is not None and (attempt is not None or record.outcome == "assigned"):
            if attempt is not None:
                record.result = None
            record.outcome = "failed" if record.outcome in ("assigned", "succeeded") else record.outcome
            record.error, record.ended_at = error, record.ended_at or time.time()
            self._store_attempt(task, record)
        if attempt is not None and attempt != task.attempt:
            return
        if not task.state.final:
            worker = self.registry.get(task.worker_id) if task.worker_id else None
            if worker is not None and worker.inflight.pop(task.task_id, None) is not None:
                cancel = {"task_id": task.task_id, "attempt": task.attempt, "reason": error}
                self._send(worker.peer, protocol.CANCEL, cancel)
            self._finish(task, TaskState.FAILED, record, error=error)
            self.scheduler.queue.prune()
            self._placement_due = True
            return
        # Final already (its result came with the refused row): a verdict revised, not a state
        # transition, so the counts move here rather than through _move; watchers are told.
        self.state_counts[task.state] -= 1
        task.state = TaskState.FAILED
        self.state_counts[task.state] += 1
        task.result, task.error = None, error
        self._store_task(task)
        revised = {"event": "failed", "revised": True, "task_id": task.task_id, "job_id": task.job_id, "error": error}
        self.events.publish(events.TASK, {**revised, "name": task.name, "worker_id": task.worker_id})


class _ClientError(Exception):
    """A request the broker refuses; the text goes back to the sender as an ERROR."""


class _NotHeld(Exception):
    """The request's job is not in memory: it is read back on the archive thread first."""
