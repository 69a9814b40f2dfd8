"""sim: a simulated workload for tests and demos.

``seconds`` of pretend work (divided by the worker's ``speed`` capability, so mock fleets can be
heterogeneous on one machine) ending in ``outcome``: ``pass`` returns, ``fail`` reports an
ordinary failure, ``crash`` breaks the executor with an unexpected exception, and ``hang``
never returns until the task is cancelled or times out. ``result`` (a table) joins the result,
to simulate what other plugins return (``tests`` rows, ``benchmarks``).
"""

from __future__ import annotations

from typing import Any

from dtf_bus.plugins import TaskContext, TaskFailed

OUTCOMES = ("pass", "fail", "crash", "hang")


class SimulatedCrash(RuntimeError):
    pass


class SimExecutor:
    name = "sim"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        seconds = ctx.params.get("seconds", 0.0)
        outcome = ctx.params.get("outcome", "pass")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise TaskFailed(f"sim: param 'seconds' must be a non-negative number, got {seconds!r}")
        if outcome not in OUTCOMES:
            raise TaskFailed(f"sim: param 'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        speed = ctx.capabilities.get("speed", 1.0)
        if not isinstance(speed, int | float) or speed <= 0:
            speed = 1.0
        if outcome == "hang":
            ctx.cancelled.wait()
            return {"outcome": "hang"}
        if seconds and ctx.cancelled.wait(seconds / speed):
            return {"outcome": "interrupted"}
        extra = ctx.params.get("result") or {}
        if not isinstance(extra, dict):
            raise TaskFailed(f"sim: param 'result' must be a table, got {type(extra).__name__}")
        result = {**extra, "seconds": seconds, "speed": speed, "outcome": outcome}
        if outcome == "fail":
            raise TaskFailed("simulated failure", result)
        if outcome == "crash":
            raise SimulatedCrash("simulated executor crash")
        return result
