"""The dtf wire protocol, version 1.

Every message is one ZeroMQ frame holding a msgpack array ``[VERSION, type, body]`` where
``body`` is a map. The ROUTER adds the peer's routing id in front; nothing else is framed.
One frame per message keeps encoding to a single ``packb`` call on the hot path.

Workers, clients and the broker all speak it; :func:`decode` validates every incoming frame
against :data:`SCHEMAS` so that handlers can trust the shape of what they receive.

Task traffic is batched: one ASSIGN carries every task placed on a worker in one round of the
broker's loop, one TASK_RESULT every result a worker collected at once, one RESULT_ACK every
result committed in one store batch. Each entry of those lists is validated like a body
(:data:`ITEMS`). Fewer, larger messages are what lets short tasks stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from dtf_bus import defaults, resources

VERSION = 1

# Worker -> broker
REGISTER = "register"
HEARTBEAT = "heartbeat"
TASK_STARTED = "task_started"
TASK_RESULT = "task_result"
TASK_PROGRESS = "task_progress"  # what a running task has to show so far (a finished test's reports)
UNREGISTER = "unregister"
# Both ways: a worker announces it is draining (SIGTERM), or the broker tells it to drain.
DRAIN = "drain"
STEAL_ACK = "steal_ack"  # worker -> broker: whether it gave the task up (phase 2)
# Broker -> worker
REGISTERED = "registered"
ASSIGN = "assign"
CANCEL = "cancel"
RESULT_ACK = "result_ack"
STEAL = "steal"  # give up this task if you have not started it (work stealing, phase 1)
REREGISTER = "reregister"
# Client -> broker (each carries a client-chosen ``req`` echoed in the reply)
SUBMIT = "submit"
STATUS = "status"
WAIT = "wait"
RESULTS = "results"
WORKERS = "workers"
CANCEL_JOB = "cancel_job"
CLOSE_JOB = "close_job"  # an open job (submitted with keep_open) takes no more tasks
FOLLOW = "follow"  # the tasks of a job finished since a cursor (a long poll)
TEST_HISTORY = "test_history"  # earlier runs' outcomes and durations of a pytest rootdir
QUERY = "query"  # a question about run history: jobs, compare, flaky, history (dtf_bus/analysis/requests.py)
DRAIN_WORKER = "drain_worker"
BALANCER_STATS = "balancer_stats"
PING = "ping"
# Shipped code (dtf_bus/ship/store.py): a client asks whether the broker holds an archive and
# uploads it in chunks; a worker fetches it in chunks. Every reply is a REPLY or an ERROR.
SHIP_HAVE = "ship_have"
SHIP_PUT = "ship_put"
SHIP_GET = "ship_get"
# Broker -> client, and broker -> anyone on a bad message
REPLY = "reply"
ERROR = "error"

# Task attempt outcomes reported by workers.
OUTCOMES = ("succeeded", "failed", "crashed", "timed_out", "cancelled")

_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_MAP = (dict,)
_LIST = (list, tuple)
_OPT_NUM = (int, float, type(None))

Schema = dict[str, tuple[tuple[type, ...], bool]]  # {field: (accepted python types, required)}

# type -> the schema of its body
SCHEMAS: dict[str, Schema] = {
    REGISTER: {
        "worker_id": (_STR, True),
        "capabilities": (_MAP, True),
        "slots": (_INT, True),
        "plugins": (_LIST, True),
        "running": (_LIST, False),
        "finished": (_LIST, False),
        "resources": (_MAP, False),
    },
    # From a worker: its metrics. From the broker: the interval the worker should use now
    # (it grows with the fleet so heartbeat traffic stays bounded).
    HEARTBEAT: {"running": (_LIST, False), "metrics": (_MAP, False), "interval": (_NUM, False)},
    TASK_STARTED: {"task_id": (_STR, True), "attempt": (_INT, True), "started_at": (_NUM, True)},
    TASK_RESULT: {"results": (_LIST, True)},
    TASK_PROGRESS: {"updates": (_LIST, True)},
    UNREGISTER: {},
    DRAIN: {"reason": (_STR, False)},
    REGISTERED: {"heartbeat_interval": (_NUM, True), "heartbeat_liveness": (_INT, True)},
    ASSIGN: {"tasks": (_LIST, True)},
    CANCEL: {"task_id": (_STR, True), "attempt": (_INT, True), "reason": (_STR, False)},
    RESULT_ACK: {"acks": (_LIST, True)},  # [[task_id, attempt], ...]: results committed to the store
    STEAL: {"task_id": (_STR, True), "attempt": (_INT, True)},
    STEAL_ACK: {"task_id": (_STR, True), "attempt": (_INT, True), "ok": ((bool,), True)},
    REREGISTER: {"reason": (_STR, False)},
    SUBMIT: {
        "req": (_INT, True),
        "tasks": (_LIST, True),
        "name": (_STR, False),
        "submitter": (_STR, False),
        "job_id": (_STR, False),  # add the tasks to this open job
        "keep_open": ((bool,), False),  # the job takes more tasks later (until close_job)
        "meta": (_MAP, False),  # git commit, branch, dirty, commit_time, labels (dtf_bus/runmeta.py)
    },
    STATUS: {"req": (_INT, True), "job_id": (_STR, True)},
    WAIT: {"req": (_INT, True), "job_id": (_STR, True)},
    RESULTS: {"req": (_INT, True), "job_id": (_STR, True)},
    WORKERS: {"req": (_INT, True)},
    CANCEL_JOB: {"req": (_INT, True), "job_id": (_STR, True)},
    CLOSE_JOB: {"req": (_INT, True), "job_id": (_STR, True)},
    FOLLOW: {
        "req": (_INT, True),
        "job_id": (_STR, True),
        "since": (_INT, True),
        "progress_since": (_INT, False),  # also the running tasks' progress after this cursor
        "wait": (_NUM, False),
        "status": ((bool,), False),
    },
    TEST_HISTORY: {"req": (_INT, True), "rootdir": (_STR, True)},
    QUERY: {"req": (_INT, True), "what": (_STR, True), "args": (_MAP, False)},
    DRAIN_WORKER: {"req": (_INT, True), "worker_id": (_STR, True)},
    BALANCER_STATS: {"req": (_INT, True)},
    PING: {"req": (_INT, True)},
    SHIP_HAVE: {"req": (_INT, True), "code": (_STR, True)},
    SHIP_PUT: {
        "req": (_INT, True),
        "code": (_STR, True),
        "size": (_INT, True),
        "offset": (_INT, True),
        "data": ((bytes,), True),
    },
    SHIP_GET: {"req": (_INT, True), "code": (_STR, True), "offset": (_INT, True), "worker_id": (_STR, False)},
    REPLY: {"req": (_INT, True), "data": ((dict, list), True)},
    ERROR: {"req": ((int, type(None)), False), "error": (_STR, True)},
}


class ProtocolError(ValueError):
    """A frame that is not a valid dtf message; the text says what is wrong with it."""

    def __init__(self, reason: str, req: int | None = None) -> None:
        super().__init__(reason)
        self.req = req


def encode(kind: str, body: dict[str, Any]) -> bytes:
    """Pack one message. Bodies are trusted here: only incoming frames are validated."""
    return msgpack.packb((VERSION, kind, body), use_bin_type=True)


# Every declared length is bounded (defaults.MSGPACK_*): msgpack refuses a longer one before
# building anything, so a frame of one million-key map fails in microseconds instead of holding
# the loop for a second. Extension types are not part of the protocol at all. (Module constants
# passed by keyword: a ** of a dict would cost decode a fifth more on small frames.)
_MAX_ARRAY = defaults.MSGPACK_MAX_ARRAY_LEN
_MAX_MAP = defaults.MSGPACK_MAX_MAP_LEN
_MAX_STR = defaults.MSGPACK_MAX_STR_LEN
_MAX_BIN = defaults.MSGPACK_MAX_BIN_LEN


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """Unpack and validate one frame, raising :class:`ProtocolError` with the reason."""
    try:
        msg = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_array_len=_MAX_ARRAY,
            max_map_len=_MAX_MAP,
            max_str_len=_MAX_STR,
            max_bin_len=_MAX_BIN,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(msg, list) or len(msg) != 3:
        raise ProtocolError("message is not a [version, type, body] array")
    version, kind, body = msg
    req = body.get("req") if isinstance(body, dict) and type(body.get("req")) is int else None  # not a bool
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this is {VERSION})", req)
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ProtocolError(f"unknown message type {kind!r}", req)
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind}: body is not a map", req)
    _check(kind, body, SCHEMAS[kind], _LIMITS.get(kind, ()), req)
    if kind in ITEMS:
        field, schema, limits = ITEMS[kind]
        for index, item in enumerate(body[field]):
            if not isinstance(item, dict):
                raise ProtocolError(f"{kind}: {field}[{index}] is not a map", req)
            _check(f"{kind}: {field}[{index}]", item, schema, limits, req)
    return kind, body


def item_problem(kind: str, item: dict[str, Any]) -> str | None:
    """Why ``item`` would be refused as one entry of a batched ``kind`` message, or None:
    a sender checks what it built before sending it."""
    field, schema, limits = ITEMS[kind]
    try:
        _check(f"{kind}: {field} entry", item, schema, limits, None)
    except ProtocolError as exc:
        return str(exc)
    return _length_problem(item)


def _length_problem(value: Any) -> str | None:
    """A container longer than :func:`decode` admits, anywhere in ``value`` (a sender's check:
    the receiver would refuse the whole frame, and the entries batched with it)."""
    level = [value]
    for _ in range(defaults.MAX_NESTING_DEPTH + 1):
        for item in level:
            if type(item) is dict and len(item) > defaults.MSGPACK_MAX_MAP_LEN:
                return f"holds a table of {len(item)} entries; at most {defaults.MSGPACK_MAX_MAP_LEN}"
            if type(item) is not dict and len(item) > defaults.MSGPACK_MAX_ARRAY_LEN:
                return f"holds a list of {len(item)} entries; at most {defaults.MSGPACK_MAX_ARRAY_LEN}"
        level = [c for item in level for c in (item.values() if type(item) is dict else item) if type(c) in _CONTAINERS]
        if not level:
            return None
    return None


def packed_size(value: Any) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


def _check(where: str, body: dict[str, Any], schema: Schema, limits: _Limits, req: int | None) -> None:
    for field, (types, required) in schema.items():
        if field not in body:
            if required:
                raise ProtocolError(f"{where}: missing field {field!r}", req)
            continue
        value = body[field]
        # bool is an int subclass; never accept it where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            raise ProtocolError(f"{where}: field {field!r} must be {names}, got {type(value).__name__}", req)
    for field, check in limits:
        value = body.get(field)
        if value is not None:
            reason = check(value)
            if reason is not None:
                raise ProtocolError(f"{where}: field {field!r} {reason}", req)


# Limits beyond the types: what a peer could otherwise use to hurt the broker or its store
# (ids of megabytes, timestamps DuckDB cannot hold, nesting that overflows JSON encoding).


def _id(value: str) -> str | None:
    return None if len(value) <= defaults.MAX_ID_CHARS else f"is longer than {defaults.MAX_ID_CHARS} characters"


def _time(value: float) -> str | None:
    return None if 0 <= value < 1e11 else f"is not a plausible epoch timestamp ({value!r})"


def _slots(value: int) -> str | None:
    return None if 1 <= value <= defaults.MAX_WORKER_SLOTS else f"must be 1..{defaults.MAX_WORKER_SLOTS}"


def _resources(value: dict) -> str | None:
    try:
        resources.check(value, "resources", allow_zero=True)
    except resources.ResourceError as exc:
        return f"is invalid: {exc}"
    return None


def _count(value: int) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _wait(value: float) -> str | None:
    return None if 0 <= value <= defaults.FOLLOW_MAX_WAIT else f"must be 0..{defaults.FOLLOW_MAX_WAIT:g} seconds"


def _path(value: str) -> str | None:
    return None if len(value) <= 4096 else "is longer than 4096 characters"


_CONTAINERS = frozenset((dict, list))


def _nesting(value: Any) -> str | None:
    """Containers nested at most MAX_NESTING_DEPTH deep. One level per step, iteratively (a
    hostile depth cannot recurse), with comprehensions: 3x faster than a stack of (item, depth)."""
    level = [value]
    for _ in range(defaults.MAX_NESTING_DEPTH):
        level = [c for item in level for c in (item.values() if type(item) is dict else item) if type(c) in _CONTAINERS]
        if not level:
            return None
    return f"is nested deeper than {defaults.MAX_NESTING_DEPTH} levels"


def _outcome(value: str) -> str | None:
    return None if value in OUTCOMES else f"is not one of {', '.join(OUTCOMES)}"


_Limits = tuple[tuple[str, Callable[[Any], str | None]], ...]
_JOB = (("job_id", _id),)
_LIMITS: dict[str, _Limits] = {
    REGISTER: (
        ("worker_id", _id),
        ("slots", _slots),
        ("capabilities", _nesting),
        ("plugins", _nesting),
        ("running", _nesting),
        ("finished", _nesting),
        ("resources", _resources),
    ),
    HEARTBEAT: (("running", _nesting), ("metrics", _nesting)),
    TASK_STARTED: (("task_id", _id), ("started_at", _time)),
    SUBMIT: (("tasks", _nesting), ("name", _id), ("submitter", _id), ("job_id", _id), ("meta", _nesting)),
    STATUS: _JOB,
    WAIT: _JOB,
    RESULTS: _JOB,
    CANCEL_JOB: _JOB,
    CLOSE_JOB: _JOB,
    FOLLOW: (*_JOB, ("since", _count), ("progress_since", _count), ("wait", _wait)),
    TEST_HISTORY: (("rootdir", _path),),
    QUERY: (("what", _id), ("args", _nesting)),
    DRAIN_WORKER: (("worker_id", _id),),
    SHIP_HAVE: (("code", _id),),
    SHIP_PUT: (("code", _id), ("size", _count), ("offset", _count)),
    SHIP_GET: (("code", _id), ("offset", _count), ("worker_id", _id)),
}
# Batched types: the list field, and the schema and limits every entry of it must meet.
ITEMS: dict[str, tuple[str, Schema, _Limits]] = {
    ASSIGN: (
        "tasks",
        {
            "task_id": (_STR, True),
            "attempt": (_INT, True),
            "plugin": (_STR, True),
            "params": (_MAP, True),
            "timeout": (_OPT_NUM, False),
        },
        (("task_id", _id), ("params", _nesting)),
    ),
    TASK_RESULT: (
        "results",
        {
            "task_id": (_STR, True),
            "attempt": (_INT, True),
            "outcome": (_STR, True),
            "result": ((dict, type(None)), False),
            "error": ((str, type(None)), False),
            "started_at": (_OPT_NUM, False),
            "ended_at": (_NUM, True),
        },
        (("task_id", _id), ("outcome", _outcome), ("result", _nesting), ("started_at", _time), ("ended_at", _time)),
    ),
    TASK_PROGRESS: (
        "updates",
        {"task_id": (_STR, True), "attempt": (_INT, True), "data": (_MAP, True)},
        (("task_id", _id), ("data", _nesting)),
    ),
}
