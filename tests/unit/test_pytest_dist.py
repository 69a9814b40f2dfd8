"""How `dtf pytest` turns a collected suite and flags into tasks (pure logic)."""

from __future__ import annotations

import pytest

from dtf_bus import pytest_dist
from dtf_bus.pytest_dist import Collected, UsageError

pytestmark = pytest.mark.unit

NODEIDS = ["a/test_x.py::test_1", "a/test_x.py::test_2", "test_y.py::TestZ::test_3"]


def test_split_by_file_reapplies_selection_on_the_worker():
    collected = Collected(rootdir="/src", nodeids=NODEIDS)
    tasks = pytest_dist.build_tasks(
        collected, "file", keyword="not slow", extra=["-x"], requires={"hardware": ["cuda"]}, timeout=60
    )
    assert [t["name"] for t in tasks] == ["a/test_x.py", "test_y.py"]
    first = tasks[0]
    assert first["plugin"] == "pytest" and first["requires"] == {"hardware": ["cuda"]} and first["timeout"] == 60
    assert first["params"] == {
        "targets": ["a/test_x.py"],
        "cwd": "/src",
        "rootdir": "/src",
        "k": "not slow",
        "args": ["-x"],
    }
    assert pytest_dist.expected_counts(collected, "file") == {"a/test_x.py": 2, "test_y.py": 1}


def test_split_by_test_targets_node_ids():
    tasks = pytest_dist.build_tasks(Collected(rootdir="/src", nodeids=NODEIDS), "test", keyword="x")
    assert [t["params"]["targets"] for t in tasks] == [[n] for n in NODEIDS]
    assert all("k" not in t["params"] and "requires" not in t for t in tasks)


def test_requires_flags():
    assert pytest_dist.parse_requires(["hardware=cuda,rocm", "hardware=tpu", "min_memory_gb=32", "pool=ci"]) == {
        "hardware": ["cuda", "rocm", "tpu"],
        "min_memory_gb": 32,
        "pool": "ci",
    }
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        pytest_dist.parse_requires(["cuda"])
