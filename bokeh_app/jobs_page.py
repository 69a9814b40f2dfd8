"""The Jobs page: recent runs, newest first, each with a progress bar, its tasks per state, its
tests per outcome (failures in red), its commit and labels. Selecting a row opens that job on
the Job page.

Reads ``/api/jobs``; refreshed when shown and when a job is submitted or done. The feed's
events show before DuckDB has them: a submitted job appears with its task count at once
(``job_submitted``), and a finished one shows done with the broker's final counts
(``job_done``); the next read brings the rest (tests, commit, labels). The table is re-sent only
while the tab is shown and only when its rows changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, HTMLTemplateFormatter, TableColumn

from . import api
from .pages import BOX, Event, Page, esc, labels_text, run_label, when
from .tables import show

LIMIT = 50
HEIGHT = 600
# A template, not a model per row: green for succeeded, red for failed or timed out, grey cancelled.
PROGRESS = (
    '<div data-job="<%= job_id %>" data-done="<%= done %>" data-finished="<%= finished %>" '
    'title="<%= finished %> of <%= total %> final" '
    'style="position:relative;background:#e8e8e8;height:14px;margin-top:5px;border-radius:3px;overflow:hidden">'
    '<div style="position:absolute;left:0;top:0;bottom:0;width:<%= pct_ok %>%;background:#2ca02c"></div>'
    '<div style="position:absolute;left:<%= pct_ok %>%;top:0;bottom:0;width:<%= pct_bad %>%;background:#d62728"></div>'
    '<div style="position:absolute;left:<%= pct_ok + pct_bad %>%;top:0;bottom:0;width:<%= pct_other %>%;'
    'background:#aaaaaa"></div></div>'
)
FIELDS = (
    "job_id",
    "submitted",
    "name",
    "progress",
    "done",
    "finished",
    "total",
    "pct_ok",
    "pct_bad",
    "pct_other",
    "succeeded",
    "failed",
    "running",
    "queued",
    "cancelled",
    "tests",
    "tests_failed",
    "commit",
    "labels",
)
TESTS = (
    "<span data-tests=\"<%= job_id %>\" style=\"color:<%= tests_failed ? '#d62728' : '#333' %>;"
    'font-weight:<%= tests_failed ? 600 : 400 %>"><%= tests %></span>'
)


def merge(
    jobs: list[dict[str, Any]], submitted: dict[str, dict[str, Any]], done: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """The API's jobs with what the feed said since: jobs submitted that it does not list yet
    (first: they are the newest), and final counts of jobs it does not know are done (pure)."""
    known = {j["job_id"] for j in jobs}
    merged = [dict(j) for j in sorted(submitted.values(), key=lambda j: -j["submitted_at"]) if j["job_id"] not in known]
    merged += [dict(j) for j in jobs]
    for job in merged:
        counts = done.get(job["job_id"])
        if counts is not None and not job.get("done"):
            job.update(counts=counts, done=True, finished=sum(counts.values()))
    return merged[:LIMIT]


def rows(jobs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The table's columns from ``/api/jobs`` (pure: unit-tested)."""
    data: dict[str, list[Any]] = {f: [] for f in FIELDS}
    for job in jobs:
        counts = job.get("counts") or {}
        total = max(job.get("total") or 0, sum(counts.values()), 1)
        ok = counts.get("succeeded", 0)
        bad = counts.get("failed", 0) + counts.get("timed_out", 0)
        other = counts.get("cancelled", 0)
        values = {
            "job_id": job["job_id"],
            "submitted": when(job.get("submitted_at")),
            "name": job.get("name") or "",
            "progress": f"{job.get('finished', 0)}/{job.get('total') or 0}" + (" done" if job.get("done") else ""),
            "done": bool(job.get("done")),
            "finished": job.get("finished", 0),
            "total": job.get("total") or 0,
            "pct_ok": round(100 * ok / total, 2),
            "pct_bad": round(100 * bad / total, 2),
            "pct_other": round(100 * other / total, 2),
            "succeeded": ok,
            "failed": bad,
            "running": counts.get("running", 0) + counts.get("assigned", 0),
            "queued": counts.get("queued", 0),
            "cancelled": other,
            "tests": ", ".join(f"{n} {o}" for o, n in sorted((job.get("tests") or {}).items())),
            "tests_failed": sum(n for o, n in (job.get("tests") or {}).items() if o in ("failed", "error")),
            "commit": run_label(job),
            "labels": labels_text(job.get("labels")),
        }
        for field in FIELDS:
            data[field].append(values[field])
    return data


class JobsPage(Page):
    title = "Jobs"

    def __init__(self, doc: Any, http: str | None, open_job: Callable[[str], None]) -> None:
        super().__init__(doc, http)
        self.open_job = open_job
        self.source = ColumnDataSource({f: [] for f in FIELDS})
        columns = [
            TableColumn(field="job_id", title="job", width=100),
            TableColumn(field="submitted", title="submitted", width=150),
            TableColumn(field="name", title="name", width=120),
            TableColumn(
                field="pct_ok", title="progress", formatter=HTMLTemplateFormatter(template=PROGRESS), width=120
            ),
            TableColumn(field="progress", title="final/total", width=75),
            TableColumn(field="succeeded", title="ok", width=35),
            TableColumn(field="failed", title="failed", width=40),
            TableColumn(field="running", title="running", width=50),
            TableColumn(field="queued", title="queued", width=50),
            TableColumn(field="cancelled", title="cancelled", width=60),
            TableColumn(field="tests", title="tests", formatter=HTMLTemplateFormatter(template=TESTS), width=230),
            TableColumn(field="commit", title="commit", width=160),
            TableColumn(field="labels", title="labels", width=150),
        ]
        self.table = DataTable(
            source=self.source,
            columns=columns,
            height=HEIGHT,  # fixed: the page's last element, and a height change re-lays out the whole page
            index_position=None,
            reorderable=False,
            sizing_mode="stretch_width",
            css_classes=["dtf-jobs"],
        )
        self.status = Div(text=self._status(0, None), sizing_mode="stretch_width")
        self.jobs: list[dict[str, Any]] = []  # the API's last answer
        self.submitted: dict[str, dict[str, Any]] = {}  # job_submitted events the API did not list yet
        self.done: dict[str, dict[str, int]] = {}  # job_done counts the API did not show yet
        self.layout = column(self.status, self.table, sizing_mode="stretch_width")
        self.source.selected.on_change("indices", self._selected)

    def read(self) -> Any:
        return api.call(self.http, "/api/jobs", limit=LIMIT)

    def absorb(self, events: Sequence[Event]) -> None:
        changed = False
        for _, topic, p in events:
            if topic != "events.task" or p.get("event") not in ("job_submitted", "job_done") or not p.get("job_id"):
                continue
            if p["event"] == "job_submitted" and not any(j["job_id"] == p["job_id"] for j in self.jobs):
                entry = self.submitted.setdefault(
                    p["job_id"], {"job_id": p["job_id"], "total": 0, "submitted_at": p.get("ts") or time.time()}
                )
                entry["total"] += p.get("total") or 0  # an open job (pytest --dtf) is submitted in batches
                entry["counts"] = {"queued": entry["total"]}
            elif p["event"] == "job_done":
                self.done[p["job_id"]] = dict(p.get("counts") or {})
            changed = True
        if changed:
            # Only a shown page reads the API (which clears these): a long spell on another tab
            # keeps the newest, as many as the page shows.
            for news in (self.submitted, self.done):
                for stale in list(news)[:-LIMIT]:
                    del news[stale]
            self.changed()

    def show(self, result: Any) -> None:
        jobs, error = result if isinstance(result, tuple) else (None, "no answer")
        if jobs is None:
            self.status.text = self._status(len(self.source.data["job_id"]), error)
            return
        self.jobs = jobs
        listed = {j["job_id"]: j for j in jobs}
        self.submitted = {k: v for k, v in self.submitted.items() if k not in listed}
        self.done = {k: v for k, v in self.done.items() if k in listed and not listed[k].get("done")}
        self.changed()

    def publish(self) -> None:
        merged = merge(self.jobs, self.submitted, self.done)
        data = rows(merged)
        if data != self.source.data:
            show(self.table, data)
        self.status.text = self._status(len(merged), None)

    @staticmethod
    def _status(count: int, error: str | None) -> str:
        problem = f' <span style="color:#c00" data-error="jobs">{esc(error)}</span>' if error else ""
        return (
            f'<div style="{BOX}"><b>Jobs</b>: <span data-metric="jobs_shown">{count}</span> most recent '
            f"(select one to open it){problem}</div>"
        )

    def _selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if new:
            ids = self.source.data["job_id"]
            if new[0] < len(ids):
                self.open_job(ids[new[0]])
