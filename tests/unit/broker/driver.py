"""Drive the broker's state machine with events, no sockets: stimulus in, instructions out."""

from __future__ import annotations

from typing import Any

from dtf_bus import protocol
from dtf_bus.broker.instructions import (
    BatchDone,
    HealthCheck,
    Instruction,
    LoopTurn,
    Message,
    Publish,
    Send,
    StealRound,
    StoreCommitted,
    Tick,
)
from dtf_bus.broker.machine import BrokerMachine
from dtf_bus.store.db import Store
from dtf_bus.task import Task

INTERVAL = 1.0  # heartbeat interval: missing after LIVENESS silent intervals, dead after DEAD
LIVENESS = 3
DEAD = 6
CLIENT = b"client"


class Driver:
    """A BrokerMachine with a clock of the test's own, and helpers that speak the protocol."""

    def __init__(self, machine: BrokerMachine, store: Store) -> None:
        self.machine = machine
        self.state = machine.state
        self.store = store
        self.now = 1000.0
        self.req = 0

    # ------------------------------------------------------------- stimulus

    def event(self, event: Any) -> list[Instruction]:
        return self.machine.handle(event, self.now, 1.7e9 + self.now)

    def msg(self, peer: bytes, kind: str, key: Any = None, **body: Any) -> list[Instruction]:
        return self.event(Message(peer, kind, body, key))

    def request(self, kind: str, peer: bytes = CLIENT, **body: Any) -> list[Instruction]:
        self.req += 1
        return self.msg(peer, kind, req=self.req, **body)

    def turn(self) -> list[Instruction]:
        """The end of a loop turn: retries due, followers, placement."""
        return self.event(LoopTurn())

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def health(self, backlog_since: float | None = None) -> list[Instruction]:
        return self.event(HealthCheck(backlog_since))

    def tick(self) -> list[Instruction]:
        return self.event(Tick())

    def steal_round(self) -> list[Instruction]:
        return self.event(StealRound())

    def commit(self) -> list[Instruction]:
        """Seal the batch's durable replies, let the store commit them, release them."""
        out = self.event(BatchDone())
        assert self.store.flush(), "the store did not commit in time"
        return out + self.event(StoreCommitted())

    # -------------------------------------------------------------- workers

    def register(
        self,
        worker_id: str,
        slots: int = 1,
        peer: bytes | None = None,
        plugins: tuple[str, ...] = ("sim",),
        **extra: Any,
    ) -> list[Instruction]:
        body = {"worker_id": worker_id, "capabilities": {"hardware": ["cpu"]}, "slots": slots, "plugins": list(plugins)}
        return self.msg(peer or worker_id.encode(), protocol.REGISTER, **body, **extra)

    def started(self, worker_id: str, task_id: str, attempt: int, peer: bytes | None = None) -> list[Instruction]:
        body = {"task_id": task_id, "attempt": attempt, "started_at": 1.7e9 + self.now}
        return self.msg(peer or worker_id.encode(), protocol.TASK_STARTED, **body)

    def result(
        self, worker_id: str, task_id: str, attempt: int, outcome: str = "succeeded", peer: bytes | None = None
    ) -> list[Instruction]:
        result = {
            "task_id": task_id,
            "attempt": attempt,
            "outcome": outcome,
            "started_at": 1.7e9 + self.now - 1,
            "ended_at": 1.7e9 + self.now,
            "result": {"value": 1} if outcome == "succeeded" else None,
            "error": None if outcome == "succeeded" else f"it {outcome}",
        }
        return self.msg(peer or worker_id.encode(), protocol.TASK_RESULT, results=[result])

    # ----------------------------------------------------------------- jobs

    def submit(self, tasks: list[dict[str, Any]], peer: bytes = CLIENT, **body: Any) -> str:
        """Submit; returns the new job's id (the reply itself waits for the store: see commit)."""
        before = set(self.state.jobs)
        out = self.request(protocol.SUBMIT, peer=peer, tasks=tasks, **body)
        assert not errors(out), errors(out)
        if body.get("job_id"):
            return body["job_id"]
        (job_id,) = set(self.state.jobs) - before
        return job_id

    def task(self, job_id: str, index: int = 0) -> Task:
        return self.state.tasks[f"{job_id}.{index}"]


# ------------------------------------------------------------- reading instructions


def sends(out: list[Instruction], kind: str | None = None, peer: bytes | None = None) -> list[Send]:
    return [
        i for i in out if isinstance(i, Send) and (kind is None or i.kind == kind) and (peer is None or i.peer == peer)
    ]


def published(out: list[Instruction], event: str | None = None) -> list[dict[str, Any]]:
    return [i.body for i in out if isinstance(i, Publish) and (event is None or i.body.get("event") == event)]


def errors(out: list[Instruction]) -> list[str]:
    return [i.body["error"] for i in sends(out, protocol.ERROR)]


def assigned(out: list[Instruction]) -> list[tuple[bytes, str, int]]:
    """(peer, task id, attempt) of every task in the ASSIGNs sent."""
    return [(i.peer, t["task_id"], t["attempt"]) for i in sends(out, protocol.ASSIGN) for t in i.body["tasks"]]


def cancels(out: list[Instruction]) -> list[tuple[bytes, str, int, str]]:
    return [(i.peer, i.body["task_id"], i.body["attempt"], i.body["reason"]) for i in sends(out, protocol.CANCEL)]


def replies(out: list[Instruction]) -> list[Any]:
    return [i.body["data"] for i in sends(out, protocol.REPLY)]


def specs(*names: str, **fields: Any) -> list[dict[str, Any]]:
    return [{"name": name, "plugin": "sim", **fields} for name in names]
