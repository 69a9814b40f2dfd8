"""The Flaky & slow page: tests that both passed and failed on the same code (or passed only on
rerun), and the tests that got slower in the latest run than their history allows.

Reads ``/api/flaky`` (the last 30 days) and ``/api/compare`` of the newest job with test results
against the run before it with the same labels and branch (the rule is ``dtf compare``'s:
docs/history.md).
"""

from __future__ import annotations

from typing import Any

from bokeh.models import Div

from . import api
from .pages import BOX, Page, esc, labels_text, outcome, run_label, section, table, when

SINCE = "30d"
LATEST = 20  # the newest run with test results among this many jobs is "the latest run"


def render(flaky: list[dict[str, Any]] | None, latest: dict[str, Any] | None, compared: dict[str, Any] | None,
           errors: list[str]) -> str:  # fmt: skip
    """The page's HTML (pure: unit-tested)."""
    parts = []
    if flaky is not None:
        rows = [
            (
                f"<code>{esc(t['nodeid'])}</code>",
                str(t["runs"]),
                str(t["passed"]),
                str(t["failed"]),
                str(t["passed_on_rerun"]),
                str(t["mixed"]),
                esc(when(t.get("last_seen"))),
                outcome(t.get("last_outcome")),
            )
            for t in flaky
        ]
        body = (
            table(
                ("test", "runs", "passed", "failed", "passed on rerun", "mixed commits", "last seen", "last"),
                rows,
                [f'data-flaky="{esc(t["nodeid"])}"' for t in flaky],
            )
            if rows
            else "none in the last 30 days"
        )
        parts.append(section("Flaky tests", body, "flaky_tests", len(rows)))
    if latest is not None and compared is not None:
        slower = compared.get("slower") or []
        rows = [
            (
                f"<code>{esc(s['nodeid'])}</code>",
                f"{s['b_s']:.3f}s",
                f"{s['baseline_s']:.3f}s",
                f"{s['threshold_s']:.3f}s",
                f"{s['ratio']:.1f}x" if s.get("ratio") else "",
                str(s["runs"]),
            )
            for s in slower
        ]
        base = compared["a"]
        intro = (
            f"job {esc(latest['job_id'])} ({esc(run_label(latest))} {esc(labels_text(latest.get('labels')))}) "
            f"against {esc(base['job_id'])} ({esc(run_label(base))}): "
            f"{len(compared.get('new_failures') or [])} new failure(s), {len(compared.get('fixed') or [])} fixed"
        )
        body = intro + (
            table(
                ("test", "now", "median", "threshold", "ratio", "runs"),
                rows,
                [f'data-slower="{esc(s["nodeid"])}"' for s in slower],
            )
            if rows
            else "<div>no test slower than its history allows</div>"
        )
        parts.append(section("Slower in the latest run", body, "slower_tests", len(rows)))
    elif latest is not None:
        parts.append(section("Slower in the latest run", "no earlier run with the same labels and branch to compare"))
    for error in errors:
        parts.append(f'<div style="{BOX};color:#c00" data-error="flaky">{esc(error)}</div>')
    return "".join(parts) or f'<div style="{BOX}">loading...</div>'


class FlakyPage(Page):
    title = "Flaky & slow"

    def __init__(self, doc: Any, http: str | None) -> None:
        super().__init__(doc, http)
        self.div = Div(text=render(None, None, None, []), sizing_mode="stretch_width", css_classes=["dtf-flaky"])
        self.layout = self.div

    def read(self) -> Any:
        errors = []
        flaky, error = api.call(self.http, "/api/flaky", since=SINCE, limit=100)
        if error:
            errors.append(error)
        jobs, _ = api.call(self.http, "/api/jobs", limit=LATEST)
        latest = next((j for j in jobs or [] if j.get("tests")), None)
        compared = None
        if latest is not None:
            labels = [f"{k}={v}" for k, v in sorted((latest.get("labels") or {}).items())]
            compared, _ = api.call(
                self.http, "/api/compare", b=latest["job_id"], label=labels, branch=latest.get("branch")
            )
        return flaky, latest, compared, errors

    def show(self, result: Any) -> None:
        if isinstance(result, tuple) and len(result) == 4:
            self.div.text = render(*result)
