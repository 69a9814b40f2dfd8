"""The worker table: status, hardware, utilisation and score per worker, plus one row per profile.

It refreshes once a second from the feed's latest ``metrics.worker.<id>`` of each worker.
DataTable renders only the rows in view, so hundreds of workers scroll smoothly; the
aggregate table above it (one row per profile or hardware set) keeps a big fleet readable.
Both are as tall as their rows (up to a cap, then they scroll): a fixed height left a blank
box under a small fleet's two rows.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div

from .tables import fit, show, table

COLUMNS = (
    ("worker_id", "worker", None),
    ("status", "status", None),
    ("profile", "profile", None),
    ("hardware", "hardware", None),
    ("slots", "slots", None),
    ("running", "running", None),
    ("cpu_percent", "cpu %", "0.0"),
    ("memory_percent", "mem %", "0.0"),
    ("gpu_percent", "gpu %", "0.0"),
    ("score", "score", "0.0"),
    ("completed", "done", None),
    ("failed", "failed", None),
)
GROUP_COLUMNS = (
    ("group", "profile / hardware", None),
    ("workers", "workers", None),
    ("busy", "busy", None),
    ("slots", "slots", None),
    ("running", "running", None),
    ("cpu_percent", "mean cpu %", "0.0"),
    ("score", "mean score", "0.0"),
    ("completed", "done", None),
)


def natural(name: str) -> list[Any]:
    """``w2`` before ``w10``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _nan(value: Any) -> Any:
    return float("nan") if value is None else value


class WorkerTable:
    def __init__(self, refresh: float = 1.0) -> None:
        self.refresh = refresh
        self.source = ColumnDataSource({f: [] for f, _, _ in COLUMNS})
        self.groups = ColumnDataSource({f: [] for f, _, _ in GROUP_COLUMNS})
        self.title = Div(text="<b>Workers</b>")
        self.group_table = table(GROUP_COLUMNS, self.groups, fit(0, 120))
        self.table = table(COLUMNS, self.source, fit(0, 300))
        self.layout = column(
            self.title, self.group_table, self.table, sizing_mode="stretch_width", css_classes=["dtf-workers"]
        )
        self._next = 0.0

    def update(self, workers: dict[str, dict[str, Any]], force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + self.refresh
        rows = [workers[k] for k in sorted(workers, key=natural)]
        data: dict[str, list[Any]] = {f: [] for f, _, _ in COLUMNS}
        groups: dict[str, list[dict[str, Any]]] = {}
        for w in rows:
            hardware = ",".join(w.get("hardware") or [])
            for f, _, fmt in COLUMNS:
                value = hardware if f == "hardware" else w.get(f)
                data[f].append(_nan(value) if fmt else ("" if value is None else value))
            groups.setdefault(w.get("profile") or hardware or "?", []).append(w)
        show(self.table, data, 300)
        agg: dict[str, list[Any]] = {f: [] for f, _, _ in GROUP_COLUMNS}
        for name in sorted(groups):
            members = groups[name]
            cpus = [m["cpu_percent"] for m in members if m.get("cpu_percent") is not None]
            scores = [m["score"] for m in members if m.get("score") is not None]
            agg["group"].append(name)
            agg["workers"].append(len(members))
            agg["busy"].append(sum(1 for m in members if m.get("running")))
            agg["slots"].append(sum(m.get("slots") or 0 for m in members))
            agg["running"].append(sum(m.get("running") or 0 for m in members))
            agg["cpu_percent"].append(statistics.fmean(cpus) if cpus else float("nan"))
            agg["score"].append(statistics.fmean(scores) if scores else float("nan"))
            agg["completed"].append(sum(m.get("completed") or 0 for m in members))
        show(self.group_table, agg, 120)
        busy = sum(1 for w in rows if w.get("running"))
        self.title.text = f"<b>Workers</b>: {len(rows)} ({busy} busy) in {len(groups)} group(s)"
