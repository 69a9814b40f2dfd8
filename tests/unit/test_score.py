"""The worker performance score: bounded, and moved by each of its parts."""

from __future__ import annotations

import itertools

import pytest

from dtf_bus.monitor.score import performance, speed_ratio

pytestmark = pytest.mark.unit


def test_a_fresh_worker_scores_the_neutral_value():
    s = performance(0, 0, {}, {}, uptime=1.0, silence=0.0, interval=1.0, liveness=3)
    assert (s.reliability, s.speed, s.availability) == (1.0, 0.5, 1.0)
    assert s.score == 85.0


def test_score_stays_within_0_and_100_for_extreme_inputs():
    for ok, n, mine, fleet, up, silence in itertools.product(
        (0, 5, 100),
        (0, 5, 100),
        (1e-9, 1.0, 1e9),
        (1e-9, 1.0, 1e9),
        (0.0, 0.5, 1.0, 2.0),
        (0.0, 2.0, 1e9),
    ):
        s = performance(min(ok, n), n, {"k": (3, mine)}, {"k": fleet}, up, silence, 1.0, 3)
        assert 0.0 <= s.score <= 100.0


def test_each_part_moves_the_score():
    base = performance(10, 10, {"k": (10, 1.0)}, {"k": 1.0}, 1.0, 0.0, 1.0, 3).score
    assert performance(2, 10, {"k": (10, 1.0)}, {"k": 1.0}, 1.0, 0.0, 1.0, 3).score < base
    assert performance(10, 10, {"k": (10, 4.0)}, {"k": 1.0}, 1.0, 0.0, 1.0, 3).score < base
    assert performance(10, 10, {"k": (10, 0.25)}, {"k": 1.0}, 1.0, 0.0, 1.0, 3).score > base
    assert performance(10, 10, {"k": (10, 1.0)}, {"k": 1.0}, 0.5, 0.0, 1.0, 3).score < base
    assert performance(10, 10, {"k": (10, 1.0)}, {"k": 1.0}, 1.0, 2.0, 1.0, 3).score < base


def test_speed_compares_per_kind_weighted_by_runs():
    # Twice as fast on 3 runs of a, as fast on 1 run of b: (3*2 + 1*1) / 4.
    assert speed_ratio({"a": (3, 1.0), "b": (1, 5.0)}, {"a": 2.0, "b": 5.0}) == pytest.approx(1.75)
    assert speed_ratio({"a": (3, 1.0)}, {}) is None
