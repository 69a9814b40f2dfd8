"""DataTable helpers shared by the worker and anomaly tables.

BokehJS redraws a DataTable when its CDSView changes, and replacing ``source.data`` with the
same number of rows leaves the view's indices (and so the view) unchanged: the cells would
keep showing old values. :func:`show` replaces the data and then touches the view's ``tags``,
which redraws the rows without re-creating the table (the scroll position stays).
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


def show(data_table: DataTable, data: dict[str, list[Any]]) -> None:
    data_table.source.data = data
    generation = data_table.view.tags[0] + 1 if data_table.view.tags else 1
    data_table.view.tags = [generation]
