"""Small parsers of the monitoring side: API durations and listen addresses, nvidia-smi output."""

from __future__ import annotations

import pytest

from dtf_bus.http.api import parse_duration, parse_listen
from dtf_bus.worker.utilisation import parse_nvidia_smi

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), ("10", 10.0)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text, "interval") == seconds


@pytest.mark.parametrize("text", ["", "abc", "1w", "-1s", "0s"])
def test_parse_duration_rejects_with_the_parameter_named(text):
    with pytest.raises(ValueError, match=r"^interval: "):
        parse_duration(text, "interval")


def test_parse_listen():
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen(":8585") == ("127.0.0.1", 8585)
    assert parse_listen("8585") == ("127.0.0.1", 8585)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost:http")
    with pytest.raises(ValueError, match="0-65535"):
        parse_listen("127.0.0.1:70000")


def test_parse_nvidia_smi_averages_gpus():
    out = parse_nvidia_smi("30, 1000, 80000\n50, 3000, 80000\n")
    assert out == {"gpu_percent": 40.0, "gpu_count": 2.0, "gpu_memory_percent": 2.5}
    assert parse_nvidia_smi("[N/A], [N/A], [N/A]\n") == {}
    assert parse_nvidia_smi("") == {}
