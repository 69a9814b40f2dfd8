"""Flaky tests: both outcomes on the same code, or a pass only on rerun.

"The same code" is a commit of a clean checkout. A dirty checkout's run is code of its own (the
edits may be the difference), and so is a run without git metadata: such runs are grouped by job,
where a test can still show both outcomes (a retried task, a ``--dtf-reruns`` rerun). A test
that failed on one commit and passed on the next is not flaky: the commit may have fixed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dtf_bus.analysis.outcomes import Row, is_failing, is_passing


def code_key(row: Row) -> str:
    """What ran: the commit of a clean checkout, else the job (dirty or unknown code)."""
    commit = row.get("commit")
    if commit and row.get("dirty") is False:
        return f"commit:{commit}"
    return f"job:{row.get('job_id')}"


def find_flaky(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Flaky tests among ``rows`` (``nodeid``, ``outcome``, ``job_id``, ``commit``, ``dirty``,
    ``recorded_at``), most evidence first: counts of runs, passes, failures and passes on rerun,
    the commits (or jobs) with both outcomes, when last seen and how it ended then."""
    tests: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.get("recorded_at") or 0.0):
        test = tests.setdefault(
            row["nodeid"],
            {"runs": 0, "passed": 0, "failed": 0, "passed_on_rerun": 0, "codes": {}, "last": row},
        )
        outcome = row.get("outcome")
        test["runs"] += 1
        test["last"] = row
        seen = test["codes"].setdefault(code_key(row), set())
        if outcome == "flaky":
            test["passed_on_rerun"] += 1
            seen.update(("pass", "fail"))  # it failed before its rerun passed
        elif is_passing(outcome):
            test["passed"] += 1
            seen.add("pass")
        elif is_failing(outcome):
            test["failed"] += 1
            seen.add("fail")
    found = []
    for nodeid, test in tests.items():
        mixed = sorted(code for code, seen in test["codes"].items() if len(seen) == 2)
        if not mixed and not test["passed_on_rerun"]:
            continue
        last = test["last"]
        found.append(
            {
                "nodeid": nodeid,
                "runs": test["runs"],
                "passed": test["passed"],
                "failed": test["failed"],
                "passed_on_rerun": test["passed_on_rerun"],
                "mixed": len(mixed),
                "commits": [c.split(":", 1)[1] for c in mixed if c.startswith("commit:")][:10],
                "last_seen": last.get("recorded_at"),
                "last_outcome": last.get("outcome"),
                "failure_rate": test["failed"] / test["runs"] if test["runs"] else 0.0,
            }
        )
    found.sort(key=lambda t: (-(t["mixed"] + t["passed_on_rerun"]), -(t["last_seen"] or 0.0), t["nodeid"]))
    return found
