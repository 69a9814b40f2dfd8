"""One outcome per test per run, from the rows a run left in ``test_results``.

A run can hold several rows for one test: a task retried after a failure keeps rows per attempt,
and ``--dtf-reruns`` runs a failed test again as a task of its own (stored ``flaky`` when it then
passes). The run's verdict on the test is its last row, except that a rerun that passed makes it
``flaky``: it failed, then passed, and a test lead wants to see both facts, not "passed".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FAILING = frozenset({"failed", "error"})
# Outcomes that mean the test did what it should (an xfail failing as expected included).
PASSING = frozenset({"passed", "flaky", "xfailed", "xpassed"})

Row = dict[str, Any]


def final_outcomes(rows: Iterable[Row]) -> dict[str, Row]:
    """nodeid -> the row that decides the run's outcome (see the module doc). Rows need
    ``nodeid``, ``outcome`` and ``recorded_at``; ties in time keep the later attempt."""
    final: dict[str, Row] = {}
    flaky: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: (r.get("recorded_at") or 0.0, r.get("attempt") or 0)):
        final[row["nodeid"]] = row
        if row.get("outcome") == "flaky":
            flaky[row["nodeid"]] = row
    final.update(flaky)
    return final


def is_failing(outcome: str | None) -> bool:
    return outcome in FAILING


def is_passing(outcome: str | None) -> bool:
    return outcome in PASSING
