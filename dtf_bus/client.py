"""The client API: submit jobs, watch them, fetch results, list workers.

A :class:`Client` is a DEALER with a request counter; each reply carries the request's
``req`` so late replies to an abandoned request are recognised and dropped. A broker that
does not answer within the timeout raises :class:`BrokerUnreachable`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import zmq

from dtf_bus import defaults, protocol, spec
from dtf_bus.config import Option
from dtf_bus.security import curve as security

log = logging.getLogger(__name__)

# A client command's connection settings, settled by dtf_bus.config.merge: flag > environment > default.
CLIENT_OPTIONS = (
    Option("broker", env=defaults.BROKER_ENV),
    Option("curve_secret", env=defaults.CURVE_SECRET_ENV),
    Option("broker_key", env=defaults.BROKER_KEY_ENV),
)


class ClientError(RuntimeError):
    """The broker refused a request; the message is the broker's reason."""


class BrokerUnreachable(ClientError):
    pass


def default_endpoint() -> str:
    return os.environ.get(defaults.BROKER_ENV) or defaults.BROKER_ENDPOINT


class Client:
    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = defaults.CLIENT_TIMEOUT,
        curve: security.ClientCurve | None = None,
    ) -> None:
        """``curve``: CURVE keys; by default from $DTF_CURVE_SECRET and $DTF_BROKER_KEY (if set)."""
        self.endpoint = endpoint or default_endpoint()
        self.timeout = timeout
        curve = curve if curve is not None else security.resolve_client_curve()
        self._ctx = zmq.Context.instance()
        self._socket = self._ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            security.make_client(self._socket, curve)
        self._socket.connect(self.endpoint)
        self._req = itertools.count(1)

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        """Send one request and wait for its reply; raises on error or silence."""
        return self.reply(self.send(kind, body), timeout)

    def send(self, kind: str, body: dict[str, Any]) -> int:
        """Send a request without waiting (requests in flight are answered in order); its ``req``."""
        req = next(self._req)
        self._socket.send(protocol.encode(kind, {**body, "req": req}))
        return req

    def reply(self, req: int, timeout: float | None = None) -> Any:
        """Wait for the reply to request ``req`` (earlier replies not waited for are dropped)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(remaining * 1000):
                raise BrokerUnreachable(f"broker at {self.endpoint} did not answer within {limit:g}s")
            try:
                reply_kind, reply = protocol.decode(self._socket.recv())
            except protocol.ProtocolError:
                continue
            if reply.get("req") != req:
                continue  # a late answer to an earlier request
            if reply_kind == protocol.ERROR:
                raise ClientError(reply["error"])
            if reply_kind == protocol.REPLY:
                return reply["data"]

    def submit(
        self,
        tasks: list[dict[str, Any]],
        name: str = "job",
        submitter: str | None = None,
        job_id: str | None = None,
        keep_open: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Queue tasks (validated here first); returns the job id. ``submitter`` is recorded
        only where the broker cannot tell who we are (no CURVE) or from its own HTTP API.
        ``job_id`` adds the tasks to that open job; ``keep_open`` keeps the job taking tasks
        (and not done) until :meth:`close_job`. ``meta``: the run's git facts and labels
        (:func:`dtf_bus.runmeta.collect`), stored on a new job."""
        return self.submit_job(tasks, name, submitter, job_id, keep_open, meta)["job_id"]

    def submit_job(
        self,
        tasks: list[dict[str, Any]],
        name: str = "job",
        submitter: str | None = None,
        job_id: str | None = None,
        keep_open: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`submit`, answering the broker's whole reply: ``job_id``, ``total`` and, for
        tasks no live worker can run, ``warnings`` (with did-you-mean hints for typos)."""
        body: dict[str, Any] = {"tasks": spec.validate(tasks), "name": name}
        if submitter:
            body["submitter"] = submitter
        if job_id:
            body["job_id"] = job_id
        if keep_open:
            body["keep_open"] = True
        if meta:
            body["meta"] = meta
        return self.request(protocol.SUBMIT, body)

    def close_job(self, job_id: str) -> dict[str, Any]:
        """An open job takes no more tasks; it is done once every task it has is final."""
        return self.request(protocol.CLOSE_JOB, {"job_id": job_id})

    def follow(
        self,
        job_id: str,
        since: int = 0,
        wait: float = 1.0,
        status: bool = False,
        progress_since: int | None = None,
    ) -> dict[str, Any]:
        """Tasks of the job finished after the first ``since`` (in finish order), as soon as
        there are any or after ``wait`` seconds: ``{"tasks", "next", "done"}``, plus
        ``counts``, ``blocked`` and ``unplaceable`` (task ids no live worker can run) with
        ``status``, and with ``progress_since`` the running tasks' progress after that cursor:
        ``progress`` (``[{"task_id", "name", "data"}]``) and ``progress_next``."""
        body: dict[str, Any] = {"job_id": job_id, "since": since, "wait": wait}
        if status:
            body["status"] = True
        if progress_since is not None:
            body["progress_since"] = progress_since
        return self.request(protocol.FOLLOW, body, timeout=self.timeout + wait)

    def test_history(self, rootdir: str) -> dict[str, Any]:
        """Earlier runs of a pytest rootdir: ``{"last_failed": [nodeid...], "durations": {nodeid: s}}``."""
        return self.request(protocol.TEST_HISTORY, {"rootdir": rootdir})

    def query(self, what: str, **args: Any) -> Any:
        """A question about run history (``jobs``, ``job``, ``compare``, ``flaky``, ``history``,
        ``benchmarks``; arguments in :mod:`dtf_bus.analysis.requests`), read off the broker's loop."""
        body = {"what": what, "args": {k: v for k, v in args.items() if v is not None}}
        self.ping()  # an absent broker is told within the usual timeout, not the query's
        return self.request(protocol.QUERY, body, timeout=max(self.timeout, defaults.QUERY_TIMEOUT))

    def status(self, job_id: str) -> dict[str, Any]:
        return self.request(protocol.STATUS, {"job_id": job_id})

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until every task of the job is final; returns the final status.

        The request is repeated every few seconds, so a broker that restarted in between is
        asked again. A broker that stays unreachable for ``CLIENT_RECONNECT_PATIENCE`` seconds
        raises :class:`BrokerUnreachable`; ``timeout`` raises TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        while True:
            slice_s = defaults.CLIENT_WAIT_POLL
            if deadline is not None:
                slice_s = min(slice_s, deadline - time.monotonic())
                if slice_s <= 0:
                    raise TimeoutError(f"job {job_id} not finished within {timeout:g}s")
            try:
                return self.request(protocol.WAIT, {"job_id": job_id}, timeout=slice_s)
            except BrokerUnreachable:
                # The broker holds the wait open until the job ends, so silence is expected;
                # a ping tells a busy broker from a gone one, which we give time to come back.
                try:
                    self.request(protocol.PING, {}, timeout=min(self.timeout, slice_s + 1.0))
                    unreachable_since = None
                except BrokerUnreachable:
                    now = time.monotonic()
                    if unreachable_since is None:
                        unreachable_since = now
                        log.warning("broker at %s not answering; still waiting for job %s", self.endpoint, job_id)
                    elif now - unreachable_since > defaults.CLIENT_RECONNECT_PATIENCE:
                        raise

    def results(self, job_id: str) -> list[dict[str, Any]]:
        return self.request(protocol.RESULTS, {"job_id": job_id})

    def workers(self) -> list[dict[str, Any]]:
        return self.request(protocol.WORKERS, {})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request(protocol.CANCEL_JOB, {"job_id": job_id})

    def drain(self, worker_id: str) -> dict[str, Any]:
        """Ask a worker to finish its tasks, take no new ones and exit."""
        return self.request(protocol.DRAIN_WORKER, {"worker_id": worker_id})

    def balancer_stats(self) -> dict[str, Any]:
        """Placement counters: assignments per worker, steals, queue wait, utilisation, efficiency."""
        return self.request(protocol.BALANCER_STATS, {})

    def ping(self) -> dict[str, Any]:
        return self.request(protocol.PING, {})
