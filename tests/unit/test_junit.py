"""JUnit XML both ways, on pytest's real report format (captured as text)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dtf_bus.pytest_dist import junit

pytestmark = pytest.mark.unit

# What pytest 9 writes with -o junit_family=xunit1 for a small mixed module.
REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
errors="1" failures="1" skipped="2" tests="6" time="0.039" hostname="vm">
<testcase classname="sub.test_a" name="test_ok" file="sub/test_a.py" line="1" time="0.002" />
<testcase classname="sub.test_a" name="test_bad" file="sub/test_a.py" line="2" time="0.001"><failure
message="AssertionError: nope&#10;assert 1 == 2">E   AssertionError: nope
sub/test_a.py:3: AssertionError</failure></testcase>
<testcase classname="sub.test_a" name="test_skip" file="sub/test_a.py" line="3" time="0.000"><skipped
type="pytest.skip" message="later">sub/test_a.py:4: later</skipped></testcase>
<testcase classname="sub.test_a" name="test_err" file="sub/test_a.py" line="7" time="0.000"><error
message="failed on setup with &quot;RuntimeError: fixture broke&quot;">E   RuntimeError: fixture broke
</error></testcase>
<testcase classname="sub.test_a.TestK" name="test_p[1.5]" file="sub/test_a.py" line="9" time="0.000" />
<testcase classname="sub.test_a.TestK" name="test_xf" file="sub/test_a.py" line="11" time="0.000"><skipped
type="pytest.xfail" message="" /></testcase>
</testsuite></testsuites>"""


def test_parse_pytest_report():
    records = junit.parse_report(REPORT)
    assert [(r["nodeid"], r["outcome"]) for r in records] == [
        ("sub/test_a.py::test_ok", "passed"),
        ("sub/test_a.py::test_bad", "failed"),
        ("sub/test_a.py::test_skip", "skipped"),
        ("sub/test_a.py::test_err", "error"),
        ("sub/test_a.py::TestK::test_p[1.5]", "passed"),
        ("sub/test_a.py::TestK::test_xf", "skipped"),
    ]
    bad = records[1]
    assert bad["message"].startswith("AssertionError: nope") and "sub/test_a.py:3" in bad["details"]
    assert records[0]["duration"] == 0.002 and records[0]["details"] is None
    assert records[5]["message"] == "xfail"
    assert junit.counts(records) == {"passed": 2, "failed": 1, "skipped": 2, "error": 1}


def test_nodeid_without_file_attribute(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_m.py").write_text("")
    # Where the module ends and a (lower-case) class begins is read off the files.
    nodeid = junit.nodeid_of("tests.test_m.describe_x", "test_y", rootdir=tmp_path)
    assert nodeid == "tests/test_m.py::describe_x::test_y"
    # Without the files, CamelCase parts are taken to be classes.
    assert junit.nodeid_of("a.test_b.TestC", "test_d") == "a/test_b.py::TestC::test_d"
    assert junit.nodeid_of("", "test_broken", file="test_broken.py") == "test_broken.py"


@pytest.mark.parametrize(
    "nodeid",
    ["test_a.py::test_x", "sub/test_a.py::TestK::test_p[1.5]", "a/b/test_c.py::TestD::TestE::test_f[x::y]"],
)
def test_split_nodeid_round_trips(nodeid):
    classname, name = junit.split_nodeid(nodeid)
    assert junit.nodeid_of(classname, name) == nodeid


def test_summary_line_reads_like_pytest():
    tally = junit.counts([{"outcome": o} for o in ["passed"] * 5 + ["failed"] + ["skipped"] + ["error"] * 2])
    assert junit.summary_line(tally, 3.2) == "1 failed, 5 passed, 1 skipped, 2 errors in 3.20s"
    assert junit.summary_line(junit.counts([])) == "no tests ran"


def test_job_to_xml_covers_pytest_and_other_tasks():
    tasks = [
        {
            "task_id": "j.0",
            "name": "sub/test_a.py",
            "plugin": "pytest",
            "state": "failed",
            "worker_id": "w1",
            "result": {"tests": junit.parse_report(REPORT)},
        },
        {
            "task_id": "j.1",
            "name": "test_b.py",
            "plugin": "pytest",
            "state": "timed_out",
            "worker_id": "w2",
            "error": "timed out after 5.0s",
            "started_at": 10.0,
            "ended_at": 15.0,
            "result": {"tests": []},
        },
        {"task_id": "j.2", "name": "bench", "plugin": "shell", "state": "succeeded", "worker_id": "w2"},
    ]
    root = ET.fromstring(junit.to_xml("nightly", tasks))
    assert root.tag == "testsuites" and root.get("name") == "nightly"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("8", "1", "2", "2")
    suites = root.findall("testsuite")
    assert [(s.get("name"), s.get("hostname")) for s in suites] == [
        ("sub/test_a.py", "w1"),
        ("test_b.py", "w2"),
        ("bench", "w2"),
    ]
    first = suites[0].findall("testcase")
    assert (first[4].get("classname"), first[4].get("name")) == ("sub.test_a.TestK", "test_p[1.5]")
    assert first[1].find("failure").get("message").startswith("AssertionError")
    assert first[0].find("properties/property").get("value") == "w1"
    timed_out = suites[1].find("testcase")
    assert timed_out.find("error").get("message") == "timed out after 5.0s" and timed_out.get("time") == "5.000"
    assert suites[2].find("testcase").get("classname") == "dtf.shell"
