"""Smoke test of bench/ship.py at a tiny size: it runs end to end and prints positive figures
(the script itself asserts that the second submit sent and fetched nothing)."""

from __future__ import annotations

import pytest

from tests.performance.test_bench_smoke import assert_positive, run_bench

pytestmark = pytest.mark.performance


def test_ship_smoke():
    s = run_bench("ship.py", "--mb", "1", "--files", "10", "--rounds", "1")
    assert s["bench"] == "ship" and s["files"] == 11 and s["cached_sent_bytes"] == 0
    assert_positive(s, "copytree_s", "first_submit_s", "pack_s", "upload_s", "fetch_s", "unpack_s", "cached_submit_s")
    assert s["archive_mb"] >= s["tree_mb"] > 0
