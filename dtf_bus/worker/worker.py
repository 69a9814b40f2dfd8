"""The worker: the loop that joins its state machine, its connection and its slot threads.

:mod:`~dtf_bus.worker.state` decides (what to send, start, cancel), with no I/O;
:mod:`~dtf_bus.worker.connection` moves frames to and from the broker and times heartbeats;
:mod:`~dtf_bus.worker.runner` runs plugins on one thread per slot. This module feeds the state
events (messages, time, finished tasks, signals) and carries out its instructions. The main
thread owns the socket and never runs plugin code; slot threads hand their results to the
state (under one lock) and wake the main thread through a pipe it polls beside the socket.

Signals: SIGTERM (or a first SIGINT, or `dtf drain`) drains: finish the running tasks, take
no new ones, deliver the results, then exit. A second SIGINT, or SIGQUIT, exits at once,
killing the tasks' process groups. Handlers only set flags: the loop, woken by the signal,
acts on them. Fault tests partition a worker through :mod:`dtf_bus.testing.faults`, never
through the production entry point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from dtf_bus import defaults, protocol
from dtf_bus.plugins import Executor
from dtf_bus.security import curve as security
from dtf_bus.ship.worker import Shipping
from dtf_bus.worker import liveness, utilisation
from dtf_bus.worker.connection import Backoff, Connection
from dtf_bus.worker.events import (
    Cancel,
    Collect,
    Connected,
    Disconnected,
    DrainRequested,
    Event,
    Execute,
    HeartbeatDue,
    Instruction,
    ProgressReported,
    Received,
    Running,
    Send,
    SendHeartbeat,
    Stopping,
    TaskFinished,
    Tick,
)
from dtf_bus.worker.runner import Runner
from dtf_bus.worker.state import WorkerState

log = logging.getLogger("dtf.worker")


class Worker:
    def __init__(
        self,
        broker: str,
        worker_id: str,
        executors: dict[str, Executor],
        capabilities: dict[str, Any],
        slots: int = defaults.WORKER_SLOTS,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        heartbeat_liveness: int = defaults.HEARTBEAT_LIVENESS,
        reconnect_initial: float = defaults.RECONNECT_INITIAL,
        reconnect_max: float = defaults.RECONNECT_MAX,
        curve: security.ClientCurve | None = None,
        resources: dict[str, int] | None = None,
        devices: dict[str, list[str]] | None = None,
        alive_file: str | None = None,
        shipping: Shipping | None = None,
    ) -> None:
        self.broker = broker
        self.worker_id = worker_id
        self.shipping = shipping or Shipping.for_worker(broker, worker_id, curve)  # tasks with params.ship
        self.alive = liveness.AliveFile(alive_file)  # touched from the main loop: a liveness probe reads it
        self.state = WorkerState(
            worker_id,
            capabilities,
            plugins=list(executors),
            slots=slots,
            resources=resources,
            devices=devices,
            heartbeat_interval=heartbeat_interval,
            heartbeat_liveness=heartbeat_liveness,
        )
        self._lock = threading.Lock()  # the state: the main thread and the slot threads change it
        self.runner = Runner(
            slots, worker_id, capabilities, executors, self.shipping, self._task_finished, self._report_progress
        )
        self._ctx = zmq.Context()
        self.connection = Connection(self._ctx, broker, curve)
        self.backoff = Backoff(reconnect_initial, reconnect_max)
        self._wake_pending = False  # a wake-up byte is in the pipe, not yet read
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        # Set by signal handlers (which must not take the lock); the loop acts on them.
        self._stopping = False
        self._drain_reason: str | None = None
        self._partitioned = False

    # ------------------------------------------------------------ lifecycle

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w)  # a signal wakes the poll at once
        signal.signal(signal.SIGTERM, lambda *_: self.drain("SIGTERM"))
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGQUIT, self.stop)

    def stop(self, *_: Any) -> None:
        """Exit now: running tasks are killed (and requeued by the broker)."""
        self._stopping = True

    def drain(self, reason: str) -> None:
        """Finish running tasks, accept no new ones, deliver every result, then exit."""
        if self._drain_reason is None:
            self._drain_reason = reason

    def _on_sigint(self, *_: Any) -> None:
        if self._drain_reason is not None or self.state.draining:
            self.stop()
        else:
            self.drain("SIGINT; press Ctrl-C again to exit at once")

    def partition(self) -> None:
        """Close the connection and stay away (tasks run on) until :meth:`heal`: a network
        partition on demand, for fault tests (:mod:`dtf_bus.testing.faults`)."""
        self._partitioned = True

    def heal(self) -> None:
        self._partitioned = False

    def run(self) -> None:
        """Connect, serve until the broker goes silent, back off, repeat until stopped."""
        self.runner.start()
        try:
            while not self._stopping and not self._drained():
                if self._partitioned:
                    self._idle(None)
                    continue
                served = self._serve_connection()
                if self._stopping:
                    break
                if self._partitioned:
                    log.warning("partitioned: socket closed; staying disconnected until healed")
                    continue
                if served:  # we were registered: start the back-off afresh
                    self.backoff.reset()
                delay = self.backoff.next()
                log.warning("broker at %s silent; reconnecting in %.2fs", self.broker, delay)
                self._idle(time.monotonic() + delay)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._apply(self._handle(Stopping()))  # every running task cancelled
        # Let the slot threads kill their process groups before the process (and they) go.
        self.runner.stop(time.monotonic() + defaults.KILL_GRACE + 1.0)
        if self.connection.is_open and self.state.registered:
            self.connection.send(protocol.UNREGISTER, {})
        self._close()
        self._ctx.term()
        log.info("worker %s stopped", self.worker_id)

    def _close(self) -> None:
        self.connection.close(linger=200 if self._stopping else 0)
        self._handle(Disconnected())

    def _drained(self) -> bool:
        self._take_requests()
        with self._lock:
            return self.state.drained(time.monotonic())

    def _take_requests(self) -> None:
        """What signal handlers asked for, now that it is safe to act on it."""
        if self._drain_reason is not None and not self.state.draining:
            self._apply(self._handle(DrainRequested(self._drain_reason)))

    # ----------------------------------------------------------- main loop

    def _idle(self, until: float | None) -> None:
        """Without a connection: keep collecting results and enforcing timeouts."""
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stopping and not self._drained():
            now = time.monotonic()
            if until is not None and now >= until:
                return
            if until is None and not self._partitioned:
                return
            wait = self._next_wait(now, until if until is not None else now + 1.0)
            if poller.poll(wait * 1000):
                self._drain_wake()
            self._collect()
            self._apply(self._handle(Tick(time.monotonic())))

    def _serve_connection(self) -> bool:
        """One connection's lifetime. Returns whether it got registered."""
        conn = self.connection
        sock = conn.open(time.monotonic(), self.state.interval)
        self._apply(self._handle(Connected(time.monotonic())))
        was_registered = False
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping and not self._partitioned:
                if self._drained():
                    self._stopping = True
                    break
                wait = self._next_wait(time.monotonic(), conn.heartbeat_due)
                events = dict(poller.poll(conn.poll_timeout(wait) * 1000))
                if conn.outbox:
                    conn.flush()
                if sock in events:
                    self._receive()
                    was_registered = was_registered or self.state.registered
                if self._wake_r in events:
                    self._drain_wake()
                self._collect()
                now = time.monotonic()
                self._apply(self._handle(Tick(now)))
                if conn.beat_due(now, self.state.interval):
                    self._apply(self._handle(HeartbeatDue(now)))
                if conn.silent(now, self.state.interval, self.state.liveness):
                    return was_registered
            return was_registered
        finally:
            if not self._stopping:
                self._close()

    def _receive(self) -> None:
        now, wall = time.monotonic(), time.time()
        self.connection.heard(now)
        for kind, body in self.connection.receive():
            self._apply(self._handle(Received(kind, body, now, wall)))
            if kind == protocol.REGISTERED:
                log.info("registered with %s as %s", self.broker, self.worker_id)

    def _next_wait(self, now: float, due: float) -> float:
        """Seconds until the next thing this loop must do on its own."""
        due = self.alive.beat(now, due)  # every loop turn passes here
        with self._lock:
            due = self.state.next_due(now, due)
        return max(due - now, 0.0)

    def _collect(self) -> None:
        self._wake_pending = False  # before collecting: a result handed over after this wakes us again
        self._apply(self._handle(Collect()))

    # ------------------------------------------------------------ the state

    def _handle(self, *events: Event) -> list[Instruction]:
        with self._lock:
            return self.state.handle(*events)

    def _apply(self, instructions: list[Instruction]) -> None:
        """On the main thread: carry out what the state decided."""
        for ins in instructions:
            if isinstance(ins, Send):
                self.connection.send(ins.kind, ins.body)
            elif isinstance(ins, SendHeartbeat):
                self.connection.send(protocol.HEARTBEAT, {"metrics": utilisation.sample()})
            elif isinstance(ins, Execute):
                self.runner.submit(ins.run)
            elif isinstance(ins, Cancel):
                self.runner.cancel(ins.task_id, ins.attempt, ins.reason)

    def _task_finished(self, run: Running, report: dict[str, Any]) -> None:
        """On a slot thread: the result goes into the state, and the freed slot takes the
        next attempt at once (finishing a task only ever starts others: no send from here)."""
        log.debug("task %s attempt %d %s", run.task_id, run.attempt, report["outcome"])
        for ins in self._handle(TaskFinished(run, report, time.monotonic(), time.time())):
            if isinstance(ins, Execute):
                self.runner.submit(ins.run)
        self._wake()

    def _report_progress(self, task_id: str, attempt: int, data: dict[str, Any]) -> None:
        """A slot thread's ``ctx.report_progress``: sized here (an update that cannot be packed,
        or is over PROGRESS_MESSAGE_BYTES, is dropped: the task's result is the record), then
        kept for the main thread to send."""
        update = {"task_id": task_id, "attempt": attempt, "data": data}
        try:
            size = protocol.packed_size(update)
        except (TypeError, ValueError, OverflowError) as exc:
            log.debug("task %s: progress not sent: %s", task_id, exc)
            return
        if size <= defaults.PROGRESS_MESSAGE_BYTES:
            self._handle(ProgressReported(update, size))
            self._wake()

    def _wake(self) -> None:
        """From a slot thread: the main thread has results or progress to send."""
        if not self._wake_pending:  # one wake-up byte for however many results queue up
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
                os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
