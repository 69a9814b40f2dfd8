import time

import msgpack
import pytest

from dtf_bus import defaults, protocol
from dtf_bus.worker.connection import Connection

pytestmark = pytest.mark.unit


def test_round_trip():
    frame = protocol.encode(protocol.SUBMIT, {"req": 7, "tasks": [{"name": "a"}]})
    kind, body = protocol.decode(frame)
    assert kind == protocol.SUBMIT
    assert body == {"req": 7, "tasks": [{"name": "a"}]}


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb({"a": 1}), "not a [version, type, body] array"),
        (msgpack.packb([2, "ping", {"req": 1}]), "unsupported protocol version 2"),
        (msgpack.packb([1, "explode", {}]), "unknown message type 'explode'"),
        (msgpack.packb([1, "ping", []]), "body is not a map"),
        (msgpack.packb([1, "status", {"req": 1}]), "missing field 'job_id'"),
        (msgpack.packb([1, "status", {"req": 1, "job_id": 5}]), "field 'job_id' must be str"),
        (
            msgpack.packb([1, "register", {"worker_id": "w", "capabilities": {}, "slots": True, "plugins": []}]),
            "field 'slots' must be int",
        ),
        (msgpack.packb([1, "ping", {"req": 1}])[:-1], "not msgpack"),
    ],
)
def test_rejects_malformed(frame, fragment):
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.decode(frame)
    assert fragment in str(err.value)


def test_error_keeps_request_id_for_reply():
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.decode(msgpack.packb([1, "status", {"req": 42}]))
    assert err.value.req == 42


class _Recorder:
    """Stands in for the worker's DEALER: keeps what would have been sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)


def test_a_result_batch_is_split_to_fit_the_message_limit():
    connection = Connection(None, "tcp://127.0.0.1:1")  # never connects: only its sending is under test
    connection.socket = _Recorder()
    blob = "x" * (defaults.MAX_MESSAGE_BYTES // 5)  # three of them do not fit one message
    results = [
        {"task_id": f"j.{i}", "attempt": 1, "outcome": "succeeded", "result": {"log": blob}, "ended_at": 1.7e9}
        for i in range(3)
    ]
    connection.send(protocol.TASK_RESULT, {"results": results})
    frames = connection.socket.frames
    assert len(frames) == 2 and all(len(f) <= defaults.MAX_MESSAGE_BYTES // 2 for f in frames)
    sent = [r["task_id"] for f in frames for r in protocol.decode(f)[1]["results"]]
    assert sent == ["j.0", "j.1", "j.2"]


def test_item_problem_names_what_the_receiver_would_refuse():
    good = {"task_id": "j.0", "attempt": 1, "outcome": "succeeded", "ended_at": 1.7e9}
    assert protocol.item_problem(protocol.TASK_RESULT, good) is None
    assert "field 'outcome' is not one of" in protocol.item_problem(protocol.TASK_RESULT, {**good, "outcome": "meh"})


# msgpack unpack limits: a declared length past them is refused before anything is built.


def test_a_million_key_map_is_refused_at_once():
    frame = msgpack.packb([1, "heartbeat", {"metrics": {str(i): 0 for i in range(1_000_000)}}], use_bin_type=True)
    started = time.perf_counter()
    with pytest.raises(protocol.ProtocolError, match="exceeds max_map_len"):
        protocol.decode(frame)
    assert time.perf_counter() - started < 0.05  # unchecked, decoding it took ~0.7 s


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([0] * (defaults.MSGPACK_MAX_ARRAY_LEN + 1), "max_array_len"),
        ("x" * (defaults.MSGPACK_MAX_STR_LEN + 1), "max_str_len"),
        (b"x" * (defaults.MSGPACK_MAX_BIN_LEN + 1), "max_bin_len"),
    ],
)
def test_containers_past_the_limits_are_refused(value, fragment):
    with pytest.raises(protocol.ProtocolError, match=fragment):
        protocol.decode(protocol.encode(protocol.HEARTBEAT, {"running": [value]}))


def test_a_submit_of_the_largest_job_fits_the_limits():
    tasks = [{"name": f"t{i}", "plugin": "sim"} for i in range(defaults.MAX_TASKS_PER_JOB)]
    kind, body = protocol.decode(protocol.encode(protocol.SUBMIT, {"req": 1, "tasks": tasks}))
    assert kind == protocol.SUBMIT and len(body["tasks"]) == defaults.MAX_TASKS_PER_JOB


def test_item_problem_names_a_table_the_receiver_would_refuse():
    result = {"per_test": {f"t{i}": 1 for i in range(defaults.MSGPACK_MAX_MAP_LEN + 1)}}
    item = {"task_id": "j.0", "attempt": 1, "outcome": "succeeded", "result": result, "ended_at": 1.7e9}
    assert "holds a table of 65537 entries" in protocol.item_problem(protocol.TASK_RESULT, item)
