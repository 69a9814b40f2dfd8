"""The worker's fetch over real sockets, against a broker stand-in that serves a real ShipStore
and misbehaves on purpose: a connection that goes silent mid-way (the fetch reconnects and
continues from the chunks on disk, asking for none twice) and bytes that are not the archive
asked for (the fetch refuses them, in one line, and keeps nothing)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq

from dtf_bus import defaults, protocol
from dtf_bus.ship.archive import ShipError
from dtf_bus.ship.fetch import Fetcher
from dtf_bus.ship.store import ShipStore

pytestmark = pytest.mark.integration

CHUNK = defaults.SHIP_CHUNK_BYTES


@pytest.fixture
def stored(tmp_path) -> tuple[ShipStore, bytes, str]:
    store = ShipStore(tmp_path / "db.ship")
    data = os.urandom(2 * CHUNK + 1000)  # three chunks
    hexdigest = hashlib.sha256(data).hexdigest()
    for offset in range(0, len(data), CHUNK):
        chunk = data[offset : offset + CHUNK]
        store.put({"code": "sha256:" + hexdigest, "size": len(data), "offset": offset, "data": chunk})
    return store, data, hexdigest


Serve = Callable[[bytes, dict, ShipStore], dict | None]  # (peer, request) -> reply body, or None: no answer


@pytest.fixture
def broker(stored) -> Iterator[Callable[[Serve], tuple[str, list[tuple[bytes, int]]]]]:
    """Starts a ROUTER answering ship_get with ``serve``; returns its endpoint and the requests
    seen as (peer, offset)."""
    ctx = zmq.Context.instance()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(serve: Serve) -> tuple[str, list[tuple[bytes, int]]]:
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.bind("tcp://127.0.0.1:*")
        seen: list[tuple[bytes, int]] = []

        def loop() -> None:
            try:
                while not stop.is_set():
                    if not router.poll(50):
                        continue
                    peer, frame = router.recv_multipart()
                    _, body = protocol.decode(frame)
                    seen.append((peer, body["offset"]))
                    data = serve(peer, body, stored[0])
                    if data is not None:
                        reply = protocol.encode(protocol.REPLY, {"req": body["req"], "data": data})
                        router.send_multipart([peer, reply])
            finally:
                router.close()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)
        return router.getsockopt(zmq.LAST_ENDPOINT).decode(), seen

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def test_a_fetch_cut_off_mid_way_reconnects_and_continues_from_the_chunks_it_has(tmp_path, stored, broker):
    _, data, hexdigest = stored
    first_peer: list[bytes] = []

    def serve(peer: bytes, body: dict, store: ShipStore) -> dict | None:
        first_peer[:] = first_peer or [peer]
        if peer == first_peer[0] and body["offset"] > 0:
            return None  # the first connection dies after its first chunk
        return store.get(body)

    endpoint, seen = broker(serve)
    part = tmp_path / "cache" / "x.tar"
    part.parent.mkdir()
    stats = Fetcher(endpoint, "w1", timeout=0.3).fetch(hexdigest, part, threading.Event())
    assert part.read_bytes() == data
    assert stats["reconnects"] == 1 and stats["fetched_bytes"] == len(data) and stats["chunks"] == 3
    second = [offset for peer, offset in seen if peer != first_peer[0]]
    assert second == [CHUNK, 2 * CHUNK]  # the chunk already on disk is never asked for again


def test_bytes_that_are_not_the_archive_asked_for_are_refused_and_not_kept(tmp_path, stored, broker):
    _, _, hexdigest = stored

    def serve(peer: bytes, body: dict, store: ShipStore) -> dict | None:
        reply = store.get(body)
        if body["offset"] == CHUNK:
            reply["data"] = bytes([reply["data"][0] ^ 1]) + reply["data"][1:]  # one bit flipped on the way
        return reply

    endpoint, _ = broker(serve)
    part = tmp_path / "x.tar"
    with pytest.raises(ShipError) as err:
        Fetcher(endpoint, "w1").fetch(hexdigest, part, threading.Event())
    message = str(err.value)
    assert message.startswith(f"shipped code sha256:{hexdigest[:12]}: the archive received hashes to sha256:")
    assert "not running it" in message and "\n" not in message
    assert not part.exists()


def test_a_fetch_nobody_answers_gives_up_once_out_of_patience_saying_so(tmp_path, broker):
    endpoint, _ = broker(lambda peer, body, store: None)
    said = r"^no chunk of sha256:0{12} from the broker at tcp://127\.0\.0\.1:\d+ for 0\.5s$"
    with pytest.raises(ShipError, match=said):
        Fetcher(endpoint, "w1", timeout=0.2, patience=0.5).fetch("0" * 64, tmp_path / "y.tar", threading.Event())
