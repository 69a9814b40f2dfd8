"""The Job page: one run as a test lead reads it.

Its commit, labels and tasks per state; tasks the broker cannot place, with the broker's reasons;
failing tests with their tracebacks (click one to open it); tasks that failed on their own (a
crash, a placement timeout); the slowest tests; and the outcome of each test per hardware.

Reads ``/api/jobs/{id}`` (the broker's live status plus the run's report from DuckDB); the job is
the one selected on the Jobs page, typed in the box, or given as ``?job=ID`` in the page's URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bokeh.layouts import column
from bokeh.models import Div, TextInput

from . import api
from .pages import BOX, Event, Page, esc, labels_text, outcome, run_label, seconds, section, table, when

TRACEBACK_CHARS = 6000  # the end of a traceback, where the error is; the API has all of it


def render(job_id: str, data: dict[str, Any]) -> str:
    """The page's HTML from ``/api/jobs/{id}`` (pure: unit-tested)."""
    run = data.get("run") or {}
    meta = data.get("meta") or {}
    counts = data.get("counts") or {}
    states = ", ".join(f'<span data-state="{esc(s)}">{n} {esc(s)}</span>' for s, n in sorted(counts.items()))
    head = (
        f'<div style="{BOX}"><h3 style="margin:4px 0">Job <span data-metric="job_id">{esc(job_id)}</span>: '
        f"{esc(data.get('name'))}</h3>"
        f"<div>submitted {esc(when(run.get('submitted_at')))} by {esc(data.get('submitter'))} · "
        f'<span data-metric="job_commit">{esc(run_label(meta))}</span> · labels: '
        f"{esc(labels_text(meta.get('labels'))) or 'none'}</div>"
        f"<div>{data.get('total', 0)} task(s): {states or 'none yet'}"
        f"{' · done' if data.get('done') else ''}</div></div>"
    )
    parts = [head]
    blocked = data.get("blocked") or []
    if blocked:
        items = "".join(
            f'<li data-blocked-task="{esc(", ".join(b["tasks"][:3]))}"><b>{len(b["tasks"])}</b> task(s) '
            f"({esc(', '.join(b['tasks'][:5]))}{' ...' if len(b['tasks']) > 5 else ''}): "
            f"{esc('; '.join(b['reasons']))}</li>"
            for b in blocked
        )
        total = sum(len(b["tasks"]) for b in blocked)
        parts.append(section("Waiting, with the broker's reasons", f"<ul>{items}</ul>", "job_blocked", total))
    failing = data.get("failing") or []
    total_failing = data.get("failing_total") or len(failing)
    if failing:
        items = "".join(
            f'<details data-failing-test="{esc(t["nodeid"])}" style="margin:2px 0"><summary>{outcome(t["outcome"])} '
            f"<code>{esc(t['nodeid'])}</code> on {esc(t.get('worker_id'))} ({esc(','.join(t.get('hardware') or []))})"
            f": {esc((t.get('message') or '').splitlines()[0][:200] if t.get('message') else '')}</summary>"
            f'<pre data-traceback="{esc(t["nodeid"])}" style="background:#f6f6f6;padding:6px;overflow:auto;'
            f'max-height:400px;font-size:12px">{esc((t.get("details") or "")[-TRACEBACK_CHARS:])}</pre></details>'
            for t in failing
        )
        more = f"<div>... and {total_failing - len(failing)} more</div>" if total_failing > len(failing) else ""
        parts.append(section("Failing tests", items + more, "job_failing", total_failing))
    elif data.get("run") is not None:
        parts.append(section("Failing tests", "none", "job_failing", 0))
    failed_tasks = data.get("failed_tasks") or []
    if failed_tasks:
        rows = [
            (esc(t["name"]), outcome(t["state"]), esc(t.get("worker_id")), f"<code>{esc(t.get('error'))}</code>")
            for t in failed_tasks
        ]
        parts.append(section("Tasks that did not succeed", table(("task", "state", "worker", "error"), rows)))
    slowest = data.get("slowest") or []
    if slowest:
        rows = [
            (f"<code>{esc(t['nodeid'])}</code>", seconds(t["duration_s"]), outcome(t.get("outcome"))) for t in slowest
        ]
        attrs = [f'data-slowest="{esc(t["nodeid"])}"' for t in slowest]
        parts.append(section("Slowest tests", table(("test", "time", "outcome"), rows, attrs)))
    matrix = data.get("matrix") or {}
    if matrix.get("rows"):
        hardware = matrix["hardware"]
        rows = [
            (f"<code>{esc(r['nodeid'])}</code>", *(outcome(o) if o else "" for o in r["outcomes"]))
            for r in matrix["rows"]
        ]
        more = f"<div>{matrix['total'] - len(rows)} more tests</div>" if matrix["total"] > len(rows) else ""
        parts.append(
            section(
                "Outcome per hardware",
                f"<div data-matrix>{table(('test', *(esc(h) for h in hardware)), rows)}</div>{more}",
            )
        )
    return "".join(parts)


class JobPage(Page):
    title = "Job"

    def __init__(self, doc: Any, http: str | None, job_id: str = "") -> None:
        super().__init__(doc, http)
        self.job_id = job_id
        self.input = TextInput(title="Job id", value=job_id, width=260)
        self.input.on_change("value", lambda attr, old, new: self.open(new.strip()))
        self.div = Div(text=self._empty(), sizing_mode="stretch_width", css_classes=["dtf-job"])
        self.layout = column(self.input, self.div, sizing_mode="stretch_width")

    def open(self, job_id: str) -> None:
        if job_id != self.job_id:
            self.job_id = job_id
            self.div.text = self._empty() if not job_id else f'<div style="{BOX}">loading job {esc(job_id)}...</div>'
        if self.input.value != job_id:
            self.input.value = job_id
        if job_id:
            self.refresh()

    def read(self) -> Any:
        job_id = self.job_id
        return (job_id, *api.call(self.http, f"/api/jobs/{job_id}")) if job_id else (job_id, None, None)

    def show(self, result: Any) -> None:
        job_id, data, error = result if len(result) == 3 else ("", None, result[1])
        if job_id != self.job_id:
            return  # another job was opened while this one was read
        if data is None:
            if job_id:
                self.div.text = f'<div style="{BOX};color:#c00" data-error="job">{esc(error)}</div>'
            return
        self.div.text = render(job_id, data)

    def wants(self, events: Sequence[Event]) -> bool:
        prefix = f"{self.job_id}."
        return bool(self.job_id) and any(
            topic == "events.task" and (p.get("job_id") == self.job_id or str(p.get("task_id", "")).startswith(prefix))
            for _, topic, p in events
        )

    @staticmethod
    def _empty() -> str:
        return f'<div style="{BOX};color:#666">Select a job on the Jobs page, or type its id.</div>'
