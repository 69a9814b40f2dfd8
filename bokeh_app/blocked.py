"""Blocked work: queued tasks no live worker can run, with the broker's reasons.

A queue that cannot drain is not "~3 s to drain": the broker sends, with each metrics
snapshot, the requirement keys nobody meets and why (``blocked_reasons``). This panel shows
them, and is hidden while there are none.
"""

from __future__ import annotations

import html
from typing import Any

from bokeh.models import Div


class BlockedList:
    def __init__(self, system: dict[str, Any] | None = None) -> None:
        self.div = Div(text="", visible=False, sizing_mode="stretch_width")
        self._shown: list[dict[str, Any]] | None = None
        if system:
            self._render(system.get("blocked_reasons") or [])

    def update(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        for _, topic, payload in reversed(events):
            if topic == "metrics.system":
                self._render(payload.get("blocked_reasons") or [])
                return

    def _render(self, blocked: list[dict[str, Any]]) -> None:
        if blocked == self._shown:
            return
        self._shown = blocked
        self.div.visible = bool(blocked)
        items = "".join(
            f'<li data-blocked="{html.escape(b["requirement"])}"><b>{b["tasks"]}</b> task(s) '
            f"<code>{html.escape(b['requirement'])}</code>: {html.escape('; '.join(b['reasons']))}</li>"
            for b in blocked
        )
        total = sum(b["tasks"] for b in blocked)
        self.div.text = (
            '<div style="font-family:sans-serif;border:1px solid #e0a000;background:#fff8e6;border-radius:6px;'
            f'padding:6px 10px"><b>Blocked</b>: <span data-metric="blocked">{total}</span> queued task(s) '
            f'no live worker can run<ul style="margin:4px 0">{items}</ul></div>'
        )
