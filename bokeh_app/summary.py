"""Cluster summary: the numbers that say how the fleet is doing, refreshed from every event.

The last ``metrics.system`` snapshot is the base (it arrives once a second); task and worker
events that come after it are counted on top, so a finished task shows within one refresh
instead of waiting for the next snapshot. Each value carries ``data-metric`` so tests (and
scrapers) can find it.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from typing import Any

from bokeh.models import Div

FINAL = ("succeeded", "failed", "timed_out", "cancelled")


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


class Summary:
    def __init__(self, broker: str, http: str | None) -> None:
        self.broker = broker
        self.http = http
        self.base: dict[str, Any] = {}
        self.delta: Counter[str] = Counter()
        self.last_event = 0.0
        self.div = Div(text=self._html(), sizing_mode="stretch_width")

    def update(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        changed = False
        for _, topic, payload in events:
            if topic == "metrics.system":
                self.base = payload
                self.delta.clear()
            elif topic == "events.task":
                event = payload.get("event")
                if event in FINAL:
                    self.delta[event] += 1
                    self.delta["running"] -= 1
                elif event == "running":
                    self.delta["running"] += 1
                elif event == "assigned":
                    self.delta["queued"] -= 1
                elif event == "job_submitted":
                    self.delta["queued"] += payload.get("total", 0)
                elif event == "queued":
                    self.delta["queued"] += 1
            elif topic == "events.worker":
                event = payload.get("event")
                self.delta["workers_total"] += 1 if event == "registered" else -1 if event in ("dead", "left") else 0
            else:
                continue
            changed = True
            self.last_event = payload.get("ts", time.time())
        if changed:
            self.div.text = self._html()

    def value(self, name: str) -> Any:
        base = self.base.get(name)
        if name in self.delta and isinstance(base, int | float):
            return max(base + self.delta[name], 0)
        if base is None and name in self.delta:
            return max(self.delta[name], 0)
        return base

    def _html(self) -> str:
        v = self.value
        rate = v("success_rate")
        cards = [
            ("Workers", "workers_total", f"{_fmt(v('workers_total'))}", f"{_fmt(v('workers_busy'))} busy"),
            (
                "Slots busy",
                "slots_busy",
                f"{_fmt(v('slots_busy'))}/{_fmt(v('slots_total'))}",
                f"utilisation {_fmt((v('utilisation') or 0) * 100, '%', 0)}",
            ),
            (
                "Queued",
                "queued",
                _fmt(v("queued")),
                f"{v('blocked')} blocked" if v("blocked") else f"oldest {_fmt(v('queue_oldest_wait'), 's', 1)}",
            ),
            ("Running", "running", _fmt(v("running")), ""),
            ("Succeeded", "succeeded", _fmt(v("succeeded")), ""),
            ("Failed", "failed", _fmt((v("failed") or 0) + (v("timed_out") or 0)), f"{_fmt(v('cancelled'))} cancelled"),
            ("Throughput", "throughput", _fmt(v("throughput"), "/s"), ""),
            (
                "Queue wait",
                "queue_wait_mean",
                _fmt(v("queue_wait_mean"), "s", 3),
                f"p95 {_fmt(v('queue_wait_p95'), 's', 3)}",
            ),
            ("Success rate", "success_rate", _fmt(rate * 100 if rate is not None else None, "%", 1), "last 10 s"),
            ("Anomalies", "anomalies_total", _fmt(v("anomalies_total")), ""),
        ]
        cells = "".join(
            '<div style="flex:1 1 120px;padding:6px 10px;border:1px solid #ddd;border-radius:6px;background:#fafafa">'
            f'<div style="font-size:11px;color:#666">{html.escape(label)}</div>'
            f'<div style="font-size:22px;font-weight:600" data-metric="{key}">{html.escape(str(value))}</div>'
            f'<div style="font-size:11px;color:#888">{html.escape(sub)}</div></div>'
            for label, key, value, sub in cards
        )
        where = html.escape(self.broker or "")
        seen = time.strftime("%H:%M:%S", time.localtime(self.last_event)) if self.last_event else "-"
        api = (
            f' · API <a href="{html.escape(self.http)}/api" target="_blank">{html.escape(self.http)}</a>'
            if (self.http)
            else ""
        )
        return (
            f'<div style="font-family:sans-serif"><div style="font-size:12px;color:#555;margin-bottom:4px">'
            f"broker {where}{api} · last event "
            f'<span data-metric="last_event">{seen}</span>'
            f'</div><div style="display:flex;flex-wrap:wrap;gap:6px">{cells}</div></div>'
        )
