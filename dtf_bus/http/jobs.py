"""The API's view of jobs and their history: list, one job's report, compare, flaky, a test's history.

``GET /api/jobs`` lists runs with their commit, labels and progress (``POST`` submits one);
``GET /api/jobs/{id}`` is the broker's live status (counts, blocked tasks with the broker's
reasons, metadata) plus the run's report from DuckDB: failing tests with their tracebacks, tasks
that failed on their own, the slowest tests and the outcome matrix per hardware.
``/api/compare``, ``/api/flaky``, ``/api/tests/history`` and ``/api/benchmarks`` answer what
``dtf compare``, ``dtf flaky`` and ``dtf history`` answer, through the same functions
(:mod:`dtf_bus.analysis.requests`), read on the API's reader pool. Arguments a query cannot take
are 400s, a job or test the store does not hold a 404.
"""

from __future__ import annotations

import json
import time
import tomllib
from typing import Any

from dtf_bus import defaults, runmeta, spec
from dtf_bus.analysis import requests
from dtf_bus.http.handler import ApiError, Handler, parse_duration
from dtf_bus.store.archive import Refused


class HistoryQuery(Handler):
    """A handler answering one of :data:`dtf_bus.analysis.requests.QUERIES` from the store."""

    def labels(self) -> dict[str, str]:
        try:
            return runmeta.parse_labels(self.get_query_arguments("label"), "label")
        except runmeta.MetaError as exc:
            raise ApiError(400, str(exc)) from None

    def text(self, name: str) -> str | None:
        return self.get_query_argument(name, None) or None

    async def answer(self, what: str, args: dict[str, Any]) -> Any:
        try:
            read = requests.reader(what, {k: v for k, v in args.items() if v is not None})
        except requests.QueryError as exc:
            raise ApiError(400, str(exc)) from None
        store = self.monitor.store
        try:
            return await self.api.read(lambda: store.read(read))
        except Refused as exc:
            raise ApiError(404, str(exc)) from None


class JobsHandler(HistoryQuery):
    async def get(self) -> None:
        offset, limit = self.page(defaults.JOBS_LIMIT)
        args = {"labels": self.labels(), "branch": self.text("branch"), "commit": self.text("commit")}
        found = await self.answer("jobs", {**args, "limit": limit, "offset": offset})
        self.reply(found, limit=limit, offset=offset)

    async def post(self) -> None:
        doc = self.parse_body()
        if _depth(doc, defaults.MAX_NESTING_DEPTH) > defaults.MAX_NESTING_DEPTH:
            raise ApiError(400, f"request body nests deeper than {defaults.MAX_NESTING_DEPTH} levels")
        if isinstance(doc, list):
            doc = {"tasks": doc}
        if not isinstance(doc, dict) or "tasks" not in doc:
            raise ApiError(400, 'spec: expected {"name": ..., "tasks": [...]} or a list of tasks')
        name = doc.get("name", "api")
        if not isinstance(name, str):
            raise ApiError(400, "spec: 'name' must be a string")
        try:
            tasks = spec.validate(doc["tasks"])
        except spec.SpecError as exc:
            raise ApiError(400, f"invalid spec: {exc}") from None
        except RecursionError:
            raise ApiError(400, "invalid spec: nested too deeply") from None
        meta = self.submit_meta(doc)
        who = self.who
        job_id = await self.api.call(lambda client: client.submit(tasks, name=name, submitter=who, meta=meta))
        self.set_header("Location", f"/api/jobs/{job_id}")
        self.reply({"job_id": job_id, "total": len(tasks)}, status=201)

    @staticmethod
    def submit_meta(doc: dict[str, Any]) -> dict[str, Any] | None:
        """A posted spec's ``meta`` (as a SUBMIT carries it: commit, branch, dirty, commit_time,
        labels) and/or ``labels``, checked here so a bad one is a 400 before anything is sent."""
        meta = doc.get("meta")
        if meta is None and "labels" not in doc:
            return None
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "invalid metadata: meta: expected a table")
        meta = dict(meta or {})
        if "labels" in doc:
            meta["labels"] = doc["labels"]
        try:
            return runmeta.validate_meta(meta)
        except runmeta.MetaError as exc:
            raise ApiError(400, f"invalid metadata: {exc}") from None

    def parse_body(self) -> Any:
        """The body as JSON or TOML (its Content-Type says which; webauth refused any other).
        Deep nesting, bad UTF-8 and syntax errors are 400s, never 500s."""
        toml = (self.request.headers.get("Content-Type") or "").split(";")[0].strip().lower() == "application/toml"
        kind = "TOML" if toml else "JSON"
        try:
            text = self.request.body.decode("utf-8")
            return tomllib.loads(text) if toml else json.loads(text or "null")
        except UnicodeDecodeError:
            raise ApiError(400, f"request body is not valid {kind}: not UTF-8") from None
        except RecursionError:
            raise ApiError(400, f"request body is not valid {kind}: nested too deeply") from None
        except ValueError as exc:
            raise ApiError(400, f"request body is not valid {kind}: {str(exc)[:200]}") from None


def _depth(doc: Any, limit: int) -> int:
    """Nesting depth of a parsed body, counted without recursion and stopped past ``limit``."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


REPORT_KEYS = ("tests", "failing", "failing_total", "failed_tasks", "slowest", "matrix")


class JobHandler(HistoryQuery):
    async def get(self, job_id: str) -> None:
        status = await self.api.call(lambda client: client.status(job_id))
        try:
            report = await self.answer("job", {"job_id": job_id})
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            report = {}  # submitted a moment ago: not in the store yet
        data = {**status, **{k: report.get(k) for k in REPORT_KEYS}, "run": report.get("job")}
        self.reply(data, stored=bool(report))


class CompareHandler(HistoryQuery):
    async def get(self) -> None:
        args: dict[str, Any] = {
            "a": self.text("a"),
            "b": self.text("b"),
            "labels": self.labels(),
            "branch": self.text("branch"),
        }
        for name in ("slower_spreads", "slower_relative", "slower_absolute", "bench_spreads", "bench_relative"):
            args[name] = self.number(name, None, maximum=1e6)
        runs = self.number("runs", None, minimum=1, maximum=1000)
        args["runs"] = None if runs is None else int(runs)
        self.reply(await self.answer("compare", args))


class FlakyHandler(HistoryQuery):
    async def get(self) -> None:
        try:
            ago = parse_duration(self.get_query_argument("since", "30d"), "since")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        _, limit = self.page(100)
        since = max(time.time() - ago, 0.0)
        self.reply(await self.answer("flaky", {"since": since, "limit": limit}), since=since)


class TestHistoryHandler(HistoryQuery):
    async def get(self) -> None:
        _, limit = self.page(defaults.TEST_HISTORY_LIMIT)
        self.reply(await self.answer("history", {"nodeid": self.text("nodeid"), "limit": limit}))


class BenchmarksHandler(HistoryQuery):
    async def get(self) -> None:
        jobs = self.number("jobs", 50, minimum=1, maximum=1000)
        self.reply(await self.answer("benchmarks", {"benchmark": self.text("benchmark"), "jobs": int(jobs or 50)}))


ROUTES: list[tuple[str, type]] = [
    ("/api/jobs", JobsHandler),
    ("/api/jobs/([^/]+)", JobHandler),
    ("/api/compare", CompareHandler),
    ("/api/flaky", FlakyHandler),
    ("/api/tests/history", TestHistoryHandler),
    ("/api/benchmarks", BenchmarksHandler),
]
