"""Labels and series of dtf_queued_tasks (pure logic; the scrape itself is in tests/monitoring)."""

from __future__ import annotations

import pytest

from dtf_bus.broker import matching
from dtf_bus.monitor import gauges as queue_gauges

pytestmark = pytest.mark.unit


def key(requires, plugin="sim"):
    return matching.requirement_key(plugin, requires)


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        ({}, ("none", "any")),
        ({"hardware": "cuda"}, ("hardware=cuda", "cuda")),
        ({"hardware": ["cpu", "cuda"]}, ("hardware=cpu|cuda", "cpu|cuda")),
        ({"hardware": "cuda", "gpu_model": "A100"}, ("gpu_model=A100,hardware=cuda", "cuda")),
        ({"min_memory_gb": 8, "pool": "ci"}, ("min_memory_gb=8,pool=ci", "any")),
    ],
)
def test_labels_name_the_requirements_and_the_hardware(requires, expected):
    assert queue_gauges.labels(key(requires)) == expected


def test_keys_differing_only_in_plugin_share_a_series():
    depths = {key({"hardware": "cuda"}, "sim"): 2, key({"hardware": "cuda"}, "shell"): 3, key({}): 1}
    assert queue_gauges.series(depths) == {("hardware=cuda", "cuda"): 5, ("none", "any"): 1}


def test_past_the_limit_the_smallest_series_are_summed_per_hardware():
    depths = {key({"hardware": "cuda", "n": i}): 10 + i for i in range(5)}
    depths[key({"pool": "a"})] = 1
    depths[key({"pool": "b"})] = 2
    got = queue_gauges.series(depths, limit=4)  # the 3 largest stay, the rest are "other"
    assert {pair for pair in got if pair[0] != "other"} == {(f"hardware=cuda,n={i}", "cuda") for i in (2, 3, 4)}
    assert got[("other", "cuda")] == 10 + 11
    assert got[("other", "any")] == 1 + 2
    assert sum(got.values()) == sum(depths.values())


def test_a_key_with_resources_is_labelled_not_refused():
    """A queued GPU task's key has a third part; reading it failed every /metrics scrape."""
    key = matching.requirement_key("sim", {"hardware": "cuda"}, {"gpus": 2})
    assert queue_gauges.labels(key) == ("hardware=cuda,resources.gpus=2", "cuda")
    assert matching.parse_key(key) == ("sim", {"hardware": "cuda"}, {"gpus": 2})
