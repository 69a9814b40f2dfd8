"""The WebSocket: subscriptions deliver within 5 s of asking, per channel (seed scenario 4)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.monitoring.conftest import call

pytestmark = [pytest.mark.monitoring, pytest.mark.websocket]

DELIVERY = 5.0  # the seed's bound on how soon a subscription delivers


async def _receive(ws, match, timeout: float) -> dict:
    """The first message that satisfies ``match`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching WebSocket message in time")
        raw = await asyncio.wait_for(ws.read_message(), remaining)
        assert raw is not None, "the server closed the WebSocket"
        message = json.loads(raw)
        if match(message):
            return message


def test_4_subscriptions_deliver_within_5_seconds(monitored):
    cluster = monitored(workers={"w1": {}})
    url = cluster.http_url.replace("http://", "ws://") + "/ws"

    async def scenario() -> None:
        ws = await websocket_connect(HTTPRequest(url, headers=cluster.api_headers()))
        try:
            ws.write_message(json.dumps({"action": "subscribe", "channel": "nonsense"}))
            error = await _receive(ws, lambda m: "error" in m, DELIVERY)
            assert "unknown channel" in error["error"]
            ws.write_message("not json")
            assert "expected" in (await _receive(ws, lambda m: "error" in m, DELIVERY))["error"]

            for channel in ("system_metrics", "workers", "tasks", "anomalies"):
                ws.write_message(json.dumps({"action": "subscribe", "channel": channel}))
                ack = await _receive(ws, lambda m, c=channel: m.get("event") == "subscribed", DELIVERY)
                assert ack["channel"] == channel
            started = time.monotonic()
            system = await _receive(ws, lambda m: m.get("channel") == "system_metrics" and "data" in m, DELIVERY)
            assert time.monotonic() - started < DELIVERY
            assert system["data"]["timestamp"] > 0 and system["data"]["metrics"]["workers_total"] == 1
            workers = await _receive(ws, lambda m: m.get("channel") == "workers" and "data" in m, DELIVERY)
            assert workers["data"]["metrics"]["w1"]["worker_id"] == "w1"

            job = call(
                cluster, "/api/jobs", method="POST", body={"tasks": [{"name": "ws", "plugin": "sim"}]}, status=201
            )["data"]["job_id"]
            done = await _receive(
                ws,
                lambda m: m.get("channel") == "tasks" and m["data"]["event"].get("event") == "succeeded",
                DELIVERY,
            )
            event = done["data"]["event"]
            assert event["job_id"] == job and event["worker_id"] == "w1" and event["kind"] == "sim:ws"

            ws.write_message(json.dumps({"action": "unsubscribe", "channel": "system_metrics"}))
            await _receive(ws, lambda m: m.get("event") == "unsubscribed", DELIVERY)
        finally:
            ws.close()

    asyncio.run(scenario())
