"""Worker performance score: one number from 0 to 100, and the parts it is made of.

    score = 100 * (0.5 * reliability + 0.3 * speed + 0.2 * availability)

- reliability = (succeeded + 1) / (finished + 1): the share of its attempts that succeeded, with
  one imagined success so a new worker starts at 1 and a single failure does not sink it to 0.
- speed = r / (1 + r), where r is the fleet's mean duration for each task kind divided by this
  worker's, averaged over the kinds it ran (weighted by runs). A worker as fast as the fleet gets
  0.5, twice as fast 0.67, half as fast 0.33; one with no finished task gets 0.5. Comparing per
  kind keeps a worker that only runs long GPU benchmarks from looking slow beside one that runs
  quick unit tests.
- availability = uptime * responsiveness: uptime is the share of time since it first registered
  that it was registered (time lost to a crash or partition counts against it); responsiveness
  falls linearly from 1 to 0 as its silence grows from one heartbeat interval to the liveness limit.

Each part lies in [0, 1], so the score lies in [0, 100].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

WEIGHTS = {"reliability": 0.5, "speed": 0.3, "availability": 0.2}
FORMULA = "100 * (0.5 * reliability + 0.3 * speed + 0.2 * availability); see dtf_bus/monitor/score.py"


@dataclass(frozen=True, slots=True)
class Score:
    score: float
    reliability: float
    speed: float
    availability: float

    def to_dict(self) -> dict[str, float]:
        return {
            "score": self.score,
            "reliability": self.reliability,
            "speed": self.speed,
            "availability": self.availability,
        }


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def speed_ratio(mine: Mapping[str, tuple[int, float]], fleet: Mapping[str, float]) -> float | None:
    """Fleet mean / my mean per kind, weighted by my runs; ``mine`` maps kind -> (runs, mean seconds)."""
    total = 0.0
    runs = 0
    for kind, (n, mean) in mine.items():
        fleet_mean = fleet.get(kind)
        if n and fleet_mean and mean > 0:
            total += n * (fleet_mean / mean)
            runs += n
    return total / runs if runs else None


def performance(
    succeeded: int,
    finished: int,
    durations: Mapping[str, tuple[int, float]],
    fleet_means: Mapping[str, float],
    uptime: float,
    silence: float,
    interval: float,
    liveness: float,
) -> Score:
    reliability = _clamp((succeeded + 1) / (finished + 1))
    ratio = speed_ratio(durations, fleet_means)
    speed = 0.5 if ratio is None else _clamp(ratio / (1 + ratio))
    limit = max(interval * liveness, interval + 1e-9)
    responsiveness = _clamp(1 - (silence - interval) / (limit - interval)) if silence > interval else 1.0
    availability = _clamp(uptime) * responsiveness
    score = 100 * (
        WEIGHTS["reliability"] * reliability + WEIGHTS["speed"] * speed + WEIGHTS["availability"] * availability
    )
    return Score(round(min(max(score, 0.0), 100.0), 1), round(reliability, 4), round(speed, 4), round(availability, 4))
