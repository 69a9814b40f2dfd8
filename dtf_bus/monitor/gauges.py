"""``dtf_queued_tasks``: queued tasks per set of requirements, for autoscalers.

An autoscaler (KEDA, an HPA on external metrics) must know how much work waits for *each kind* of
worker: a backlog of CUDA tasks is no reason to add CPU boxes. The broker's queue is already
bucketed by requirements (:mod:`dtf_bus.broker.queue`), so a scrape reads one length per bucket, on the
HTTP thread, when Prometheus asks: nothing is added to the broker's loop.

Each series carries two labels:

- ``requirement``: the task's requirements as ``key=value`` pairs, sorted, joined by ``,``
  (``hardware=cuda``, ``gpu_model=A100,hardware=cuda``), or ``none``;
- ``hardware``: what the tasks need in hardware (``cuda``, ``webgpu``, ``cpu|cuda`` for any-of), or
  ``any`` when they do not say, so ``sum(dtf_queued_tasks{hardware="cuda"})`` is the CUDA backlog.

Tasks waiting on a dependency or a retry back-off are not in the queue yet and are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from dtf_bus import defaults
from dtf_bus.broker import matching
from dtf_bus.broker.queue import TaskQueue


def labels(key: str) -> tuple[str, str]:
    """(requirement, hardware) of a queue key (:func:`dtf_bus.broker.matching.requirement_key`)."""
    _, requires, wanted = matching.parse_key(key)
    pairs = []
    for name, want in sorted(requires.items()):
        text = "|".join(map(str, want)) if isinstance(want, list) else str(want)
        pairs.append(f"{name}={text}")
    pairs += [f"resources.{name}={count}" for name, count in sorted(wanted.items())]
    hardware = requires.get("hardware")
    if isinstance(hardware, list):
        hardware = "|".join(map(str, hardware))
    return ",".join(pairs) or "none", str(hardware) if hardware else "any"


def series(depths: dict[str, int], limit: int = defaults.QUEUE_GAUGE_MAX_SERIES) -> dict[tuple[str, str], int]:
    """Depths summed per label pair (keys differing only in plugin share one); past ``limit``
    series, the smallest are summed into ``("other", hardware)`` per hardware value."""
    totals: Counter[tuple[str, str]] = Counter()
    for key, depth in depths.items():
        totals[labels(key)] += depth
    if len(totals) <= limit:
        return dict(totals)
    kept: Counter[tuple[str, str]] = Counter(dict(totals.most_common(limit - 1)))
    for (requirement, hardware), depth in totals.items():
        if (requirement, hardware) not in kept:
            kept[("other", hardware)] += depth  # the hardware label survives: per-class sums stay right
    return dict(kept)


class QueueGauges:
    """A Prometheus collector over the broker's task queue."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "dtf_queued_tasks", "Tasks waiting for a worker, by requirements", labels=["requirement", "hardware"]
        )
        for (requirement, hardware), depth in sorted(series(self.queue.depths()).items()):
            gauge.add_metric([requirement, hardware], depth)
        yield gauge
