"""The test runner script and the lint gate: the project's own promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.api


def run_all_tests(*args: str, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DTF_VENV": sys.prefix, "DTF_NO_INSTALL": "1"}
    return subprocess.run(
        [str(ROOT / "bin" / "run_all_tests.sh"), "--log-dir", str(log_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def test_runner_lists_tests_by_type(tmp_path):
    run = run_all_tests("--list", "--type", "unit", log_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    listed = [line for line in run.stdout.splitlines() if "::" in line]
    assert listed and all(line.startswith("tests/unit/") for line in listed)


def test_runner_exit_status_is_pytests_and_summary_is_written(tmp_path):
    run = run_all_tests("--type", "unit", "--filter", "test_round_trip", log_dir=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    [logdir] = list(tmp_path.iterdir())
    summary = (logdir / "summary.txt").read_text()
    assert "exit:    0" in summary and "1 passed" in summary
    assert (logdir / "junit.xml").exists()
    # Nothing selected is not a pass: pytest's exit code 5 comes through.
    none = run_all_tests("--type", "unit", "--filter", "no_such_test_anywhere", log_dir=tmp_path)
    assert none.returncode == 5
    bad = run_all_tests("--type", "bogus", log_dir=tmp_path)
    assert bad.returncode == 2 and "unknown --type 'bogus'" in bad.stderr


@pytest.mark.skipif(shutil.which("ruff", path=os.path.dirname(sys.executable)) is None, reason="ruff not installed")
def test_ruff_clean():
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable))
    run = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout
