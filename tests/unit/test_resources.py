"""Consumable resources as pure logic: what a worker advertises, and which ids a task gets."""

from __future__ import annotations

import pytest

from dtf_bus import resources
from dtf_bus.resources import Pool, ResourceError

pytestmark = pytest.mark.unit


def test_a_worker_advertises_the_gpus_it_may_use():
    assert resources.worker_totals({}, {}, 4) == ({"gpus": 4}, {"gpus": ["0", "1", "2", "3"]})
    assert resources.worker_totals({}, {"CUDA_VISIBLE_DEVICES": "2,3"}, 4) == ({"gpus": 2}, {"gpus": ["2", "3"]})
    assert resources.worker_totals({}, {"HIP_VISIBLE_DEVICES": "1"}, 0) == ({"gpus": 1}, {"gpus": ["1"]})
    assert resources.worker_totals({}, {"CUDA_VISIBLE_DEVICES": ""}, 4) == ({}, {"gpus": []})  # none visible
    assert resources.worker_totals({}, {}, 0) == ({}, {})
    # Declared: replaces detection, devices 0..N-1; other resources are plain counts.
    assert resources.worker_totals({"gpus": 2, "licenses": 3}, {"CUDA_VISIBLE_DEVICES": "5"}, 8) == (
        {"gpus": 2, "licenses": 3},
        {"gpus": ["0", "1"]},
    )


def test_the_pool_hands_out_distinct_ids_and_takes_them_back():
    pool = Pool({"gpus": 3, "licenses": 1}, {"gpus": ["4", "5", "6"]})
    first = pool.take({"gpus": 2, "licenses": 1})
    assert first == {"gpus": ["4", "5"], "licenses": ["licenses#0"]}
    assert pool.take({"gpus": 2}) is None and pool.take({"licenses": 1}) is None  # all or nothing
    second = pool.take({"gpus": 1})
    assert second == {"gpus": ["6"]}
    pool.give(first)
    assert sorted(pool.take({"gpus": 2})["gpus"]) == ["4", "5"]
    assert resources.gpu_environment(second) == {"CUDA_VISIBLE_DEVICES": "6", "HIP_VISIBLE_DEVICES": "6"}
    assert resources.gpu_environment({}) == {}


@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ({"gpus": 0}, "resources.gpus must be an integer from 1 to 1024"),
        ({"GPUs": 1}, "resources: 'GPUs' is not a resource name (lowercase letters, digits, _)"),
        ([1], "resources must be a table of name = count, e.g. { gpus = 1 }"),
        ({"gpus": 1.5}, "resources.gpus must be an integer from 1 to 1024"),
    ],
)
def test_bad_requests_are_named(amounts, message):
    with pytest.raises(ResourceError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        resources.check(amounts, "resources")


def test_the_cuda_benchmark_names_the_machines_device(monkeypatch):
    from dtf_plugins.cuda_bench import _device_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _device_ids(1) == {"device_index": 1, "cuda_visible_devices": "2,3", "physical_device": "3"}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _device_ids(0) == {"device_index": 0}
