import msgpack
import pytest

from dtf_bus import protocol

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
