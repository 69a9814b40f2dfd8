"""Smoke test of bench/security.py: it runs end to end at tiny sizes and prints its figures."""

from __future__ import annotations

import pytest

from tests.performance.test_bench_smoke import assert_positive, run_bench

pytestmark = [pytest.mark.performance, pytest.mark.security]

# The attacks at tiny sizes: eight short windows on eight fresh brokers.
TINY_ATTACKS = (
    *("--attack-seconds", "0.5", "--settle", "0.2", "--churn-tasks", "20"),
    *("--bomb-repeat", "2000", "--bomb-ttl", "0.2", "--slowloris", "40"),
    *("--big-frames", "2", "--big-frame-keys", "70000", "--curve-flood", "20", "--curve-batch", "10"),
)
PROBE = ("pings", "ping_samples", "ping_p50_ms", "ping_p99_ms", "ping_max_ms", "seconds")
RSS = ("rss_before_mb", "rss_start_mb", "rss_peak_mb", "rss_after_mb")


def test_security_bench_runs():
    summary = run_bench(
        "security.py", "--decodes", "200", "--pings", "20", "--tasks", "20", "--rounds", "1", "--no-attacks"
    )
    for figures in summary["decode"].values():
        assert_positive(figures, "baseline_us", "checked_us")
    for mode in ("plaintext", "curve"):
        assert_positive(summary[mode], "ping_us", "tasks_per_s")
    assert "attacks" not in summary


def test_security_bench_attacks_run_beside_an_idle_broker():
    summary = run_bench("security.py", "--no-overhead", *TINY_ATTACKS, timeout=90)
    attacks = summary["attacks"]
    assert list(attacks) == [
        "idle",
        "churn",
        "slow_ws_reader",
        "repeat_bomb",
        "slowloris",
        "big_frames",
        "idle_curve",
        "curve_flood",
    ]
    for name, figures in attacks.items():
        assert_positive(figures, *PROBE, *RSS)
        assert figures["broker_alive"] is True, name
        assert figures["ping_p50_ms"] <= figures["ping_p99_ms"] <= figures["ping_max_ms"], name
    assert {n: f.get("baseline") for n, f in attacks.items() if "baseline" in f} == {
        "churn": "idle",
        "slow_ws_reader": "churn",
        "repeat_bomb": "idle",
        "slowloris": "idle",
        "big_frames": "idle",
        "curve_flood": "idle_curve",
    }
    assert_positive(attacks["churn"], "tasks", "tasks_per_s")
    assert_positive(attacks["slow_ws_reader"], "tasks", "tasks_per_s")
    bomb = attacks["repeat_bomb"]
    assert_positive(bomb, "repeat", "spec_bytes", "submit_s", "cancel_s", "rss_held_mb", "rss_after_status_mb")
    assert bomb["repeat"] == bomb["cancelled"] == bomb["cancelled_in_status"] == 2000
    slowloris = attacks["slowloris"]
    assert_positive(slowloris, "connections", "bench_fd_limit", "broker_fd_limit", "broker_fds_peak", "api_back_s")
    assert slowloris["connections"] == 40 and slowloris["broker_fd_limit"] == 1024
    frames = attacks["big_frames"]
    assert_positive(frames, "frame_mb", "frames_sent", "frames_refused", "burst_ms_median", "burst_ms_max")
    assert frames["frames_refused"] == frames["frames_sent"]  # 70,000 keys: past the map limit
    flood = attacks["curve_flood"]
    assert_positive(flood, "handshakes", "handshakes_refused", "handshakes_per_s", "refused_log_lines")
    assert flood["handshakes"] == flood["handshakes_refused"] == 20 and flood["handshakes_admitted"] == 0
    assert flood["refused_log_lines"] <= flood["log_budget_per_min"] == 20
    assert summary["attack_seconds"] == 0.5
