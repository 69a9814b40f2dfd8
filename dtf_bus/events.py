"""The PUB channel: task and worker state changes and metrics, one topic per stream.

Frames are ``[topic, msgpack(payload)]`` so subscribers filter by prefix without decoding
(``events.task``, ``events.worker``, ``metrics.system``, ``metrics.worker.<id>``, ``anomaly``).
PUB never blocks: a slow subscriber
loses messages at its high-water mark instead of stalling the broker.
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

    def publish(self, topic: bytes, payload: dict[str, Any]) -> None:
        payload.setdefault("ts", time.time())
        self._socket.send_multipart((topic, msgpack.packb(payload, use_bin_type=True)))


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Turn a received ``[topic, payload]`` pair back into ``(topic, dict)`` for subscribers."""
    return frames[0].decode(), msgpack.unpackb(frames[1], raw=False)
