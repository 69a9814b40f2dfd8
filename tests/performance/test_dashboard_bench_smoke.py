"""Smoke test of bench/dashboard.py: it runs end to end at a tiny size and prints its figures.

Asserts no speed (the figures are the benchmark's to print), only that the keys are there and
the measured delays are positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.performance

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_bench_smoke():
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install chromium (bin/_bootstrap.sh)")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dashboard.py"), "--json", "--workers", "12", "--baseline-workers",
         "2", "--probes", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["baseline"]["workers"] == 2 and summary["fleet"]["workers"] == 12
    for run in (summary["baseline"], summary["fleet"]):
        assert run["page_ready_s"] > 0 and 0 < run["latency_median_ms"] <= run["latency_max_ms"]
        assert 0 < run["jobs_page_row_median_ms"] <= run["jobs_page_row_max_ms"]
        assert 0 < run["jobs_page_done_median_ms"] <= run["jobs_page_done_max_ms"]
