"""The anomaly list: newest first, with severity, subject and the explanation the broker gave."""

from __future__ import annotations

import time
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, HTMLTemplateFormatter, TableColumn

from .held import Held
from .tables import fit, show

KEEP = 200
# A template, not a model: Bokeh models belong to one document, and each session has its own.
SEVERITY = '<span style="color:<%= value == "critical" ? "#c00" : "#c80" %>;font-weight:600"><%= value %></span>'
FIELDS = ("time", "severity", "type", "subject", "explanation")


class AnomalyList(Held):
    def __init__(self, backfill: list[dict[str, Any]] | None = None) -> None:
        self.items: list[dict[str, Any]] = sorted(backfill or [], key=lambda a: a["ts"], reverse=True)[:KEEP]
        self.source = ColumnDataSource({f: [] for f in FIELDS})
        self.title = Div(text="<b>Anomalies</b>")
        self.table = DataTable(
            source=self.source,
            columns=[
                TableColumn(field="time", title="time", width=80),
                TableColumn(
                    field="severity", title="severity", formatter=HTMLTemplateFormatter(template=SEVERITY), width=70
                ),
                TableColumn(field="type", title="type", width=120),
                TableColumn(field="subject", title="subject", width=120),
                TableColumn(field="explanation", title="explanation", width=600),
            ],
            height=fit(0, 200),
            index_position=None,
            reorderable=False,
            sizing_mode="stretch_width",
        )
        self.layout = column(self.title, self.table, sizing_mode="stretch_width", css_classes=["dtf-anomalies"])
        self.publish()

    def update(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        new = [p for _, topic, p in events if topic == "anomaly"]
        if new:
            self.items = (list(reversed(new)) + self.items)[:KEEP]
            self.changed()

    def publish(self) -> None:
        show(
            self.table,
            {
                "time": [time.strftime("%H:%M:%S", time.localtime(a["ts"])) for a in self.items],
                **{f: [a.get(f, "") for a in self.items] for f in FIELDS[1:]},
            },
            200,
        )
        self.title.text = f"<b>Anomalies</b>: {len(self.items)} shown"
