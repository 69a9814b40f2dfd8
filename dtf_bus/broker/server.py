"""The broker: one ROUTER for workers and clients, one PUB for events, one loop that routes.

This is the only broker module that touches sockets. The loop reads a batch of frames,
decodes each into a :class:`~dtf_bus.broker.instructions.Message` and hands it to the state
machine (:mod:`dtf_bus.broker.machine`), then carries out the instructions it returns: sends
on the ROUTER, events on the PUB. A send that fails becomes one more event, handled after the
one that caused it. Due timers (heartbeats, liveness, metrics, steals) and the end of each
loop turn (retries due, followers, placement, the store's commits) are events too.

Durability rule: anything the broker acknowledges is committed to DuckDB first
(:mod:`dtf_bus.broker.persistence`); the loop wakes on the store writer's ``notify_fd``.
"""

from __future__ import annotations

import collections
import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from dtf_bus import defaults, events, logs, protocol
from dtf_bus.broker.health import Health
from dtf_bus.broker.hooks import BrokerHook
from dtf_bus.broker.instructions import (
    Archived,
    BatchDone,
    Disconnected,
    HealthCheck,
    Heartbeats,
    LoopTurn,
    Message,
    Revoked,
    Send,
    SendFailed,
    StealRound,
    Stopping,
    StoreCommitted,
    Tick,
)
from dtf_bus.broker.lifecycle import CONNECTION_CLOSED, SEND_QUEUE_FULL
from dtf_bus.broker.machine import BrokerMachine
from dtf_bus.broker.scheduler import Scheduler
from dtf_bus.broker.workers import Registry
from dtf_bus.durations import Durations
from dtf_bus.security import curve as security
from dtf_bus.security import roles
from dtf_bus.ship.store import ShipStore
from dtf_bus.store.archive import Archive
from dtf_bus.store.db import Store
from dtf_bus.store.results import ResultRows
from dtf_bus.task import Job, Task

log = logging.getLogger("dtf.broker")

BATCH = 512  # frames handled between two placement rounds
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
        self._malformed = logs.RateLimited(log)  # a peer sending garbage in a loop must not flood the log
        # Our sends to a vanished peer fail one by one: thousands of lines, so one per worker and minute.
        self._send_failed = logs.RateLimited(log)
        self._stopping = False
        self._backlog_since: float | None = None  # frames waited unread since then (see HealthCheck)
        self._unwritable: set[bytes] = set()  # worker peers a send found full: dropped at the turn's end
        self._pending: collections.deque[Any] = collections.deque()  # events a failed send caused

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
        self.machine = BrokerMachine(
            self.store,
            ships=self.ships,
            archive=self.archive,
            guard=self.guard,
            strategy=strategy,
            prefetch=prefetch,
            health=self.health,
            max_lost_workers=max_lost_workers,
            max_live_tasks=max_live_tasks,
            submitter_quota=submitter_quota,
            finished_job_ttl=finished_job_ttl,
            hook=self._hook,
            wanted=self.events.wanted,
        )
        self.machine.restore(time.monotonic(), time.time())

        self._gc_thaw_due = time.monotonic() + defaults.GC_THAW_INTERVAL
        self._heartbeat_timer = Timer(heartbeat_interval, self._send_heartbeats)
        self._timers = [
            self._heartbeat_timer,
            # Checked ten times per interval, so detection lags the limit by at most 10 %.
            Timer(max(min(heartbeat_interval / 10, 0.25), 0.01), self._check_health),
            Timer(defaults.METRICS_INTERVAL, lambda now: self._run(Tick())),
            Timer(defaults.GC_FREEZE_INTERVAL, self._freeze_heap),
            *([Timer(defaults.KEYS_RELOAD_INTERVAL, self._check_keys)] if self.guard else []),
        ]
        if steal:
            self._timers.append(Timer(defaults.STEAL_INTERVAL, lambda now: self._run(StealRound())))

    # What hooks and the HTTP API read (dtf_bus.broker.hooks.BrokerView): the machine's own.

    @property
    def registry(self) -> Registry:
        return self.machine.registry

    @property
    def scheduler(self) -> Scheduler:
        return self.machine.scheduler

    @property
    def history(self) -> Durations:
        return self.machine.history

    @property
    def tasks(self) -> dict[str, Task]:
        return self.machine.state.tasks

    @property
    def jobs(self) -> dict[str, Job]:
        return self.machine.state.jobs

    @property
    def state_counts(self) -> collections.Counter[str]:
        return self.machine.state.state_counts

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
        state = self.machine.state
        try:
            while not self._stopping:
                due = min(t.due for t in self._timers)
                other = state.next_due()
                if other is not None:
                    due = min(due, other)
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
                self._run(LoopTurn())
                if self._unwritable:
                    self._drop_unwritable()
                self._run(BatchDone())
                if self.archive.notify_fd in ready:
                    self._run(Archived(self.archive.taken()))
                if self.store.notify_fd in ready:
                    self.store.drain_notify()
                    self._run(StoreCommitted())
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
        self._run(Stopping())
        self.store.flush()
        self._run(StoreCommitted())
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
            self._run()
            return
        try:
            kind, body = protocol.decode(frames[1].buffer)
        except protocol.ProtocolError as exc:
            self._malformed(peer, "malformed message from peer %s: %s", peer.hex(), exc)
            self._send(peer, protocol.ERROR, {"req": exc.req, "error": str(exc)})
            self._run()
            return
        # The peer's CURVE key, set by our ZAP handler: read only where roles are checked.
        key = frames[1].get("User-Id") if self.guard is not None and kind in roles.ALLOWED else None
        if kind == protocol.REGISTER:
            body["_fd"] = frames[1].get(zmq.SRCFD)
        self._run(Message(peer, kind, body, key))

    def _run(self, event: Any = None) -> None:
        """Hand ``event`` to the state machine and carry out what it decides; then the same for
        each event a failed send caused, in order, so no handler runs inside another."""
        if event is not None:
            self._pending.append(event)
        pending, handle, send, publish = self._pending, self.machine.handle, self._send, self.events.publish
        while pending:
            for instruction in handle(pending.popleft(), time.monotonic(), time.time()):
                if instruction.__class__ is Send:
                    send(instruction.peer, instruction.kind, instruction.body)
                else:
                    publish(instruction.topic, instruction.body)

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
                if self.registry.by_peer(peer) is not None:
                    self._pending.append(SendFailed(peer, CONNECTION_CLOSED, kind))
            elif exc.errno == zmq.EAGAIN and self.registry.by_peer(peer) is not None:
                # A worker not reading its messages (the pipe is at its high-water mark): what was
                # not sent (an ASSIGN, a REGISTERED) must not be believed delivered, so its tasks go
                # elsewhere and it registers afresh; at the end of this loop turn (_drop_unwritable).
                self._unwritable.add(peer)
                self._send_failed(peer, "send %s to %s failed: %s", kind, peer.hex(), exc)
            else:
                self._send_failed(peer, "send %s to %s failed: %s", kind, peer.hex(), exc)
            return False

    def _drop_unwritable(self) -> None:
        """Workers a send found full: lost (not as evidence against their tasks: they were only
        slow), so nothing stays assigned on the word of a message that was never sent."""
        for peer in self._unwritable:
            self._pending.append(SendFailed(peer, SEND_QUEUE_FULL))
        self._unwritable.clear()
        self._run()

    def _on_socket_events(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] != zmq.EVENT_DISCONNECTED:
                self.guard.handshake_failed(event)
                continue
            self._run(Disconnected(event["value"]))

    # ----------------------------------------------------------------- timers

    def _send_heartbeats(self, now: float) -> None:
        self._heartbeat_timer.period = self.health.interval_for(len(self.registry))
        self._run(Heartbeats())

    def _check_health(self, now: float) -> None:
        self._run(HealthCheck(self._backlog_since))

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
        self._run(Revoked(list(revoked_workers)))
        # Subscribers handshook once: rebinding PUB drops them all; the authorized reconnect.
        self.guard.rebind(self.pub, self.metrics_endpoint)
