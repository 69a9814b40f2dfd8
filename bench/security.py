"""Security overhead: the hostile-input checks on the broker's hottest path, and CURVE on the wire.

1. ``protocol.decode`` as shipped (msgpack limits, schema, id/timestamp/nesting limits) against
   the same decode without the limits (the baseline, defined here), per message kind, in
   microseconds per message, on one core in this process.
2. A real broker and one worker, plaintext then CURVE (``LocalCluster(secure=True)``): client
   round trips (``ping``, median microseconds) and a job of ``--tasks`` zero-second sim tasks
   (tasks per second, submit to last result).

    python bench/security.py [--decodes 50000] [--pings 2000] [--tasks 2000] [--json]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import benchlib
import msgpack

from dtf_bus import protocol

MESSAGES: dict[str, bytes] = {
    "heartbeat": protocol.encode(
        protocol.HEARTBEAT, {"metrics": {f"m{i}": i * 1.5 for i in range(12)}, "running": [["j.1", 1]]}
    ),
    "task_result (small)": protocol.encode(
        protocol.TASK_RESULT,
        {
            "results": [
                {
                    "task_id": "abcdef123456.17",
                    "attempt": 1,
                    "outcome": "succeeded",
                    "result": {"seconds": 0.1, "speed": 1.0, "outcome": "pass"},
                    "error": None,
                    "started_at": 1.7e9,
                    "ended_at": 1.7e9 + 1,
                }
            ]
        },
    ),
    "task_result (100 tests)": protocol.encode(
        protocol.TASK_RESULT,
        {
            "results": [
                {
                    "task_id": "abcdef123456.18",
                    "attempt": 1,
                    "outcome": "failed",
                    "result": {
                        "tests": [
                            {
                                "nodeid": f"tests/test_x.py::test_{i}",
                                "outcome": "passed",
                                "duration": 0.01,
                                "message": "",
                            }
                            for i in range(100)
                        ],
                        "exit_code": 1,
                    },
                    "started_at": 1.7e9,
                    "ended_at": 1.7e9 + 1,
                }
            ]
        },
    ),
    "status": protocol.encode(protocol.STATUS, {"req": 7, "job_id": "abcdef123456"}),
}


def unchecked_decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """The baseline: decode as it was before the hostile-input limits (types only)."""
    msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=len(frame))
    if not isinstance(msg, list) or len(msg) != 3:
        raise protocol.ProtocolError("message is not a [version, type, body] array")
    version, kind, body = msg
    if version != protocol.VERSION or kind not in protocol.SCHEMAS or not isinstance(body, dict):
        raise protocol.ProtocolError("bad envelope")
    for field, (types, required) in protocol.SCHEMAS[kind].items():
        if field not in body:
            if required:
                raise protocol.ProtocolError(f"{kind}: missing field {field!r}")
            continue
        value = body[field]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise protocol.ProtocolError(f"{kind}: field {field!r} has the wrong type")
    return kind, body


def per_message_us(fn: Any, frame: bytes, n: int, rounds: int) -> float:
    best = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn(frame)
        best.append((time.perf_counter() - start) / n * 1e6)
    return benchlib.median(best)


def cluster_figures(secure: bool, pings: int, tasks: int) -> dict[str, float]:
    with benchlib.cluster(secure=secure) as cluster:
        cluster.start_broker()
        cluster.start_worker("w1", slots=8)
        cluster.wait_for_workers(["w1"], timeout=30)
        with cluster.client(timeout=30) as client:
            times = []
            for _ in range(pings):
                start = time.perf_counter()
                client.ping()
                times.append((time.perf_counter() - start) * 1e6)
            start = time.perf_counter()
            job = client.submit([{"name": "t", "plugin": "sim", "params": {"seconds": 0.0}, "repeat": tasks}])
            client.wait(job, timeout=300)
            elapsed = time.perf_counter() - start
    return {"ping_us": benchlib.median(times), "tasks_per_s": tasks / elapsed}


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--decodes", type=int, default=50_000, help="decodes per message kind per round")
    p.add_argument("--pings", type=int, default=2000)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=benchlib.DEFAULT_ROUNDS)
    args = p.parse_args(argv)
    if min(args.decodes, args.pings, args.tasks, args.rounds) < 1:
        p.error("--decodes, --pings, --tasks and --rounds must be positive")
    rows: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {"machine": benchlib.machine(), "decode": {}}
    for name, frame in MESSAGES.items():
        assert protocol.decode(frame) == unchecked_decode(frame)
        base = per_message_us(unchecked_decode, frame, args.decodes, args.rounds)
        checked = per_message_us(protocol.decode, frame, args.decodes, args.rounds)
        summary["decode"][name] = {"baseline_us": base, "checked_us": checked}
        rows.append((f"decode {name}: baseline us", round(base, 2)))
        rows.append((f"decode {name}: with limits us", round(checked, 2)))
    for secure in (False, True):
        label = "curve" if secure else "plaintext"
        figures = cluster_figures(secure, args.pings, args.tasks)
        summary[label] = figures
        rows.append((f"{label}: ping round trip us (median)", round(figures["ping_us"], 1)))
        rows.append((f"{label}: sim tasks per second", round(figures["tasks_per_s"], 1)))
    benchlib.emit("Security overhead", rows, summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
