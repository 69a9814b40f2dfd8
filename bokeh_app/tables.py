"""DataTable helpers shared by the worker and anomaly tables.

BokehJS redraws a DataTable when its CDSView changes, and replacing ``source.data`` with the
same number of rows leaves the view's indices (and so the view) unchanged: the cells would
keep showing old values. :func:`show` replaces the data and then touches the view's ``tags``,
which redraws the rows without re-creating the table (the scroll position stays); when the
number of rows changed, the view's indices change and redraw it already, and a second redraw
would only cost the browser time. Given a
``cap``, the table is as tall as its rows up to it (:func:`fit`), so a short table leaves no
blank box below its rows.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, TableColumn


def table(columns: tuple[tuple[str, str, str | None], ...], source: ColumnDataSource, height: int) -> DataTable:
    """A table of (field, title, number format or None) columns."""
    return DataTable(
        source=source,
        columns=[
            TableColumn(field=f, title=t, formatter=NumberFormatter(format=fmt))
            if fmt
            else TableColumn(field=f, title=t)
            for f, t, fmt in columns
        ],
        height=height,
        index_position=None,
        reorderable=False,
        sizing_mode="stretch_width",
    )


ROW_PX = 25  # DataTable's row height
HEADER_PX = 30  # its header row and borders


def fit(rows: int, cap: int) -> int:
    """The height showing ``rows`` rows (at least one, an empty table's), at most ``cap``."""
    return min(cap, HEADER_PX + ROW_PX * max(rows, 1))


def show(data_table: DataTable, data: dict[str, list[Any]], cap: int | None = None) -> None:
    rows = len(next(iter(data.values()), []))
    before = len(next(iter(data_table.source.data.values()), []))
    data_table.source.data = data
    if cap is not None:
        height = fit(rows, cap)
        if data_table.height != height:
            data_table.height = height
    if rows != before:
        return
    generation = data_table.view.tags[0] + 1 if data_table.view.tags else 1
    data_table.view.tags = [generation]
