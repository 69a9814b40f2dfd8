"""The task stream: each finished task a bar on its worker's row, from start to end (as in Dask).

Bars come from ``events.task``: a task's ``running`` event opens it, its final event closes
it. Colour is by task kind; failures are red. Old bars roll over, so a long run keeps a
bounded page. Until the first task ends the plot would be a large empty box: a one-line
placeholder stands in for it, and the plot is low while it has one or two rows of workers and
full height from the third (two heights, not one per row: each height change re-lays out the
page in the browser) rather than starting at full height with two rows in it. While another tab
is shown the bars wait, and are streamed with the rows' height and labels when it is shown again.
"""

from __future__ import annotations

from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, FixedTicker, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from dtf_bus import defaults

from .held import Held
from .timeaxis import formatter, local_ms

FINAL = ("succeeded", "failed", "timed_out", "cancelled")
STATE_COLOURS = {"failed": "#d62728", "timed_out": "#8c0000", "cancelled": "#aaaaaa"}
MAX_LABELLED_ROWS = 20  # beyond this, worker names on the axis would overlap: hover tells
MIN_PX, MAX_PX, LOW_ROWS = 150, 300, 2  # the plot's height: MIN_PX for up to LOW_ROWS worker rows, else MAX_PX
PLACEHOLDER = (
    '<div data-placeholder="task-stream" style="font-family:sans-serif;color:#666;border:1px dashed #ccc;'
    'border-radius:6px;padding:8px 10px"><b>Task stream</b>: idle, no task has finished since this page '
    "opened; each task will show as a bar on its worker's row.</div>"
)


class TaskStream(Held):
    def __init__(self, rollover: int = defaults.DASHBOARD_TASK_STREAM) -> None:
        self.rollover = rollover
        self.source = ColumnDataSource(
            {k: [] for k in ("start", "end", "y", "colour", "name", "worker", "state", "duration")}
        )
        self.figure = figure(
            title="Task stream",
            x_axis_type="datetime",
            height=MIN_PX,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,reset,save",
            toolbar_location="above",
            visible=False,
        )
        self.placeholder = Div(text=PLACEHOLDER, sizing_mode="stretch_width")
        self.layout = column(self.placeholder, self.figure, sizing_mode="stretch_width")
        self.figure.hbar(
            y="y", left="start", right="end", height=0.8, fill_color="colour", line_color=None, source=self.source
        )
        self.figure.add_tools(
            HoverTool(
                tooltips=[
                    ("task", "@name"),
                    ("worker", "@worker"),
                    ("state", "@state"),
                    ("seconds", "@duration{0.000}"),
                ]
            )
        )
        self.figure.yaxis.axis_label = "worker"
        self.ticker = FixedTicker(ticks=[])  # one ticker, updated in place (replacing it races the browser)
        self.figure.yaxis.ticker = self.ticker
        self.figure.xaxis.formatter = formatter()
        self.rows: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self._open: dict[str, tuple[float, str]] = {}
        self._bars: dict[str, list[Any]] = {k: [] for k in self.source.data}  # not streamed yet
        self._labelled = 0  # rows the axis shows (the figure's height and labels were set for)

    def _row(self, worker: str) -> int:
        row = self.rows.get(worker)
        if row is None:
            row = self.rows[worker] = len(self.rows)
        return row

    def _axis(self) -> None:
        """The height and labels for the rows there are now (a height change re-lays out the page)."""
        if self._labelled == len(self.rows):
            return
        self._labelled = len(self.rows)
        height = MIN_PX if len(self.rows) <= LOW_ROWS else MAX_PX
        if self.figure.height != height:
            self.figure.height = height
        if len(self.rows) <= MAX_LABELLED_ROWS:
            self.ticker.ticks = list(self.rows.values())
            self.figure.yaxis.major_label_overrides = {v: k for k, v in self.rows.items()}
        elif self.ticker.ticks:  # too many to read: unlabelled rows
            self.ticker.ticks = []
            self.figure.yaxis.major_label_overrides = {}

    def _colour(self, name: str, state: str) -> str:
        if state in STATE_COLOURS:
            return STATE_COLOURS[state]
        kind = name.split("[", 1)[0]
        colour = self.kinds.get(kind)
        if colour is None:
            colour = self.kinds[kind] = Category10_10[len(self.kinds) % 10]
        return colour

    def update(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        bars = self._bars
        for _, topic, p in events:
            if topic != "events.task" or "task_id" not in p:
                continue
            event, task_id = p.get("event"), p["task_id"]
            if event == "running" and p.get("worker_id"):
                self._open[task_id] = (p["ts"], p["worker_id"])
                if len(self._open) > 100_000:  # tasks whose end we never saw (dropped frames)
                    self._open.pop(next(iter(self._open)))
            elif event in FINAL and (task_id in self._open or (p.get("started_at") and p.get("worker_id"))):
                # A task that ended within the worker's STARTED_REPORT_DELAY was never seen running.
                start, worker = self._open.pop(task_id, None) or (p["started_at"], p["worker_id"])
                name = p.get("name") or task_id
                bars["start"].append(local_ms(start))
                bars["end"].append(local_ms(p["ts"]))
                bars["y"].append(self._row(worker))
                bars["colour"].append(self._colour(name, event))
                bars["name"].append(name)
                bars["worker"].append(worker)
                bars["state"].append(event)
                bars["duration"].append(p["ts"] - start)
            elif event == "queued":
                self._open.pop(task_id, None)
        if bars["start"]:
            if len(bars["start"]) > self.rollover:
                for values in bars.values():
                    del values[: -self.rollover]
            self.changed()

    def publish(self) -> None:
        bars = self._bars
        if not bars["start"]:
            return
        self._bars = {k: [] for k in bars}
        self._axis()
        self.source.stream(bars, rollover=self.rollover)
        if not self.figure.visible:
            self.figure.visible, self.placeholder.visible = True, False
