"""The worker: a DEALER that registers, heartbeats, runs tasks on threads and reports back.

The main thread owns the socket and never runs plugin code, so a slow or stuck task cannot
delay a heartbeat. One task thread per slot takes the oldest assigned task, runs it, and
takes the next one itself, so a stream of short tasks never waits for the main loop between
two of them. Results go back through a queue and a wake-up pipe that the main thread polls
beside the socket, and leave in batches. They stay in ``unacked`` until the broker
acknowledges them, so a result finished while the broker was away is delivered on reconnect
(where the attempt number decides whether it still counts).

Following the zguide's Paranoid Pirate worker: if the broker is silent for liveness x
interval, the worker drops the socket and reconnects with a doubling back-off.

Signals: SIGTERM (or a first SIGINT, or `dtf drain`) drains: finish the running tasks, take
no new ones, deliver the results, then exit. A second SIGINT, or SIGQUIT, exits at once,
killing the tasks' process groups. Fault tests partition a worker through
:mod:`dtf_bus.testing.faults`, never through the production entry point.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import zmq

from dtf_bus import defaults, protocol
from dtf_bus.plugins import Executor, TaskContext, TaskFailed
from dtf_bus.resources import Pool
from dtf_bus.security import curve as security
from dtf_bus.ship.worker import Shipping
from dtf_bus.worker import liveness, utilisation

log = logging.getLogger("dtf.worker")


@dataclass(slots=True)
class Running:
    ctx: TaskContext
    plugin: str
    started_at: float
    deadline: float | None  # monotonic
    done: threading.Event = field(default_factory=threading.Event)  # set when its executor returned
    taken: dict[str, list[str]] = field(default_factory=dict)  # resource ids it holds (given back at its end)
    report_at: float | None = None  # when to tell the broker it started (None: told, or never needed)


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
        self.shipping = shipping or Shipping.for_worker(broker, worker_id, curve)  # tasks with params.ship
        self.resources = resources or {}  # consumable totals advertised (dtf_bus.resources)
        self.pool = Pool(self.resources, devices or {})
        self.alive = liveness.AliveFile(alive_file)  # touched from the main loop: a liveness probe reads it
        self.worker_id = worker_id
        self.executors = executors
        self.capabilities = capabilities
        self.slots = slots
        self.interval = heartbeat_interval
        self.liveness = heartbeat_liveness
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.curve = curve  # CURVE keys (dtf_bus.security.curve), or None for plaintext
        self.running: dict[str, Running] = {}
        # Assigned and not started (the broker's prefetch), oldest first: task threads start
        # them as slots free up, unless the broker steals them back for an idle worker first.
        self.pending: dict[str, dict[str, Any]] = {}
        # Guards running and pending, which the task threads change as well.
        self._tasks_changed = threading.Condition()
        self._task_threads = 0
        self.unacked: dict[tuple[str, int], dict[str, Any]] = {}
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._progress: queue.SimpleQueue = queue.SimpleQueue()  # (task id, attempt, data) to show
        self._outbox: collections.deque[bytes] = collections.deque()  # frames the connection could not take yet
        self._wake_pending = False  # a result's wake-up byte is in the pipe, not yet read
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._stopping = False
        self._draining = False
        self._drain_deadline: float | None = None  # give up on undelivered results after this
        self._partitioned = False
        self._ctx = zmq.Context()
        self._socket: zmq.Socket | None = None
        self._registered = False
        self._handlers = {
            protocol.REGISTERED: self._on_registered,
            protocol.ASSIGN: self._on_assign,
            protocol.CANCEL: self._on_cancel,
            protocol.STEAL: self._on_steal,
            protocol.RESULT_ACK: self._on_result_ack,
            protocol.REREGISTER: self._on_reregister,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.DRAIN: lambda body: self.drain(body.get("reason", "asked by the broker")),
            protocol.ERROR: lambda body: log.warning("broker says: %s", body["error"]),
        }

    # ------------------------------------------------------------ lifecycle

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w)  # a signal wakes the poll at once
        signal.signal(signal.SIGTERM, lambda *_: self.drain("SIGTERM"))
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGQUIT, self.stop)

    def stop(self, *_: Any) -> None:
        """Exit now: running tasks are killed (and requeued by the broker)."""
        self._stopping = True  # task threads start nothing more (they check it before each task)

    def drain(self, reason: str) -> None:
        """Finish running tasks, accept no new ones, deliver every result, then exit."""
        if self._draining:
            return
        self._draining = True  # before the log line: a second SIGINT may run this handler inside it
        log.info("draining (%s): finishing %d task(s), then exiting", reason, len(self.running))
        self._send(protocol.DRAIN, {"reason": reason})

    def _on_sigint(self, *_: Any) -> None:
        if self._draining:
            self.stop()
        else:
            self.drain("SIGINT; press Ctrl-C again to exit at once")

    def _drained(self) -> bool:
        """Draining and done: nothing running, and every result delivered (or undeliverable)."""
        if not self._draining:
            return False
        with self._tasks_changed:
            if self.running or self.pending or not self._done.empty():  # not empty: not collected yet
                return False
        if not self.unacked:
            return True
        # The broker may be gone; it will requeue what it never heard about. Do not wait forever.
        now = time.monotonic()
        if self._drain_deadline is None:
            self._drain_deadline = now + self.interval * self.liveness
        return now >= self._drain_deadline

    def partition(self) -> None:
        """Close the connection and stay away (tasks run on) until :meth:`heal`: a network
        partition on demand, for fault tests (:mod:`dtf_bus.testing.faults`)."""
        self._partitioned = True

    def heal(self) -> None:
        self._partitioned = False

    def run(self) -> None:
        """Connect, serve until the broker goes silent, back off, repeat until stopped."""
        backoff = self.reconnect_initial
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
                    backoff = self.reconnect_initial
                log.warning("broker at %s silent; reconnecting in %.2fs", self.broker, backoff)
                self._idle(time.monotonic() + backoff)
                backoff = min(backoff * 2, self.reconnect_max)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._tasks_changed:
            runs = list(self.running.values())
            self._tasks_changed.notify_all()  # idle task threads see _stopping and end
        for run in runs:
            run.ctx.cancel("worker stopping")
        # Let the task threads kill their process groups before the process (and they) go.
        deadline = time.monotonic() + defaults.KILL_GRACE + 1.0
        for run in runs:
            run.done.wait(max(deadline - time.monotonic(), 0.0))
        if self._socket is not None and self._registered:
            self._send(protocol.UNREGISTER, {})
        self._close_socket()
        self._ctx.term()
        log.info("worker %s stopped", self.worker_id)

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=200 if self._stopping else 0)
            self._socket = None
        self._registered = False
        self._outbox.clear()  # a new connection registers afresh and re-sends what is unacknowledged

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
            wait = self._next_deadline(now, until if until is not None else now + 1.0)
            if poller.poll(wait * 1000):
                self._drain_wake()
            self._collect_results()
            self._enforce_timeouts(time.monotonic())

    # ----------------------------------------------------------- connection

    def _serve_connection(self) -> bool:
        """One connection's lifetime. Returns whether it got registered."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            security.make_client(sock, self.curve)
        sock.connect(self.broker)
        self._socket = sock
        was_registered = False
        self._registered = False  # until this connection's REGISTERED: nothing else is sent on it
        self._register()
        register_due = time.monotonic() + self.interval * self.liveness
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        broker_seen = time.monotonic()
        heartbeat_due = broker_seen + self.interval
        try:
            while not self._stopping and not self._partitioned:
                if self._drained():
                    self._stopping = True
                    break
                now = time.monotonic()
                wait = self._next_deadline(now, heartbeat_due)
                events = dict(poller.poll((min(wait, defaults.WORKER_OUTBOX_RETRY) if self._outbox else wait) * 1000))
                if self._outbox:
                    self._flush_outbox()
                if sock in events:
                    broker_seen = time.monotonic()
                    while True:
                        try:
                            frame = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(frame)
                    was_registered = was_registered or self._registered
                if self._wake_r in events:
                    self._drain_wake()
                self._collect_results()
                now = time.monotonic()
                self._enforce_timeouts(now)
                if now >= heartbeat_due:
                    if self._registered:
                        self._send(protocol.HEARTBEAT, {"metrics": _metrics()})
                    elif now >= register_due:  # the broker answers, but not our REGISTER: ask again
                        self._register()
                        register_due = now + self.interval * self.liveness
                    heartbeat_due = now + self.interval
                if now - broker_seen > self.interval * self.liveness:
                    return was_registered
            return was_registered
        finally:
            if not self._stopping:
                self._close_socket()

    def _register(self) -> None:
        with self._tasks_changed:  # a task leaves running and enters the queue under this lock
            self._take_results()  # finished, not yet sent: held as unacked
            held = [[tid, r.ctx.attempt] for tid, r in self.running.items()]
            held += [[tid, body["attempt"]] for tid, body in self.pending.items()]
        self._send(
            protocol.REGISTER,
            {
                "worker_id": self.worker_id,
                "capabilities": self.capabilities,
                "slots": self.slots,
                "resources": self.resources,
                "plugins": sorted(self.executors),
                # Attempts we hold: running or queued here, and finished with the result not yet
                # acknowledged (the broker cancels only the first kind it no longer wants).
                "running": held,
                "finished": [list(k) for k in self.unacked],
            },
        )

    def _send(self, kind: str, body: dict[str, Any]) -> None:
        self._send_frame(kind, protocol.encode(kind, body))

    def _send_frame(self, kind: str, frame: bytes) -> None:
        """Send, or keep it in order behind what the connection could not take yet: a result or
        a STEAL_ACK dropped on a live connection was never sent again (a task stayed assigned
        to us for good). Heartbeats are the exception: the next one will do."""
        if self._socket is None:
            return
        if not self._outbox and self._try_send(frame):
            return
        if kind == protocol.HEARTBEAT:
            return
        if not self._outbox:
            log.warning("send queue to the broker full: holding messages until it reads them")
        self._outbox.append(frame)

    def _try_send(self, frame: bytes) -> bool:
        try:
            self._socket.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _flush_outbox(self) -> None:
        while self._outbox and self._try_send(self._outbox[0]):
            self._outbox.popleft()

    def _handle(self, frame: bytes) -> None:
        try:
            kind, body = protocol.decode(frame)
        except protocol.ProtocolError as exc:
            log.warning("malformed message from broker: %s", exc)
            return
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("unexpected %s from broker", kind)
            return
        handler(body)

    # -------------------------------------------------------------- handlers

    def _on_heartbeat(self, body: dict[str, Any]) -> None:
        if "interval" in body:  # the broker stretches the interval as the fleet grows
            self.interval = float(body["interval"])

    def _on_registered(self, body: dict[str, Any]) -> None:
        self._registered = True
        self.interval = float(body["heartbeat_interval"])
        self.liveness = int(body["heartbeat_liveness"])
        log.info("registered with %s as %s", self.broker, self.worker_id)
        if self._draining:
            self._send(protocol.DRAIN, {"reason": "still draining"})
        self._send_results(list(self.unacked.values()))  # finished while we were away

    def _on_reregister(self, body: dict[str, Any]) -> None:
        log.info("broker asked us to re-register (%s)", body.get("reason", ""))
        self._registered = False
        self._register()

    def _on_assign(self, body: dict[str, Any]) -> None:
        with self._tasks_changed:
            for task in body["tasks"]:
                task_id, attempt = task["task_id"], task["attempt"]
                current = self.running.get(task_id)
                held = self.pending.get(task_id)
                if (current is not None and current.ctx.attempt == attempt) or (
                    held is not None and held["attempt"] >= attempt
                ):
                    continue  # duplicate delivery
                # A newer attempt replaces an older one still pending here: the broker moved on
                # (the older one's CANCEL follows), and skipping it would leave the task assigned
                # to us and never run.
                self.pending[task_id] = task
            self._tasks_changed.notify(len(self.pending))
        while self._task_threads < min(self.slots, len(self.pending) + len(self.running)):
            self._task_threads += 1
            threading.Thread(target=self._task_thread, name="dtf-task", daemon=True).start()

    def _on_steal(self, body: dict[str, Any]) -> None:
        with self._tasks_changed:  # a task thread cannot start it meanwhile
            held = self.pending.get(body["task_id"])
            ok = held is not None and held["attempt"] == body["attempt"]
            if ok:
                del self.pending[body["task_id"]]
        self._send(protocol.STEAL_ACK, {"task_id": body["task_id"], "attempt": body["attempt"], "ok": ok})

    def _task_thread(self) -> None:
        """One per slot: start the oldest pending task, run it, and on to the next."""
        while True:
            with self._tasks_changed:
                while (startable := self._startable()) is None:
                    if self._stopping:
                        return
                    self._tasks_changed.wait()
                run = self._start(*startable)
            try:
                result = self._execute(run)
            except Exception as exc:  # a bug of ours: the task still ends, and its slot is freed
                log.exception("task %s attempt %d: internal error", run.ctx.task_id, run.ctx.attempt)
                result = self._report(run, "crashed", None, f"internal worker error: {type(exc).__name__}: {exc}")
            run.done.set()  # before the result is queued: once it is collected, nobody reports a start
            with self._tasks_changed:  # out of running and into the queue at once (see _register)
                if self.running.get(run.ctx.task_id) is run:
                    del self.running[run.ctx.task_id]
                self._done.put(result)
                if run.taken:  # a task waiting for these devices may start now
                    self.pool.give(run.taken)
                    self._tasks_changed.notify_all()
            self._wake()

    def _wake(self) -> None:
        """From a task thread: the main thread has results or progress to send."""
        if not self._wake_pending:  # one wake-up byte for however many results queue up
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
                os.write(self._wake_w, b"\0")

    def _startable(self) -> tuple[dict[str, Any], dict[str, list[str]]] | None:
        """Holding the lock: the oldest pending task that may start now, out of pending, with
        the resource ids it takes; None while slots are full, or none of them has its resources
        free (the broker counts resources too, so that wait is short: a steal, a late result)."""
        if self._stopping or len(self.running) >= self.slots:
            return None
        for task_id, body in self.pending.items():
            taken = self.pool.take(body["resources"]) if body.get("resources") else {}
            if taken is not None:
                del self.pending[task_id]
                return body, taken
        return None

    def _start(self, body: dict[str, Any], taken: dict[str, list[str]]) -> Running:
        """On a task thread, holding the lock: the task counts as started from here."""
        task_id, attempt = body["task_id"], body["attempt"]
        ctx = TaskContext(
            task_id=task_id,
            attempt=attempt,
            worker_id=self.worker_id,
            params=body["params"],
            timeout=body.get("timeout"),
            capabilities=self.capabilities,
            devices=taken,
        )
        ctx.progress = lambda data: self._report_progress(task_id, attempt, data)
        now = time.monotonic()
        run = Running(ctx, body["plugin"], time.time(), now + ctx.timeout if ctx.timeout else None, taken=taken)
        # A task that ends within STARTED_REPORT_DELAY is reported once, by its result (which
        # carries the start time); only longer ones send TASK_STARTED. Half the messages for
        # short tasks, and the broker still sees every long task running within 50 ms.
        run.report_at = now + defaults.STARTED_REPORT_DELAY
        self.running[task_id] = run
        return run

    def _on_cancel(self, body: dict[str, Any]) -> None:
        with self._tasks_changed:
            held = self.pending.get(body["task_id"])
            if held is not None and held["attempt"] == body["attempt"]:
                del self.pending[body["task_id"]]  # never started: nothing to stop or report
                return
            run = self.running.get(body["task_id"])
        if run is not None and run.ctx.attempt == body["attempt"]:
            log.info("cancelling %s attempt %d: %s", body["task_id"], body["attempt"], body.get("reason", ""))
            run.ctx.cancel("cancelled")

    def _on_result_ack(self, body: dict[str, Any]) -> None:
        for ack in body["acks"]:
            if isinstance(ack, list) and len(ack) == 2:
                self.unacked.pop(tuple(ack), None)

    # ------------------------------------------------------------ execution

    def _execute(self, run: Running) -> dict[str, Any]:
        """Runs the plugin (on a task thread: never touches the socket); returns the result."""
        ctx, plugin = run.ctx, run.plugin
        executor = self.executors.get(plugin)
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            if executor is None:
                raise TaskFailed(f"plugin {plugin!r} is not loaded on worker {self.worker_id}")
            result = self.shipping.run(executor, ctx, plugin)  # in its shipped tree, if it has one
            outcome = "succeeded"
        except TaskFailed as exc:
            outcome, error, result = "failed", str(exc), exc.result
        except Exception as exc:
            outcome = "crashed"
            error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=-3))
        if ctx.cancelled.is_set():  # whatever the plugin said, it was stopped
            outcome = "timed_out" if ctx.cancel_reason == "timeout" else "cancelled"
            error = f"timed out after {ctx.timeout}s" if outcome == "timed_out" else ctx.cancel_reason
        if result is not None and not isinstance(result, dict):
            result = {"value": result}
        report = self._report(run, outcome, result, error)
        # A result the broker would refuse must not travel: it would be refused forever, and in
        # a batch with the results beside it. Its task fails instead, saying why.
        problem = _undeliverable(report)
        if problem is not None:
            log.warning("task %s attempt %d: result not deliverable: %s", ctx.task_id, ctx.attempt, problem)
            report.update(outcome="crashed", result=None, error=f"result not deliverable: {problem}")
        return report

    @staticmethod
    def _report(run: Running, outcome: str, result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
        return {
            "task_id": run.ctx.task_id,
            "attempt": run.ctx.attempt,
            "outcome": outcome,
            "result": result,
            "error": error,
            "started_at": run.started_at,
            "ended_at": time.time(),
        }

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _report_progress(self, task_id: str, attempt: int, data: dict[str, Any]) -> None:
        """A task thread's ``ctx.report_progress``: sized here (an update that cannot be packed,
        or is over PROGRESS_MESSAGE_BYTES, is dropped: the task's result is the record), then
        queued for the main thread to send."""
        update = {"task_id": task_id, "attempt": attempt, "data": data}
        try:
            size = protocol.packed_size(update)
        except (TypeError, ValueError, OverflowError) as exc:
            log.debug("task %s: progress not sent: %s", task_id, exc)
            return
        if size <= defaults.PROGRESS_MESSAGE_BYTES:
            self._progress.put((update, size))
            self._wake()

    def _collect_results(self) -> None:
        """Every result that is ready goes out in one TASK_RESULT, and kept until acknowledged;
        progress first (a task's progress is queued before its result), never kept."""
        self._wake_pending = False  # before reading the queue: a result put after this wakes us again
        self._send_progress()
        results = self._take_results()
        if results and self._registered:
            self._send_results(results)

    def _send_progress(self) -> None:
        """Queued progress, in messages of at most PROGRESS_MESSAGE_BYTES."""
        if self._progress.empty():  # most wake-ups carry results only: no exception raised for nothing
            return
        batch: list[dict[str, Any]] = []
        size = 0
        while True:
            try:
                update, length = self._progress.get_nowait()
            except queue.Empty:
                break
            if not self._registered:
                continue
            if size + length > defaults.PROGRESS_MESSAGE_BYTES:
                self._send(protocol.TASK_PROGRESS, {"updates": batch})
                batch, size = [], 0
            batch.append(update)
            size += length
        if batch:
            self._send(protocol.TASK_PROGRESS, {"updates": batch})

    def _take_results(self) -> list[dict[str, Any]]:
        results = []
        while True:
            try:
                result = self._done.get_nowait()
            except queue.Empty:
                return results
            log.debug("task %s attempt %d %s", result["task_id"], result["attempt"], result["outcome"])
            self.unacked[(result["task_id"], result["attempt"])] = result
            results.append(result)

    def _send_results(self, results: list[dict[str, Any]]) -> None:
        for i in range(0, len(results), defaults.RESULTS_PER_MESSAGE):
            self._send_batch(results[i : i + defaults.RESULTS_PER_MESSAGE])

    def _send_batch(self, results: list[dict[str, Any]]) -> None:
        """One TASK_RESULT, halved until it fits the broker's message size limit."""
        frame = protocol.encode(protocol.TASK_RESULT, {"results": results})
        if len(frame) > defaults.MAX_MESSAGE_BYTES // 2 and len(results) > 1:
            half = len(results) // 2
            self._send_batch(results[:half])
            self._send_batch(results[half:])
        else:
            self._send_frame(protocol.TASK_RESULT, frame)

    def _enforce_timeouts(self, now: float) -> None:
        """Timeouts, and the delayed TASK_STARTED of tasks still running."""
        with self._tasks_changed:
            runs = list(self.running.values())
        for run in runs:
            if run.done.is_set():
                continue  # finished: its result says the rest
            if run.deadline is not None and now >= run.deadline:
                run.deadline = None
                log.info("task %s exceeded its %.3gs timeout", run.ctx.task_id, run.ctx.timeout)
                run.ctx.cancel("timeout")
            if run.report_at is not None and now >= run.report_at and self._registered:
                run.report_at = None
                self._send(
                    protocol.TASK_STARTED,
                    {"task_id": run.ctx.task_id, "attempt": run.ctx.attempt, "started_at": run.started_at},
                )

    def _next_deadline(self, now: float, due: float) -> float:
        """Seconds until the next thing this loop must do on its own. Task threads start tasks
        without telling this loop, so while any runs or waits to, it looks again every
        STARTED_REPORT_DELAY (a task started meanwhile gets its TASK_STARTED and timeout)."""
        due = self.alive.beat(now, due)  # every loop turn passes here
        with self._tasks_changed:
            runs = list(self.running.values())
            waiting = bool(self.pending)
        if runs or waiting:
            due = min(due, now + defaults.STARTED_REPORT_DELAY)
        for run in runs:
            for when in (run.deadline, run.report_at):
                if when is not None and when < due:
                    due = when
        return max(due - now, 0.0)


def _undeliverable(report: dict[str, Any]) -> str | None:
    """Why the broker could not take this result, or None. A value msgpack cannot pack (a set,
    an object) is caught here, on the task thread, so it fails the task rather than the thread."""
    try:
        size = protocol.packed_size(report["result"])
    except Exception as exc:  # TypeError for a set, OverflowError for a huge int, ValueError when too deep
        return f"cannot be packed ({type(exc).__name__}: {exc})"
    if size > defaults.MAX_RESULT_BYTES:
        return f"result is larger than {defaults.MAX_RESULT_BYTES} bytes"
    # A result of fewer bytes than the nesting limit cannot nest that deep: the full check is skipped.
    if size > defaults.MAX_NESTING_DEPTH:
        return protocol.item_problem(protocol.TASK_RESULT, report)
    return None


def _metrics() -> dict[str, float]:
    return utilisation.sample()
