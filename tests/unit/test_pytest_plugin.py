"""The pytest --dtf controller against a fake fleet (no sockets): what it submits, how it replays
reports, and what -x, reruns, an unplaceable test and a differing collection do.

The inner pytest runs in this process (pytester), so ``dtf_bus.client.Client`` is replaced by
:class:`FakeClient`, whose tasks finish at the next ``follow`` with reports built like a worker
session's (``TestReport._to_json``, what ``pytest_report_to_serializable`` returns).
"""

from __future__ import annotations

from typing import Any

import pytest

from dtf_bus import client as client_module

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]


def _report(nodeid: str, when: str, outcome: str, longrepr: Any = None) -> dict[str, Any]:
    path, _, name = nodeid.partition("::")
    data = pytest.TestReport(nodeid, (path, 0, name), {}, outcome, longrepr, when)._to_json()
    return {**data, "$report_type": "TestReport"}  # as pytest_report_to_serializable adds it


class Fleet:
    """The broker and workers as the controller sees them through its client."""

    def __init__(self, nodeids: list[str], outcomes: dict[str, list[str]] | None = None) -> None:
        self.items = [
            {"nodeid": n, "location": [n.split("::")[0], 0, n.split("::")[1]], "requires": {}, "group": None}
            for n in nodeids
        ]
        self.outcomes = outcomes or {}
        self.blocked: dict[str, list[str]] = {}  # nodeid -> reasons no worker can take its task
        self.run_digest = "d1"
        self.submitted: list[dict[str, Any]] = []
        self.queue: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.history: dict[str, Any] = {"last_failed": [], "durations": {}}

    def finish(self, task: dict[str, Any]) -> dict[str, Any]:
        params = task["params"]
        if params["mode"] == "collect":
            result = {"collected": {"count": len(self.items), "digest": "d1", "items": self.items}, "reports": []}
            return {"name": task["name"], "state": "succeeded", "worker_id": "w1", "result": result, "error": None}
        reports = []
        for nodeid in params["nodeids"]:
            queued = self.outcomes.get(nodeid) or ["passed"]
            outcome = queued.pop(0) if len(queued) > 1 else queued[0]
            where = {"nodeid": nodeid, "location": [nodeid.split("::")[0], 0, nodeid.split("::")[1]]}
            reports += [
                {"kind": "start", "data": where},
                {"kind": "test", "data": _report(nodeid, "setup", "passed")},
                {
                    "kind": "test",
                    "data": _report(nodeid, "call", outcome, "AssertionError: boom" if outcome == "failed" else None),
                },
                {"kind": "test", "data": _report(nodeid, "teardown", "passed")},
                {"kind": "finish", "data": where},
            ]
        result = {"collected": {"count": len(self.items), "digest": self.run_digest}, "reports": reports}
        return {"name": task["name"], "state": "succeeded", "worker_id": "w2", "result": result, "error": None}


class FakeClient:
    fleet: Fleet

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0, curve: Any = None) -> None:
        self.endpoint = endpoint or "tcp://fake:5555"
        self.timeout = timeout

    def workers(self) -> list[dict[str, Any]]:
        return [{"worker_id": "w1", "state": "idle", "slots": 2, "plugins": ["pytest-session"]}]

    def test_history(self, rootdir: str) -> dict[str, Any]:
        return self.fleet.history

    def submit(
        self,
        tasks: list[dict[str, Any]],
        name: str = "job",
        job_id: str | None = None,
        keep_open: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> str:
        assert keep_open
        assert job_id is None or meta is None, "a run's metadata goes with its first submit only"
        self.fleet.submitted += tasks
        self.fleet.queue += tasks
        return "job1"

    def follow(
        self, job_id: str, since: int = 0, wait: float = 1.0, status: bool = False, progress_since: int | None = None
    ) -> dict[str, Any]:
        stuck = [t for t in self.fleet.queue if set(t["params"].get("nodeids", [])) & set(self.fleet.blocked)]
        done = [self.fleet.finish(t) for t in self.fleet.queue if t not in stuck]
        self.fleet.queue = stuck
        reply: dict[str, Any] = {"tasks": done, "next": since + len(done), "done": False}
        if status:
            reply["blocked"] = [
                {"tasks": [t["name"]], "reasons": self.fleet.blocked[t["params"]["nodeids"][0]]} for t in stuck
            ]
            reply["unplaceable"] = [f"job1.{i}" for i, _ in enumerate(stuck)]
        return reply

    def close_job(self, job_id: str) -> dict[str, Any]:
        self.fleet.calls.append("close")
        return {"job_id": job_id, "done": False}

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.fleet.calls.append("cancel")
        self.fleet.queue = []
        return {"job_id": job_id, "cancelled": 0}

    def close(self) -> None:
        pass


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(nodeids: list[str], outcomes: dict[str, list[str]] | None = None) -> Fleet:
        FakeClient.fleet = Fleet(nodeids, outcomes)
        monkeypatch.setattr(client_module, "Client", FakeClient)
        return FakeClient.fleet

    return make


IDS = ["test_a.py::test_1", "test_a.py::test_2", "test_b.py::test_3"]


def test_without_dtf_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a client was made without --dtf")

    monkeypatch.setattr(client_module, "Client", refuse)
    pytester.makepyfile("import pytest\n@pytest.mark.dtf(requires={'hardware': 'cuda'})\ndef test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("--strict-markers")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    assert pytester.runpytest_inprocess("--markers").stdout.fnmatch_lines(["@pytest.mark.dtf(requires=*"]) is None


def test_without_dtf_the_entry_point_imports_no_dtf_module_beyond_defaults(pytester: pytest.Pytester):
    """The plugin loads in every pytest run (pytest11): a run without --dtf must not pay for the
    controller, the client, zmq or CURVE. A fresh interpreter, since this one has them all."""
    pytester.makepyfile(
        "import sys\n"
        "def test_loaded():\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dtf_bus', 'zmq', 'msgpack'))\n"
        "    assert loaded == ['dtf_bus', 'dtf_bus.defaults', 'dtf_bus.pytest_dist', 'dtf_bus.pytest_dist.plugin']\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_reports_are_replayed_and_args_sent_without_controller_options(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS, {"test_b.py::test_3": ["failed"]})
    result = pytester.runpytest_inprocess(
        "--dtf", "tests/", "-rA", "--junitxml=out.xml", "-k", "test", "--dtf-dist=loadfile"
    )
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["test_a.py ..*", "test_b.py F*", "*AssertionError: boom*", "dtf: job job1: 4 task(s) on w1, w2"]
    )
    collect, warm, *runs = f.submitted  # the fleet has 2 session slots: both collect at start
    assert collect["params"]["mode"] == "collect" and collect["params"]["args"] == ["-k", "test", "tests"]
    assert warm["params"]["mode"] == "collect" and warm["name"] == "collect 1"
    assert [r["params"]["nodeids"] for r in runs] == [IDS[:2], IDS[2:]]
    assert all(r["plugin"] == "pytest-session" and r["retries"] == 0 for r in runs)
    assert len({t["params"]["session"] for t in f.submitted}) == 1
    assert f.calls == ["close"]  # closed once everything was submitted (no reruns)
    assert (pytester.path / "out.xml").read_text().count("<testcase") == 3


def test_exitfirst_cancels_the_job(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS, {"test_a.py::test_1": ["failed"]})
    result = pytester.runpytest_inprocess("--dtf", "-x", "--dtf-dist=loadfile")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    result.assert_outcomes(failed=1)
    assert f.calls == ["close", "cancel"]  # closed once all was submitted, cancelled at the failure


def test_a_failed_test_is_rerun_as_its_own_task(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS, {"test_a.py::test_2": ["failed", "passed"]})
    result = pytester.runpytest_inprocess("--dtf", "--dtf-reruns=2")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*3 passed, 1 rerun*"])
    reruns = [t for t in f.submitted if t["params"].get("rerun")]
    assert [t["params"]["nodeids"] for t in reruns] == [["test_a.py::test_2"]]


def test_an_unplaceable_test_is_an_error_with_the_brokers_reason(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS)
    f.blocked["test_b.py::test_3"] = ["requires.hardware=tpu: no live worker has it (fleet has: cpu)"]
    result = pytester.runpytest_inprocess("--dtf", "--dtf-dist=loadfile", "-ra")
    assert result.ret == 1
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["ERROR test_b.py::test_3 - dtf: no live worker can run this test: requires.h*"])
    assert "cancel" in f.calls  # what stays queued is withdrawn


def test_differing_collections_fail_the_run_with_a_diff(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS)
    f.run_digest = "d2"
    result = pytester.runpytest_inprocess("--dtf")
    assert result.ret == 1
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*dtf: sessions collected different tests*", "w2 collected 3 tests (digest d2), w1 collected 3*"]
    )


def test_last_failed_comes_from_the_fleets_history(pytester: pytest.Pytester, fleet: Any):
    f = fleet(IDS)
    f.history = {"last_failed": ["test_b.py::test_3"], "durations": {"test_a.py::test_1": 0.1}}
    result = pytester.runpytest_inprocess("--dtf", "--lf")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure"])
    assert [t["params"].get("nodeids") for t in f.submitted[2:]] == [["test_b.py::test_3"]]


def test_bad_options_are_usage_errors(pytester: pytest.Pytester, fleet: Any):
    fleet(IDS)
    result = pytester.runpytest_inprocess("--dtf", "--dtf-requires", "cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dtf-requires 'cuda': expected KEY=VALUE"])


def test_a_warm_collection_that_differs_names_the_tests(pytester: pytest.Pytester, fleet: Any):
    """Every session slot collects at start; one that finds other tests says which (as xdist)."""
    f = fleet(IDS)
    finish = f.finish

    def differing(task: dict[str, Any]) -> dict[str, Any]:
        done = finish(task)
        if task["name"] == "collect 1":
            items = [*f.items[:2], {"nodeid": "test_c.py::test_9", "location": ["test_c.py", 0, "test_9"]}]
            done = {**done, "worker_id": "w2", "result": {"collected": {"count": 3, "digest": "d9", "items": items}}}
        return done

    f.finish = differing
    result = pytester.runpytest_inprocess("--dtf")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*w2 collected 3 tests (digest d9)*; missing there: test_b.py::test_3; only on w2: test_c.py::test_9*"]
    )
