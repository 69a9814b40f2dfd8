"""Time on the dashboard's x axes: local wall-clock time, labelled without a date line.

Bokeh's datetime axes show UTC; shifting epoch milliseconds by the local offset makes the
plots agree with the summary and the anomaly list, which use local time.
"""

from __future__ import annotations

import time

from bokeh.models import DatetimeTickFormatter


def local_ms(ts: float) -> float:
    """Epoch seconds as the milliseconds a Bokeh datetime axis shows as local time."""
    return (ts + time.localtime(ts).tm_gmtoff) * 1000


def formatter() -> DatetimeTickFormatter:
    return DatetimeTickFormatter(
        milliseconds="%H:%M:%S.%3N",
        seconds="%H:%M:%S",
        minsec="%H:%M:%S",
        minutes="%H:%M",
        hourmin="%H:%M",
        hours="%H:%M",
        context=None,
    )
