"""JUnit XML both ways: read the report pytest writes on a worker, write one for a whole job.

The ``pytest`` executor turns pytest's ``--junitxml`` report into per-test records (nodeid,
outcome, duration, message); ``dtf pytest --junitxml`` and ``dtf results JOB --format junit``
turn a job's task results back into one JUnit file that CI systems read. Tasks of other
plugins (sim, shell, benchmarks) appear as one test case each, so any job has a JUnit view.

Outcomes are pytest's words: ``passed``, ``failed``, ``skipped`` (xfail included) and
``error`` (setup/teardown or collection errors).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from dtf_bus import defaults

OUTCOMES = ("passed", "failed", "skipped", "error")
# pytest's summary order: failures first, errors last.
SUMMARY_ORDER = ("failed", "passed", "skipped", "error")


def parse_report(xml_text: str, rootdir: str | Path | None = None) -> list[dict[str, Any]]:
    """pytest's JUnit report as records ``{nodeid, outcome, duration, message, details}``."""
    root = ET.fromstring(xml_text)
    records = []
    for case in root.iter("testcase"):
        outcome, message, details = "passed", None, None
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = child.get("message")
                if not message and child.text and child.text.strip():
                    message = child.text.strip().splitlines()[-1]
                if not message and child.get("type") == "pytest.xfail":
                    message = "xfail"
                details = child.text
                break
        try:
            duration = float(case.get("time") or 0.0)
        except ValueError:
            duration = 0.0
        records.append(
            {
                "nodeid": nodeid_of(case.get("classname") or "", case.get("name") or "", case.get("file"), rootdir),
                "outcome": outcome,
                "duration": round(duration, 6),
                "message": _clip(message, 500),
                "details": _clip(details, defaults.TEST_DETAILS_CHARS, tail=True) if outcome != "passed" else None,
            }
        )
    return records


def _clip(text: str | None, limit: int, tail: bool = False) -> str | None:
    if not text:
        return None
    text = text.strip()
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if tail else text[:limit] + "..."


def nodeid_of(classname: str, name: str, file: str | None = None, rootdir: str | Path | None = None) -> str:
    """Rebuild a pytest node id from JUnit's ``classname`` and ``name``.

    pytest writes ``classname`` as the node id's path with ``/`` turned into ``.`` and
    ``.py`` dropped, followed by any class names; so ``a/test_b.py::TestC::test_d`` becomes
    ``a.test_b.TestC`` + ``test_d``. Which dots were slashes is decided by the ``file``
    attribute (xunit1) when it matches, else by which module file exists under ``rootdir``,
    else every dot but the class-looking parts is taken as a slash.
    """
    parts = [p for p in classname.split(".") if p] if classname else []
    if not parts:  # a collection error: the module itself is the "test"
        parts, name = name.split("."), ""
    if file and file.endswith(".py"):
        path = file.replace("\\", "/")
        module = path[:-3].replace("/", ".")
        if classname == module:
            return _join(path, [], name)
        if classname.startswith(module + "."):
            return _join(path, classname[len(module) + 1 :].split("."), name)
    split = None
    if rootdir is not None:
        base = Path(rootdir)
        for i in range(len(parts), 0, -1):
            if base.joinpath(*parts[: i - 1], parts[i - 1] + ".py").is_file():
                split = i
                break
    if split is None:
        # Classes are CamelCase by convention; module path parts usually are not.
        split = len(parts)
        while split > 1 and parts[split - 1][:1].isupper():
            split -= 1
    return _join("/".join(parts[:split]) + ".py", parts[split:], name)


def _join(path: str, classes: list[str], name: str) -> str:
    return "::".join([path, *classes, *([name] if name else [])])


def split_nodeid(nodeid: str) -> tuple[str, str]:
    """A node id as JUnit's ``(classname, name)``, the way pytest writes them."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    if len(names) == 1:
        return "", names[0]
    return ".".join(names[:-1]), names[-1]


# --------------------------------------------------------------------- from jobs

_TASK_OUTCOME = {"succeeded": "passed", "failed": "failed", "timed_out": "error", "cancelled": "skipped"}
# A task exported before it ended did not run to an outcome; "skipped" would tell CI that it was
# meant not to run. It is an error saying so, so a report taken too early can never look green.
NOT_RUN_STATES = ("queued", "assigned", "running")


def task_records(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One task of ``dtf results`` as test records, each with ``worker_id`` and ``task``.

    A pytest task contributes its tests. A pytest task that ended without a report (timed
    out, crashed, pytest unusable on that worker) and any non-pytest task contribute one
    record named after the task, so nothing that went wrong is silently dropped.
    """
    result = task.get("result") if isinstance(task.get("result"), dict) else {}
    tests = result.get("tests") if isinstance(result.get("tests"), list) else []
    base = {"worker_id": task.get("worker_id"), "task": task.get("name")}
    if tests:
        return [{**r, **base} for r in tests if isinstance(r, dict) and r.get("nodeid")]
    state = task.get("state", "")
    if state in NOT_RUN_STATES or state not in _TASK_OUTCOME:
        return [_not_run(task, state or "unknown", base)]
    outcome = _TASK_OUTCOME[state]
    if task.get("plugin") == "pytest" and state in ("succeeded",):
        return []  # ran and selected no test (pytest exit 5): nothing to report
    if task.get("plugin") == "pytest" and outcome == "failed":
        outcome = "error"  # the task failed without a report: pytest itself could not run
    message = task.get("error") or (None if outcome == "passed" else f"task {state or 'not finished'}")
    duration = 0.0
    if task.get("started_at") and task.get("ended_at"):
        duration = round(task["ended_at"] - task["started_at"], 6)
    return [
        {
            "nodeid": task.get("name") or task.get("task_id", "?"),
            "outcome": outcome,
            "duration": duration,
            "message": _clip(message, 500),
            "details": _clip(task.get("error"), defaults.TEST_DETAILS_CHARS, tail=True),
            "plugin": task.get("plugin"),
            **base,
        }
    ]


def _not_run(task: dict[str, Any], state: str, base: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeid": task.get("name") or task.get("task_id", "?"),
        "outcome": "error",
        "duration": 0.0,
        "message": f"not run: {state}",
        "details": None,
        "plugin": task.get("plugin"),
        **base,
    }


def counts(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["outcome"] for r in records)


def summary_line(tally: Counter[str], seconds: float | None = None) -> str:
    """pytest's closing words: ``2 failed, 5 passed, 1 skipped, 1 error in 3.20s``."""
    parts = []
    for outcome in SUMMARY_ORDER:
        n = tally.get(outcome, 0)
        if n:
            word = "errors" if outcome == "error" and n != 1 else outcome
            parts.append(f"{n} {word}")
    text = ", ".join(parts) or "no tests ran"
    return f"{text} in {seconds:.2f}s" if seconds is not None else text


def to_xml(name: str, tasks: list[dict[str, Any]]) -> str:
    """One JUnit document for a job: a ``<testsuite>`` per task, hostname = its worker."""
    suites = ET.Element("testsuites", name=name)
    grand: Counter[str] = Counter()
    total_time = 0.0
    for task in tasks:
        records = task_records(task)
        if not records:
            continue
        tally = counts(records)
        grand.update(tally)
        seconds = sum(r.get("duration") or 0.0 for r in records)
        total_time += seconds
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=str(task.get("name") or task.get("task_id")),
            tests=str(len(records)),
            failures=str(tally["failed"]),
            errors=str(tally["error"]),
            skipped=str(tally["skipped"]),
            time=f"{seconds:.3f}",
            hostname=str(task.get("worker_id") or ""),
        )
        for record in records:
            if record.get("plugin") and record.get("plugin") != "pytest":
                classname, case_name = f"dtf.{record['plugin']}", record["nodeid"]
            else:
                classname, case_name = split_nodeid(record["nodeid"])
            case = ET.SubElement(
                suite, "testcase", classname=classname, name=case_name, time=f"{record.get('duration') or 0.0:.3f}"
            )
            tag = {"failed": "failure", "error": "error", "skipped": "skipped"}.get(record["outcome"])
            if tag:
                child = ET.SubElement(case, tag, message=record.get("message") or "")
                if record.get("details"):
                    child.text = record["details"]
            if record.get("worker_id"):
                props = ET.SubElement(case, "properties")
                ET.SubElement(props, "property", name="worker", value=str(record["worker_id"]))
    suites.set("tests", str(sum(grand.values())))
    suites.set("failures", str(grand["failed"]))
    suites.set("errors", str(grand["error"]))
    suites.set("skipped", str(grand["skipped"]))
    suites.set("time", f"{total_time:.3f}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
