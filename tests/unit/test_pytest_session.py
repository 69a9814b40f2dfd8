"""The pytest-session executor's pure parts: rootdir mapping, the dtf_markers ini option, the
results row made from a test's reports, and the crash report pytest must be able to rebuild."""

from __future__ import annotations

import pytest
from _pytest.reports import TestReport

from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_plugins.pytest_session import crash_report
from dtf_plugins.pytest_session_process import _plugin_blocked
from dtf_plugins.pytest_session_runner import make_row, parse_marker_lines
from dtf_plugins.pytest_session_spec import SessionSpec, _map_arg, map_path, parse_rootdir_map

pytestmark = pytest.mark.unit

LOC = ("t.py", 1, "test_x")


def report(when: str, outcome: str, longrepr=None, **extra) -> TestReport:
    return TestReport("t.py::test_x", LOC, {}, outcome, longrepr, when, duration=0.5, **extra)


def test_rootdir_map_longest_prefix_wins_and_whole_components_only():
    pairs = parse_rootdir_map("/ci=/x; /ci/src=/home/me/src ;bad;=/nowhere")
    assert pairs == [("/ci/src", "/home/me/src"), ("/ci", "/x")]
    assert map_path("/ci/src", pairs) == "/home/me/src"
    assert map_path("/ci/src/tests/a.py", pairs) == "/home/me/src/tests/a.py"
    assert map_path("/ci/other", pairs) == "/x/other"
    assert map_path("/cix/src", pairs) == "/cix/src"  # a prefix of the text, not of the path
    assert parse_rootdir_map({"/a/": "/b/"}) == [("/a", "/b")]
    assert parse_rootdir_map(None) == []


def test_absolute_args_follow_the_map_and_relative_ones_stay():
    pairs = parse_rootdir_map("/ci/src=/w/src")
    assert _map_arg("/ci/src/tests", pairs) == "/w/src/tests"
    assert _map_arg("--confcutdir=/ci/src/sub", pairs) == "--confcutdir=/w/src/sub"
    assert _map_arg("tests/", pairs) == "tests/"
    assert _map_arg("-k", pairs) == "-k"


def test_spec_applies_capability_and_env_maps(monkeypatch):
    monkeypatch.setenv("DTF_ROOTDIR_MAP", "/ci=/env")
    params = {"session": "s", "rootdir": "/ci/src", "args": ["/ci/src/t"], "python": "/ci/src/.venv/bin/python"}
    spec = SessionSpec(TaskContext("t", 1, "w", params, None, {"rootdir_map": "/ci/src=/cap/src"}))
    assert (spec.rootdir, spec.args, spec.python) == ("/cap/src", ["/cap/src/t"], "/cap/src/.venv/bin/python")
    other = SessionSpec(TaskContext("t", 1, "w", {**params, "rootdir": "/ci/lib"}, None, {}))
    assert other.rootdir == "/env/lib"
    assert spec.key != other.key


@pytest.mark.parametrize(
    "params",
    [{"rootdir": "/x"}, {"session": "s"}, {"session": "s", "rootdir": "/x", "args": "-k x"}],
)
def test_spec_refuses_bad_params(params):
    with pytest.raises(TaskFailed, match="pytest-session: param"):
        SessionSpec(TaskContext("t", 1, "w", params, None, {}))


def test_plugin_blocked_in_either_spelling():
    assert _plugin_blocked(["-p", "no:cacheprovider"], "cacheprovider")
    assert _plugin_blocked(["-x", "-pno:cacheprovider"], "cacheprovider")
    assert not _plugin_blocked(["-p", "cacheprovider", "no:cacheprovider"], "cacheprovider")


def test_dtf_markers_lines():
    lines = ["gpu = hardware=cuda min_memory_gb=16", "", "# comment", "big: min_memory_gb=64.5, pool=fast", "bare"]
    assert parse_marker_lines(lines) == {
        "gpu": {"hardware": "cuda", "min_memory_gb": 16},
        "big": {"min_memory_gb": 64.5, "pool": "fast"},
        "bare": {},
    }


def test_rows_use_pytests_outcomes_and_the_deciding_phase():
    ok = report("setup", "passed")
    row = make_row("t.py::test_x", [ok, report("call", "passed"), report("teardown", "passed")])
    assert (row["outcome"], row["phase"], row["duration"]) == ("passed", "call", 1.5)

    row = make_row("n", [report("setup", "failed", "E  RuntimeError: no db")])
    assert (row["outcome"], row["phase"], row["message"]) == ("error", "setup", "E  RuntimeError: no db")

    row = make_row("n", [report("setup", "skipped", ("t.py", 3, "Skipped: later"))])
    assert (row["outcome"], row["phase"], row["message"]) == ("skipped", "setup", "Skipped: later")

    xfailed = report("call", "skipped", ("t.py", 3, "xfail"), wasxfail="known bug")
    assert make_row("n", [ok, xfailed])["outcome"] == "xfailed"
    assert make_row("n", [ok, xfailed])["message"] == "known bug"
    assert make_row("n", [ok, report("call", "passed", wasxfail="")])["outcome"] == "xpassed"
    strict = report("call", "failed", "[XPASS(strict)] flaky")
    assert make_row("n", [ok, strict])["outcome"] == "failed"

    torn = make_row("n", [ok, report("call", "passed"), report("teardown", "failed", "E  OSError: busy")])
    assert (torn["outcome"], torn["phase"], torn["details"]) == ("error", "teardown", "E  OSError: busy")
    long = make_row("n", [ok, report("call", "failed", "E  " + "x" * 50 + "tail")], details_chars=10)
    assert long["details"] == "xxxxxxtail"
    failed_then_torn = [ok, report("call", "failed", "E  assert 0"), report("teardown", "failed", "E  x")]
    assert make_row("n", failed_then_torn)["outcome"] == "failed"


def test_crash_report_is_a_report_pytest_rebuilds():
    data = crash_report("t.py::test_x", ["t.py", 1, "test_x"], "call", "session exited with code 3", "boom", 1.0)
    rebuilt = TestReport._from_json(data)
    assert rebuilt.failed and rebuilt.when == "call" and rebuilt.nodeid == "t.py::test_x"
    assert "worker crashed while running t.py::test_x" in rebuilt.longreprtext
    assert "boom" in rebuilt.longreprtext
