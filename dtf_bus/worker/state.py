"""The worker's task state: what it was assigned, what runs, what it must still deliver.

Pure, after Dask's worker state machine: events in, instructions out. It opens no socket,
starts no thread and reads no clock; an event that needs the time carries it (``now``
monotonic, ``wall`` epoch seconds). :class:`~dtf_bus.worker.worker.Worker` turns instructions
into sends and into tasks started or cancelled on its slot threads; ``bench/simfleet.py`` drives
the same state for hundreds of simulated workers in one process. Not thread-safe: the worker
calls it under one lock.

An attempt here is ``pending`` (assigned, the broker's prefetch; it may still be stolen back),
then ``running`` (a slot and its resources taken), then finished: its result is kept in
``unacked`` until the broker acknowledges it, so a result finished while the broker was away
is delivered on reconnect (where the attempt number decides whether it still counts).

Registration is per connection: nothing but REGISTER (and DRAIN) goes out on a connection
until its REGISTERED; a REGISTER the broker answers nothing to is asked again. The REGISTER
lists what this worker holds, ``running`` (running or pending) apart from ``finished`` (result
not yet acknowledged), so that the broker cancels only what it no longer wants to run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from dtf_bus import defaults, protocol
from dtf_bus.resources import Pool
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

log = logging.getLogger("dtf.worker")

Key = tuple[str, int]  # (task id, attempt)


# ---------------------------------------------------------------------------------- state


class WorkerState:
    """One worker's attempts and registration; :meth:`handle` is the only way in."""

    def __init__(
        self,
        worker_id: str,
        capabilities: dict[str, Any],
        plugins: list[str],
        slots: int = defaults.WORKER_SLOTS,
        resources: Mapping[str, int] | None = None,
        devices: Mapping[str, list[str]] | None = None,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        heartbeat_liveness: int = defaults.HEARTBEAT_LIVENESS,
    ) -> None:
        self.worker_id = worker_id
        self.slots = slots
        self.resources = dict(resources or {})  # consumable totals advertised (dtf_bus.resources)
        self.pool = Pool(self.resources, devices or {})
        self._identity = {
            "worker_id": worker_id,
            "capabilities": capabilities,
            "slots": slots,
            "resources": self.resources,
            "plugins": sorted(plugins),
        }
        # What the broker told us last (REGISTERED, HEARTBEAT): the connection times itself by it.
        self.interval = heartbeat_interval
        self.liveness = heartbeat_liveness
        self.pending: dict[str, dict[str, Any]] = {}  # task id -> its ASSIGN item, oldest first
        self.running: dict[str, Running] = {}
        self.unacked: dict[Key, dict[str, Any]] = {}  # finished, until the broker acknowledges
        self.unsent: list[Key] = []  # finished and not yet collected for sending
        self.progress: list[tuple[dict[str, Any], int]] = []
        self.registered = False  # on the current connection
        self.register_due = 0.0  # ask again at this time if still unanswered
        self.draining = False
        self.drain_deadline: float | None = None
        self.stopping = False
        self._events: dict[type, Callable[[Any], list[Instruction]]] = {
            Connected: self._connected,
            Disconnected: self._disconnected,
            Received: self._received,
            HeartbeatDue: self._heartbeat_due,
            Tick: self._tick,
            TaskFinished: self._task_finished,
            ProgressReported: self._progress_reported,
            Collect: self._collect,
            DrainRequested: self._drain_requested,
            Stopping: self._stopping,
        }
        self._messages: dict[str, Callable[[Received], list[Instruction]]] = {
            protocol.REGISTERED: self._on_registered,
            protocol.ASSIGN: self._on_assign,
            protocol.CANCEL: self._on_cancel,
            protocol.STEAL: self._on_steal,
            protocol.RESULT_ACK: self._on_result_ack,
            protocol.REREGISTER: self._on_reregister,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.DRAIN: lambda msg: self._drain_requested(
                DrainRequested(msg.body.get("reason", "asked by the broker"))
            ),
            protocol.ERROR: self._on_error,
        }

    def handle(self, *events: Event) -> list[Instruction]:
        """Apply ``events`` in order; the instructions they produce, in order."""
        instructions: list[Instruction] = []
        for event in events:
            instructions += self._events[type(event)](event)
        return instructions

    # ------------------------------------------------------------------------ queries

    def drained(self, now: float) -> bool:
        """Draining and done: nothing running or waiting, every result delivered, or the broker
        silent past one liveness period since there was nothing else to wait for (it requeues
        what it never heard about: do not wait forever)."""
        if not self.draining or self.running or self.pending or self.unsent:
            return False
        if not self.unacked:
            return True
        if self.drain_deadline is None:
            self.drain_deadline = now + self.interval * self.liveness
        return now >= self.drain_deadline

    def next_due(self, now: float, due: float) -> float:
        """``due`` brought forward to the next time :class:`Tick` has work. Slot threads start
        tasks without the main loop, so while any runs or waits it looks every
        STARTED_REPORT_DELAY (a task started meanwhile gets its TASK_STARTED and timeout)."""
        if self.running or self.pending:
            due = min(due, now + defaults.STARTED_REPORT_DELAY)
        for run in self.running.values():
            for when in (run.deadline, run.report_at):
                if when is not None and when < due:
                    due = when
        return due

    # ---------------------------------------------------------------- the connection

    def _connected(self, event: Connected) -> list[Instruction]:
        self.registered = False  # until this connection's REGISTERED nothing else is sent on it
        self.register_due = event.now + self.interval * self.liveness
        return [self._register()]

    def _disconnected(self, event: Disconnected) -> list[Instruction]:
        self.registered = False
        return []

    def _heartbeat_due(self, event: HeartbeatDue) -> list[Instruction]:
        if self.registered:
            return [SendHeartbeat()]
        if event.now >= self.register_due:  # the broker answers, but not our REGISTER: ask again
            self.register_due = event.now + self.interval * self.liveness
            return [self._register()]
        return []

    def _register(self) -> Send:
        held = [[tid, run.attempt] for tid, run in self.running.items()]
        held += [[tid, body["attempt"]] for tid, body in self.pending.items()]
        # Attempts we hold: running or queued here, and finished with the result not yet
        # acknowledged (the broker cancels only the first kind it no longer wants).
        body = {**self._identity, "running": held, "finished": [list(k) for k in self.unacked]}
        return Send(protocol.REGISTER, body)

    def _received(self, msg: Received) -> list[Instruction]:
        handler = self._messages.get(msg.kind)
        if handler is None:
            log.warning("unexpected %s from broker", msg.kind)
            return []
        return handler(msg)

    def _on_registered(self, msg: Received) -> list[Instruction]:
        self.registered = True
        self.interval = float(msg.body["heartbeat_interval"])
        self.liveness = int(msg.body["heartbeat_liveness"])
        out: list[Instruction] = []
        if self.draining:
            out.append(Send(protocol.DRAIN, {"reason": "still draining"}))
        self.unsent.clear()  # every unacknowledged result goes now, collected or not
        return out + self._result_messages(list(self.unacked.values()))  # finished while we were away

    def _on_reregister(self, msg: Received) -> list[Instruction]:
        log.info("broker asked us to re-register (%s)", msg.body.get("reason", ""))
        self.registered = False
        return [self._register()]

    def _on_heartbeat(self, msg: Received) -> list[Instruction]:
        if "interval" in msg.body:  # the broker stretches the interval as the fleet grows
            self.interval = float(msg.body["interval"])
        return []

    def _on_drain(self, msg: Received) -> list[Instruction]:
        return self._drain_requested(DrainRequested(msg.body.get("reason", "asked by the broker")))

    def _on_error(self, msg: Received) -> list[Instruction]:
        log.warning("broker says: %s", msg.body["error"])
        return []

    # ------------------------------------------------------------------ task flow

    def _on_assign(self, msg: Received) -> list[Instruction]:
        for task in msg.body["tasks"]:
            task_id, attempt = task["task_id"], task["attempt"]
            current = self.running.get(task_id)
            held = self.pending.get(task_id)
            if (current is not None and current.attempt == attempt) or (
                held is not None and held["attempt"] >= attempt
            ):
                continue  # duplicate delivery
            # A newer attempt replaces an older one still pending here: the broker moved on
            # (the older one's CANCEL follows), and skipping it would leave the task assigned
            # to us and never run.
            self.pending[task_id] = task
        return self._start_ready(msg.now, msg.wall)

    def _on_cancel(self, msg: Received) -> list[Instruction]:
        task_id, attempt = msg.body["task_id"], msg.body["attempt"]
        held = self.pending.get(task_id)
        if held is not None and held["attempt"] == attempt:
            del self.pending[task_id]  # never started: nothing to stop or report
            return []
        run = self.running.get(task_id)
        if run is None or run.attempt != attempt:
            return []
        log.info("cancelling %s attempt %d: %s", task_id, attempt, msg.body.get("reason", ""))
        return [Cancel(task_id, attempt, "cancelled")]

    def _on_steal(self, msg: Received) -> list[Instruction]:
        task_id, attempt = msg.body["task_id"], msg.body["attempt"]
        held = self.pending.get(task_id)
        ok = held is not None and held["attempt"] == attempt
        if ok:
            del self.pending[task_id]
        return [Send(protocol.STEAL_ACK, {"task_id": task_id, "attempt": attempt, "ok": ok})]

    def _on_result_ack(self, msg: Received) -> list[Instruction]:
        for ack in msg.body["acks"]:
            if isinstance(ack, list) and len(ack) == 2:
                self.unacked.pop(tuple(ack), None)
        return []

    def _start_ready(self, now: float, wall: float) -> list[Instruction]:
        """Start the oldest pending attempts that may run now: a slot free and their resources
        too (the broker counts resources as well, so a wait for them is short)."""
        out: list[Instruction] = []
        while not self.stopping and len(self.running) < self.slots:
            picked = self._startable()
            if picked is None:
                break
            body, taken = picked
            timeout = body.get("timeout")
            run = Running(
                task_id=body["task_id"],
                attempt=body["attempt"],
                plugin=body["plugin"],
                params=body["params"],
                timeout=timeout,
                started_at=wall,
                deadline=now + timeout if timeout else None,
                # A task that ends within STARTED_REPORT_DELAY is reported once, by its result
                # (which carries the start time); only longer ones send TASK_STARTED. Half the
                # messages for short tasks, and the broker still sees every long task running.
                report_at=now + defaults.STARTED_REPORT_DELAY,
                taken=taken,
            )
            self.running[run.task_id] = run
            out.append(Execute(run))
        return out

    def _startable(self) -> tuple[dict[str, Any], dict[str, list[str]]] | None:
        for task_id, body in self.pending.items():
            taken = self.pool.take(body["resources"]) if body.get("resources") else {}
            if taken is not None:
                del self.pending[task_id]
                return body, taken
        return None

    def _task_finished(self, event: TaskFinished) -> list[Instruction]:
        run = event.run
        if self.running.get(run.task_id) is run:
            del self.running[run.task_id]
        if run.taken:
            self.pool.give(run.taken)
        key = (run.task_id, run.attempt)
        self.unacked[key] = event.report
        self.unsent.append(key)
        return self._start_ready(event.now, event.wall)  # the freed slot takes the next one

    def _tick(self, event: Tick) -> list[Instruction]:
        """Timeouts, and the delayed TASK_STARTED of attempts still running."""
        out: list[Instruction] = []
        for run in self.running.values():
            if run.deadline is not None and event.now >= run.deadline:
                run.deadline = None
                log.info("task %s exceeded its %.3gs timeout", run.task_id, run.timeout)
                out.append(Cancel(run.task_id, run.attempt, "timeout"))
            if run.report_at is not None and event.now >= run.report_at and self.registered:
                run.report_at = None
                body = {"task_id": run.task_id, "attempt": run.attempt, "started_at": run.started_at}
                out.append(Send(protocol.TASK_STARTED, body))
        return out

    # ------------------------------------------------------------- results out

    def _progress_reported(self, event: ProgressReported) -> list[Instruction]:
        self.progress.append((event.update, event.size))
        return []

    def _collect(self, event: Collect) -> list[Instruction]:
        """Progress first (a task's progress is queued before its result), never kept; then
        every result not yet sent, in batches, kept until acknowledged."""
        out: list[Instruction] = []
        if self.progress and self.registered:
            batch: list[dict[str, Any]] = []
            size = 0
            for update, length in self.progress:
                if size + length > defaults.PROGRESS_MESSAGE_BYTES:
                    out.append(Send(protocol.TASK_PROGRESS, {"updates": batch}))
                    batch, size = [], 0
                batch.append(update)
                size += length
            if batch:
                out.append(Send(protocol.TASK_PROGRESS, {"updates": batch}))
        self.progress.clear()
        if self.unsent:
            results = [self.unacked[k] for k in self.unsent if k in self.unacked]
            self.unsent.clear()
            if self.registered:  # else REGISTERED sends them
                out += self._result_messages(results)
        return out

    @staticmethod
    def _result_messages(results: list[dict[str, Any]]) -> list[Instruction]:
        """TASK_RESULTs of at most RESULTS_PER_MESSAGE results (the connection halves one that
        is still over the broker's message size limit)."""
        step = defaults.RESULTS_PER_MESSAGE
        return [Send(protocol.TASK_RESULT, {"results": results[i : i + step]}) for i in range(0, len(results), step)]

    # -------------------------------------------------------------- the end

    def _drain_requested(self, event: DrainRequested) -> list[Instruction]:
        if self.draining:
            return []
        self.draining = True
        log.info("draining (%s): finishing %d task(s), then exiting", event.reason, len(self.running))
        return [Send(protocol.DRAIN, {"reason": event.reason})]

    def _stopping(self, event: Stopping) -> list[Instruction]:
        self.stopping = True  # nothing more starts
        return [Cancel(run.task_id, run.attempt, "worker stopping") for run in self.running.values()]
