"""Queue depth and throughput over time: two linked time-series plots streamed with rollover.

History from the HTTP API fills them when a session opens; after that each ``metrics.system``
snapshot from the PUB channel appends one point (kept back while another tab is shown, then
streamed at once). Legends sit above the plots, never on the lines.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem
from bokeh.plotting import figure

from dtf_bus import defaults

from .held import Held
from .timeaxis import formatter, local_ms

SERIES = ("queued", "running", "throughput", "utilisation")


def legend_above(fig: Any, items: list[tuple[str, Any]]) -> Legend:
    """A one-line legend in the panel above the plot: inside it, a legend hides the lines it names."""
    legend = Legend(
        items=[LegendItem(label=label, renderers=[renderer]) for label, renderer in items],
        orientation="horizontal",
        location="top_left",
        border_line_alpha=0,
        padding=2,
        margin=2,
    )
    fig.add_layout(legend, "above")
    return legend


class QueueThroughput(Held):
    def __init__(self, history: dict[str, list[list[float]]] | None, rollover: int = defaults.DASHBOARD_ROLLOVER):
        self.rollover = rollover
        self.source = ColumnDataSource({"time": [], **{s: [] for s in SERIES}})
        self.depth = figure(
            title="Queue depth",
            x_axis_type="datetime",
            height=240,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,reset,save",
            toolbar_location="above",
        )
        queued = self.depth.line("time", "queued", source=self.source, color="#1f77b4", line_width=2)
        running = self.depth.line("time", "running", source=self.source, color="#ff7f0e", line_width=2)
        legend_above(self.depth, [("queued", queued), ("running", running)])
        self.depth.add_tools(HoverTool(tooltips=[("queued", "@queued"), ("running", "@running")], mode="vline"))
        self.throughput = figure(
            title="Throughput (tasks/s) and utilisation",
            x_axis_type="datetime",
            x_range=self.depth.x_range,
            height=240,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,reset,save",
            toolbar_location="above",
        )
        rate = self.throughput.line("time", "throughput", source=self.source, color="#2ca02c", line_width=2)
        used = self.throughput.line("time", "utilisation", source=self.source, color="#9467bd", line_dash="dashed")
        legend_above(self.throughput, [("tasks/s", rate), ("slot utilisation (0-1)", used)])
        for fig in (self.depth, self.throughput):
            fig.xaxis.formatter = formatter()
        self._last = 0.0
        self._pending: list[dict[str, Any]] = []  # snapshots not streamed yet (their tab hidden)
        if history:
            self._backfill(history)

    def _backfill(self, history: dict[str, list[list[float]]]) -> None:
        points: dict[float, dict[str, float]] = {}
        for name, series in history.items():
            for ts, value in series:
                points.setdefault(ts, {})[name] = value
        times = sorted(points)[-self.rollover :]
        if times:
            self.source.data = {
                "time": [local_ms(t) for t in times],
                **{s: [points[t].get(s, float("nan")) for t in times] for s in SERIES},
            }
            self._last = times[-1]

    def update(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        rows = [p for _, topic, p in events if topic == "metrics.system" and p.get("ts", 0) > self._last]
        if not rows:
            return
        self._last = rows[-1]["ts"]
        self._pending = (self._pending + rows)[-self.rollover :]
        self.changed()

    def publish(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        self.source.stream(
            {
                "time": [local_ms(p["ts"]) for p in rows],
                **{s: [p.get(s) if p.get(s) is not None else float("nan") for p in rows] for s in SERIES},
            },
            rollover=self.rollover,
        )
