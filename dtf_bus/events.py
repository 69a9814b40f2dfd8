"""The PUB channel: task and worker state changes and metrics, one topic per stream.

Frames are ``[topic, msgpack(payload)]`` so subscribers filter by prefix without decoding
(``events.task``, ``events.worker``, ``metrics.system``, ``metrics.worker.<id>``, ``anomaly``).
PUB never blocks: a slow subscriber
loses messages at its high-water mark instead of stalling the broker.

The socket is an XPUB, so the broker hears subscriptions: a topic nobody subscribed to is not
even encoded (:meth:`Publisher.wanted`), which keeps events off the hot path of a broker
nobody watches. Subscribers connect with plain SUB sockets as before.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq

TASK = b"events.task"
WORKER = b"events.worker"
SYSTEM_METRICS = b"metrics.system"
WORKER_METRICS = b"metrics.worker."  # + worker id: one topic per worker, so a view can follow one
ANOMALY = b"anomaly"


class Publisher:
    def __init__(self, socket: zmq.Socket) -> None:
        self._socket = socket
        self._prefixes: set[bytes] = set()
        self._wanted: dict[bytes, bool] = {}  # topic -> any subscriber's prefix matches it

    def wanted(self, topic: bytes) -> bool:
        hit = self._wanted.get(topic)
        if hit is None:
            hit = self._wanted[topic] = any(topic.startswith(p) for p in self._prefixes)
        return hit

    def publish(self, topic: bytes, payload: dict[str, Any]) -> None:
        if not self.wanted(topic):
            return
        payload.setdefault("ts", time.time())
        self._socket.send_multipart((topic, msgpack.packb(payload, use_bin_type=True)))

    def read_subscriptions(self) -> None:
        """Drain (un)subscribe messages: ``\\x01prefix`` subscribes, ``\\x00prefix`` unsubscribes."""
        while True:
            try:
                message = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not message:
                continue
            if message[0] == 1:
                self._prefixes.add(message[1:])
            elif message[0] == 0:
                self._prefixes.discard(message[1:])
            self._wanted.clear()


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Turn a received ``[topic, payload]`` pair back into ``(topic, dict)`` for subscribers."""
    return frames[0].decode(), msgpack.unpackb(frames[1], raw=False)
