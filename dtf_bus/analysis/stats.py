"""Robust statistics for run history: medians and the median absolute deviation.

Test and benchmark timings have long tails (a loaded machine, a GC pause): a mean and a
standard deviation follow one outlier, the median and MAD do not. ``1.4826 x MAD`` estimates
the standard deviation of normally distributed data, so thresholds read as "k sigmas".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from dtf_bus import defaults

ROBUST_SIGMA = 1.4826  # MAD x this = the standard deviation, for normal data


def robust_sigma(values: Sequence[float]) -> float:
    """1.4826 x the median absolute deviation; 0 for fewer than 3 values (no spread to speak of)."""
    if len(values) < 3:
        return 0.0
    centre = statistics.median(values)
    return ROBUST_SIGMA * statistics.median(abs(v - centre) for v in values)


def relative_spread(values: Sequence[float]) -> float:
    """:func:`robust_sigma` as a fraction of the median (0 when the median is 0)."""
    if len(values) < 3:
        return 0.0
    centre = statistics.median(values)
    return robust_sigma(values) / abs(centre) if centre else 0.0


@dataclass(frozen=True, slots=True)
class SlowerRule:
    """When a test counts as slower: its new duration passes ``baseline + margin``, where
    ``baseline`` is the median of its history and ``margin`` the largest of ``spreads`` robust
    sigmas of that history, ``relative`` x the baseline and ``absolute`` seconds. The floors
    keep a test of a few milliseconds (whose history may have no spread at all) from being
    "slower" over scheduler noise."""

    spreads: float = defaults.SLOWER_SPREADS
    relative: float = defaults.SLOWER_RELATIVE
    absolute: float = defaults.SLOWER_ABSOLUTE_S

    def threshold(self, history: Sequence[float]) -> tuple[float, float]:
        """``(baseline, threshold)`` of a non-empty history of durations."""
        baseline = statistics.median(history)
        margin = max(self.spreads * robust_sigma(history), self.relative * baseline, self.absolute)
        return baseline, baseline + margin

    def as_dict(self) -> dict[str, float]:
        return {"spreads": self.spreads, "relative": self.relative, "absolute_s": self.absolute}


@dataclass(frozen=True, slots=True)
class BenchRule:
    """When a benchmark regressed: it got worse by more than the larger of ``relative`` and
    ``spreads`` x its relative spread (over stored runs, and over each run's own repeats)."""

    spreads: float = defaults.BENCH_REGRESSION_SPREADS
    relative: float = defaults.BENCH_REGRESSION_RELATIVE

    def limit(self, *spreads: float) -> float:
        return max(self.relative, self.spreads * max(spreads, default=0.0))

    def as_dict(self) -> dict[str, float]:
        return {"spreads": self.spreads, "relative": self.relative}
