"""The Benchmarks page: a benchmark's metric over the runs that measured it, one line per
(parameters, hardware), runs labelled by commit, regressions marked red.

Reads ``/api/benchmarks?benchmark=NAME``: each point is a run's median, judged against the run
before it as ``dtf compare`` judges B against A (docs/history.md). The legend sits beside the
plot, never on the lines.
"""

from __future__ import annotations

import json
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, FixedTicker, HoverTool, Legend, Select
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from . import api
from .pages import BOX, Page, esc, when

REGRESSION = "#d62728"


def series_data(series: list[dict[str, Any]]) -> tuple[dict[str, list], dict[str, list], dict[int, str], list[dict]]:
    """Lines, points, x labels (run index -> commit) and the regressions, from ``/api/benchmarks``
    (pure: unit-tested). Runs are placed by submit time across every series."""
    runs = sorted({(p["submitted_at"] or 0.0, p["job_id"], p.get("commit") or "") for s in series for p in s["points"]})
    index = {job: i for i, (_, job, _) in enumerate(runs)}
    labels = {i: (commit[:7] if commit else job[:7]) for i, (_, job, commit) in enumerate(runs)}
    lines: dict[str, list] = {"xs": [], "ys": [], "colour": [], "label": []}
    points: dict[str, list] = {k: [] for k in ("x", "y", "colour", "size", "label", "commit", "job", "when", "change")}
    regressions = []
    for n, s in enumerate(series):
        colour = Category10_10[n % 10]
        label = f"{json.dumps(s['params'], sort_keys=True)} on {s['hardware']} ({s['metric']})"
        lines["xs"].append([index[p["job_id"]] for p in s["points"]])
        lines["ys"].append([p["value"] for p in s["points"]])
        lines["colour"].append(colour)
        lines["label"].append(label)
        for p in s["points"]:
            points["x"].append(index[p["job_id"]])
            points["y"].append(p["value"])
            points["colour"].append(REGRESSION if p["regression"] else colour)
            points["size"].append(12 if p["regression"] else 7)
            points["label"].append(label)
            points["commit"].append((p.get("commit") or "")[:10])
            points["job"].append(p["job_id"])
            points["when"].append(when(p.get("submitted_at")))
            points["change"].append("" if p.get("worse_by") is None else f"{p['worse_by']:+.1%} worse")
            if p["regression"]:
                regressions.append({**p, "label": label, "benchmark": s["benchmark"], "unit": s.get("unit")})
    return lines, points, labels, regressions


class BenchPage(Page):
    title = "Benchmarks"

    def __init__(self, doc: Any, http: str | None) -> None:
        super().__init__(doc, http)
        self.benchmark: str | None = None
        self.select = Select(title="Benchmark", options=[], width=260)
        self.select.on_change("value", self._chosen)
        self.lines = ColumnDataSource({"xs": [], "ys": [], "colour": [], "label": []})
        self.points = ColumnDataSource(
            {k: [] for k in ("x", "y", "colour", "size", "label", "commit", "job", "when", "change")}
        )
        self.figure = figure(
            title="Metric per run (median), regressions in red",
            height=320,
            sizing_mode="stretch_width",
            tools="pan,wheel_zoom,reset,save",
            toolbar_location="above",
        )
        self.figure.add_layout(Legend(location="top_left", click_policy="hide"), "right")
        self.figure.multi_line("xs", "ys", line_color="colour", line_width=2, legend_field="label", source=self.lines)
        dots = self.figure.scatter("x", "y", fill_color="colour", line_color="colour", size="size", source=self.points)
        self.figure.add_tools(
            HoverTool(
                renderers=[dots],
                tooltips=[
                    ("series", "@label"),
                    ("value", "@y{0.000}"),
                    ("commit", "@commit"),
                    ("job", "@job"),
                    ("submitted", "@when"),
                    ("change", "@change"),
                ],
            )
        )
        self.ticker = FixedTicker(ticks=[])
        self.figure.xaxis.ticker = self.ticker
        self.figure.xaxis.axis_label = "run (commit)"
        self.summary = Div(text=f'<div style="{BOX}">loading...</div>', sizing_mode="stretch_width")
        self.layout = column(self.select, self.summary, self.figure, sizing_mode="stretch_width")

    def _chosen(self, attr: str, old: str, new: str) -> None:
        if new and new != self.benchmark:
            self.benchmark = new
            self.refresh()

    def read(self) -> Any:
        return self.benchmark, *api.call(self.http, "/api/benchmarks", benchmark=self.benchmark)

    def show(self, result: Any) -> None:
        asked, data, error = result if len(result) == 3 else (None, None, result[1])
        if data is None:
            self.summary.text = f'<div style="{BOX};color:#c00" data-error="benchmarks">{esc(error)}</div>'
            return
        names = data["benchmarks"]
        if self.select.options != names:
            self.select.options = names
        if not names:
            self.summary.text = f'<div style="{BOX}">no benchmark results stored yet</div>'
            return
        if asked is None or asked not in names:  # the first answer lists them all: show the first
            self.benchmark = names[0]
            self.select.value = names[0]
            self.refresh()
            return
        if asked != self.benchmark:
            return
        lines, points, labels, regressions = series_data(data["series"])
        self.lines.data, self.points.data = lines, points
        self.ticker.ticks = sorted(labels)
        self.figure.xaxis.major_label_overrides = labels
        items = "".join(
            f'<li data-regression="{esc(r["job_id"])}">{esc(r["label"])}: commit {esc((r.get("commit") or "")[:10])} '
            f"(job {esc(r['job_id'])}) {r['worse_by']:+.1%} worse than the run before</li>"
            for r in regressions
        )
        self.summary.text = (
            f'<div style="{BOX}"><b>{esc(asked)}</b>: {len(data["series"])} series over {len(labels)} run(s); '
            f'<span data-metric="bench_regressions">{len(regressions)}</span> regression(s)'
            f"{f'<ul>{items}</ul>' if items else ''}</div>"
        )
