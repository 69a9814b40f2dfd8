"""The `dtf` command's pure pieces: when a wait reports blocked tasks, what `--json` and the
exports say (cancelled apart from failed, attempts that ran, ISO timestamps, JUnit totals),
and which endpoints are usage errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dtf_bus import config
from dtf_bus.cli import jobs, results, up, watch
from dtf_bus.pytest_dist import junit

pytestmark = pytest.mark.unit

CUDA = {"tasks": ["t[0]", "t[1]"], "reasons": ["no live worker has hardware cuda"]}
SHEL = {"tasks": ["s"], "reasons": ["no live worker has plugin 'shel'"]}
DEPS = {"tasks": ["after"], "reasons": ["waiting for dependencies: t[0]"]}


def test_blocked_reasons_reported_once_they_persist_then_on_change():
    reporter = watch.BlockedReporter(after=5.0)
    assert reporter.update([CUDA], 100.0) is None
    assert reporter.update([CUDA], 104.9) is None  # not yet 5 s
    assert reporter.update([CUDA], 105.0) == [CUDA]
    assert reporter.update([CUDA], 106.0) is None  # said once, not every poll
    assert reporter.update([CUDA], 200.0) is None
    assert reporter.update([CUDA, SHEL], 201.0) == [CUDA, SHEL]  # a change is news at once
    assert reporter.update([SHEL], 202.0) == [SHEL]


def test_blocked_clock_restarts_when_the_reasons_clear():
    reporter = watch.BlockedReporter(after=5.0)
    assert reporter.update([CUDA], 0.0) is None
    assert reporter.update([], 4.0) is None  # placed after all
    assert reporter.update([CUDA], 6.0) is None  # blocked again: a fresh 5 s
    assert reporter.update([CUDA], 11.0) == [CUDA]


def test_dependency_waits_alone_are_not_reported():
    reporter = watch.BlockedReporter(after=5.0)
    assert reporter.update([DEPS], 0.0) is None
    assert reporter.update([DEPS], 60.0) is None
    assert reporter.update([DEPS, CUDA], 61.0) is None
    assert reporter.update([DEPS, CUDA], 66.0) == [CUDA]


def test_summary_counts_cancelled_apart_from_failed():
    status = {
        "job_id": "j",
        "name": "n",
        "total": 6,
        "succeeded": 1,
        "failed": 5,  # what the broker says: failed + timed_out + cancelled
        "done": True,
        "counts": {"succeeded": 1, "failed": 1, "timed_out": 1, "cancelled": 3},
        "blocked": [],
    }
    summary = jobs.summary(status)
    assert (summary["failed"], summary["cancelled"]) == (2, 3)


def test_attempts_count_what_was_handed_to_a_worker():
    assert results.attempts_made({"attempts": 1, "history": []}) == 0  # queued, never assigned
    two = [{"attempt": 1, "worker_id": "a"}, {"attempt": 2, "worker_id": "b"}]
    assert results.attempts_made({"attempts": 3, "history": two}) == 2  # requeued, not yet reassigned
    assert results.attempts_made({"attempts": 2}) == 2  # no history (served from the store): as given


def test_csv_timestamps_are_iso_8601():
    assert results.iso_time(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert results.iso_time(1700000000.25) == "2023-11-14T22:13:20.250+00:00"
    assert results.iso_time(None) == ""


def test_junit_does_not_call_unfinished_tasks_skipped():
    tasks = [
        {"task_id": "j.0", "name": "ok", "plugin": "sim", "state": "succeeded", "worker_id": "w"},
        {"task_id": "j.1", "name": "waiting", "plugin": "sim", "state": "queued"},
        {"task_id": "j.2", "name": "busy", "plugin": "pytest", "state": "running", "worker_id": "w"},
        {"task_id": "j.3", "name": "dropped", "plugin": "sim", "state": "cancelled", "error": "job cancelled"},
    ]
    root = ET.fromstring(junit.to_xml("job", tasks))
    assert (root.get("tests"), root.get("errors"), root.get("skipped"), root.get("failures")) == ("4", "2", "1", "0")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["waiting"].find("error").get("message") == "not run: queued"
    assert cases["busy"].find("error").get("message") == "not run: running"
    assert cases["dropped"].find("skipped") is not None
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert (suites["waiting"].get("errors"), suites["waiting"].get("skipped")) == ("1", "0")


@pytest.mark.parametrize("value", ["127.0.0.1:5555", "localhost", "tcp://", "http//x:1", "htp://127.0.0.1:1"])
def test_endpoint_without_a_transport_is_a_config_error(value):
    with pytest.raises(config.ConfigError) as error:
        config.endpoint(value)
    assert "\n" not in str(error.value) and value in str(error.value)


def test_endpoint_hint_and_accepted_forms():
    with pytest.raises(config.ConfigError, match=r"did you mean tcp://127\.0\.0\.1:5555\?"):
        config.endpoint("127.0.0.1:5555")
    for ok in ("tcp://127.0.0.1:5555", "ipc:///tmp/dtf.sock", "tcp://*:0"):
        assert config.endpoint(ok) == ok


def test_up_binds_dtf_broker_when_it_is_tcp(monkeypatch):
    monkeypatch.setenv("DTF_BROKER", "tcp://127.0.0.1:7100")
    assert up.up_endpoints(None, None) == ("tcp://127.0.0.1:7100", "tcp://127.0.0.1:7101")
    assert up.up_endpoints("tcp://127.0.0.1:0", None) == ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    assert up.up_endpoints(None, "tcp://127.0.0.1:9") == ("tcp://127.0.0.1:7100", "tcp://127.0.0.1:9")
    monkeypatch.setenv("DTF_BROKER", "ipc:///tmp/x")  # not something `up` can bind next to a port
    assert up.up_endpoints(None, None) == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    monkeypatch.setenv("DTF_BROKER", "127.0.0.1:7100")
    with pytest.raises(config.ConfigError, match=r"\$DTF_BROKER"):
        up.up_endpoints(None, None)
    monkeypatch.delenv("DTF_BROKER")
    assert up.up_endpoints(None, None) == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
