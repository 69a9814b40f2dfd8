"""Hardware detection's parsers and merge rules, on sample tool output (no GPU needed)."""

from __future__ import annotations

import json

import pytest

from dtf_bus.worker import hardware

pytestmark = pytest.mark.unit

NVIDIA_SMI = """\
0, NVIDIA H100 80GB HBM3, 81559, 9.0, 550.54.15
1, NVIDIA H100 80GB HBM3, 81559, 9.0, 550.54.15
"""


def test_nvidia_smi_rows_become_gpus_and_capabilities():
    gpus = hardware.parse_nvidia_smi(NVIDIA_SMI)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0] == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "memory_gb": 79.65,
        "compute_capability": "9.0",
        "driver_version": "550.54.15",
    }
    caps = hardware.gpu_capabilities("cuda", gpus)
    assert caps["hardware"] == ["cuda"] and caps["gpu_count"] == 2
    assert caps["gpu_model"] == "NVIDIA H100 80GB HBM3" and caps["gpu_memory_gb"] == 79.65
    assert caps["gpu_compute_capability"] == "9.0" and caps["gpu_driver_version"] == "550.54.15"


def test_nvidia_smi_old_driver_and_junk():
    # Drivers before 510 cannot report compute_cap: four columns.
    [gpu] = hardware.parse_nvidia_smi("0, Tesla K80, 11441, 470.82.01\n")
    assert gpu["compute_capability"] is None and gpu["driver_version"] == "470.82.01"
    assert hardware.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate\n") == []
    assert hardware.parse_nvidia_smi("") == []
    assert hardware.gpu_capabilities("cuda", []) == {}


def test_rocm_smi_json():
    sample = {
        "card0": {"Card series": "AMD Instinct MI210", "VRAM Total Memory (B)": "68702699520"},
        "card1": {"Card Series": "AMD Instinct MI210", "VRAM Total Memory (B)": "68702699520"},
        "system": {"Driver version": "6.2.4"},
    }
    gpus = hardware.parse_rocm_smi(json.dumps(sample))
    assert [(g["index"], g["name"], g["memory_gb"], g["driver_version"]) for g in gpus] == [
        (0, "AMD Instinct MI210", 63.98, "6.2.4"),
        (1, "AMD Instinct MI210", 63.98, "6.2.4"),
    ]
    assert hardware.gpu_capabilities("rocm", gpus)["hardware"] == ["rocm"]
    assert hardware.parse_rocm_smi("not json") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Chromium 120.0.6099.109 built on Debian 12.4, running on Debian 12.5\n", ("Chromium", "120.0.6099.109")),
        ("Google Chrome 121.0.6167.85 \n", ("Google Chrome", "121.0.6167.85")),
        ("", None),
        ("no version here", None),
    ],
)
def test_browser_version(text, expected):
    assert hardware.parse_browser_version(text) == expected


def test_declared_wins_and_is_marked():
    detected = {"hardware": ["cpu"], "memory_gb": 16.0, "gpu_model": "real"}
    caps = hardware.merge(detected, [("hardware", "cuda"), ("gpu_model", "mock-A100"), ("hardware", ["cuda", "tpu"])])
    assert caps["hardware"] == ["cpu", "cuda", "tpu"]
    assert caps["gpu_model"] == "mock-A100" and caps["memory_gb"] == 16.0
    assert caps["declared"] == ["hardware", "gpu_model"]


def test_describe_summarises_for_the_workers_table():
    caps = {
        "cpu_cores": 16,
        "memory_gb": 62.5,
        "gpu_model": "A100",
        "gpu_count": 4,
        "gpu_memory_gb": 80,
        "browser": "chromium",
        "browser_version": "120.0",
        "speed": 2.0,
    }
    assert hardware.describe(caps) == "16 cpu, 62.5 GB, 4x A100 80 GB, chromium 120.0, speed 2"
    assert hardware.describe({}) == ""
