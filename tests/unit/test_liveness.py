"""The alive file's timing and verdicts (pure logic on a temp file; the worker side is in
tests/integration/test_ping.py)."""

from __future__ import annotations

import os
import time

import pytest

from dtf_bus.worker import liveness

pytestmark = pytest.mark.unit


def test_beat_touches_at_most_once_per_interval_and_brings_the_wake_up_forward(tmp_path):
    path = tmp_path / "alive"
    alive = liveness.AliveFile(path, interval=5.0)
    assert alive.beat(100.0, 200.0) == 105.0 and path.exists()  # first turn: touched, wake by the next
    os.utime(path, (1, 1))
    assert alive.beat(103.0, 104.0) == 104.0 and path.stat().st_mtime == 1  # not yet due: untouched
    assert alive.beat(105.0, 300.0) == 110.0 and path.stat().st_mtime > 1


def test_no_path_makes_beats_free_no_ops():
    assert liveness.AliveFile(None).beat(1.0, 7.0) == 7.0


def test_an_unwritable_file_is_reported_once_and_never_raises(tmp_path, caplog):
    alive = liveness.AliveFile(tmp_path / "missing-dir" / "alive", interval=0.0)
    alive.beat(1.0, 2.0)
    alive.beat(2.0, 3.0)
    assert sum("cannot touch the alive file" in r.message for r in caplog.records) == 1


def test_problem_names_a_missing_or_stale_file(tmp_path):
    path = tmp_path / "alive"
    assert "no alive file" in liveness.problem(path, 60)
    path.touch()
    assert liveness.problem(path, 60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    assert "last touched 120s ago" in liveness.problem(path, 60)
