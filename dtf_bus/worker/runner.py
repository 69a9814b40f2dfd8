"""The worker's slot threads: a fixed pool, one per slot, running executor plugins.

Plugin code never runs on the main thread, so a slow or stuck task cannot delay a heartbeat.
A slot thread hands its result to ``finished`` itself, and that answer (the state machine's)
may start the next attempt on the same thread at once, so a stream of short tasks never waits
for the main loop between two of them. Whatever a plugin (or this module) raises becomes a
``crashed`` result: a task always ends, and its slot is always freed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dtf_bus import defaults, protocol
from dtf_bus.plugins import Executor, TaskContext, TaskFailed
from dtf_bus.worker.events import Running

log = logging.getLogger("dtf.worker")

Key = tuple[str, int]


class Shipper(Protocol):
    """What runs an executor in its task's shipped tree (:class:`dtf_bus.ship.worker.Shipping`)."""

    def run(self, executor: Executor, ctx: TaskContext, plugin: str) -> Any: ...


class Runner:
    """``slots`` threads running what :meth:`submit` is given, oldest first.

    ``finished(run, report)`` is called on the slot thread with each attempt's TASK_RESULT
    item; ``progress(task_id, attempt, data)`` with each progress update a task reports."""

    def __init__(
        self,
        slots: int,
        worker_id: str,
        capabilities: dict[str, Any],
        executors: Mapping[str, Executor],
        shipping: Shipper,
        finished: Callable[[Running, dict[str, Any]], None],
        progress: Callable[[str, int, dict[str, Any]], None],
    ) -> None:
        self.slots = slots
        self.worker_id = worker_id
        self.capabilities = capabilities
        self.executors = executors
        self.shipping = shipping
        self._finished = finished
        self._progress = progress
        self._queue: queue.SimpleQueue[Running | None] = queue.SimpleQueue()
        # Every submitted attempt's context until its result is handed over: what cancel finds,
        # from the moment the state machine started it (before a thread has picked it up).
        self._contexts: dict[Key, TaskContext] = {}
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        for _ in range(self.slots):
            thread = threading.Thread(target=self._slot, name="dtf-task", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, run: Running) -> None:
        ctx = TaskContext(
            task_id=run.task_id,
            attempt=run.attempt,
            worker_id=self.worker_id,
            params=run.params,
            timeout=run.timeout,
            capabilities=self.capabilities,
            devices=run.taken,
        )
        ctx.progress = lambda data: self._progress(run.task_id, run.attempt, data)
        with self._changed:
            self._contexts[(run.task_id, run.attempt)] = ctx
        self._queue.put(run)

    def cancel(self, task_id: str, attempt: int, reason: str) -> None:
        with self._changed:
            ctx = self._contexts.get((task_id, attempt))
        if ctx is not None:
            ctx.cancel(reason)

    def stop(self, deadline: float) -> None:
        """Start nothing more; wait until ``deadline`` (monotonic) for running attempts to end
        (cancelled by now: their executors kill their process groups before the process goes)."""
        self._stopping = True
        for _ in self._threads:
            self._queue.put(None)
        with self._changed:
            while self._contexts and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)

    # ----------------------------------------------------------- slot threads

    def _slot(self) -> None:
        while (run := self._queue.get()) is not None:
            key = (run.task_id, run.attempt)
            with self._changed:
                ctx = self._contexts[key]
            if self._stopping:  # started by the state, never begun: the broker requeues it
                self._forget(key)
                continue
            try:
                report = self._execute(run, ctx)
            except Exception as exc:  # a bug of ours: the task still ends, and its slot is freed
                log.exception("task %s attempt %d: internal error", run.task_id, run.attempt)
                report = _report(run, "crashed", None, f"internal worker error: {type(exc).__name__}: {exc}")
            try:
                self._finished(run, report)
            except Exception:  # a bug of ours: logged, and the slot thread lives on
                log.exception("task %s attempt %d: result not handed over", run.task_id, run.attempt)
            finally:
                self._forget(key)

    def _forget(self, key: Key) -> None:
        with self._changed:
            self._contexts.pop(key, None)
            self._changed.notify_all()

    def _execute(self, run: Running, ctx: TaskContext) -> dict[str, Any]:
        """Runs the plugin; returns the result (never raises for what the plugin does)."""
        executor = self.executors.get(run.plugin)
        result: Any = None
        error: str | None = None
        try:
            if executor is None:
                raise TaskFailed(f"plugin {run.plugin!r} is not loaded on worker {self.worker_id}")
            result = self.shipping.run(executor, ctx, run.plugin)  # in its shipped tree, if it has one
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
        report = _report(run, outcome, result, error)
        # A result the broker would refuse must not travel: it would be refused forever, and in
        # a batch with the results beside it. Its task fails instead, saying why.
        problem = undeliverable(report)
        if problem is not None:
            log.warning("task %s attempt %d: result not deliverable: %s", run.task_id, run.attempt, problem)
            report.update(outcome="crashed", result=None, error=f"result not deliverable: {problem}")
        return report


def _report(run: Running, outcome: str, result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    return {
        "task_id": run.task_id,
        "attempt": run.attempt,
        "outcome": outcome,
        "result": result,
        "error": error,
        "started_at": run.started_at,
        "ended_at": time.time(),
    }


def undeliverable(report: dict[str, Any]) -> str | None:
    """Why the broker could not take this result, or None. A value msgpack cannot pack (a set,
    an object) is caught here, on the slot thread, so it fails the task rather than the thread."""
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
