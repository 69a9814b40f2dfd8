"""`pytest --dtf` and `dtf pytest` on a real cluster: a temp project run across workers must look
like the same project run by plain pytest (summary counts, FAILURES, -ra, --junitxml, a conftest
hook on the controller), and the distributed extras must hold: a crashing test, hardware routing
from markers, an unplaceable test, -x, --lf, reruns, loadscope.

Each test builds its own broker and workers (make_cluster); pytest runs as a subprocess
(`python -m pytest`, the `dtf` console script), exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROJECT = {
    "pytest.ini": """
        [pytest]
        markers =
            gpu: needs a GPU
        dtf_markers =
            gpu = hardware=cuda
    """,
    # Runs on the controller (and, harmlessly, in every worker session): counts what pytest's
    # hooks see there, which must be every report the workers made.
    "conftest.py": """
        import json, os

        SEEN = {}

        def pytest_runtest_logreport(report):
            SEEN[report.when] = SEEN.get(report.when, 0) + 1

        def pytest_sessionfinish(session):
            if session.config.getoption("dtf", None) is not None:
                out = os.path.join(str(session.config.rootpath), "controller_reports.json")
                with open(out, "w") as fh:
                    json.dump(SEEN, fh)
    """,
    "test_basic.py": """
        import warnings
        import pytest

        def test_pass():
            assert True

        def test_fail():
            values = [1, 2, 3]
            assert sum(values) == 7, "the sum is off"

        @pytest.mark.skip(reason="not on this fleet")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        @pytest.mark.xfail(reason="maybe fixed")
        def test_xpass():
            pass

        @pytest.fixture
        def database():
            raise RuntimeError("no database here")

        def test_needs_database(database):
            pass

        def test_warns():
            warnings.warn("old api", DeprecationWarning)

        class TestGroup:
            @pytest.mark.parametrize("n", [1, 2, 3])
            def test_param(self, n):
                assert n > 0
    """,
    "test_crash.py": """
        import os

        def test_before():
            pass

        def test_kills_its_session():
            os._exit(3)

        def test_after():
            pass
    """,
    "test_hw.py": """
        import pytest

        @pytest.mark.gpu
        def test_on_cuda():
            pass

        @pytest.mark.dtf(requires={"hardware": "cuda"})
        def test_marked_cuda():
            pass

        @pytest.mark.dtf(requires={"hardware": "tpu"})
        def test_on_tpu():
            pass

        @pytest.mark.dtf(resources={"gpus": 1})
        def test_gets_a_gpu_of_its_own():
            import os

            assert os.environ["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    """,
}

# The tests of PROJECT a plain local pytest can run too (no crash, no hardware routing).
PORTABLE = "not kills_its_session and not on_tpu and not cuda and not gpu_of_its_own"
SUMMARY_WORDS = ("failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warning", "error", "rerun")


def make_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DTF_"))}
    env["COLUMNS"] = "200"  # long lines unclipped, so the assertions can read them
    return env


def pytest_run(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ(),
    )


def dtf(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ())


def summary(output: str) -> dict[str, int]:
    """pytest's closing line as counts: {"passed": 5, "failed": 1, ...}."""
    lines = [line for line in output.splitlines() if re.match(r"^=* ?\d+ \w+.* in [\d.]+s", line.strip("= "))]
    assert lines, output
    counts: dict[str, int] = {}
    for n, word in re.findall(r"(\d+) (\w+)", lines[-1]):
        word = word.rstrip("s") if word.rstrip("s") in SUMMARY_WORDS else word
        if word in SUMMARY_WORDS:
            counts[word] = int(n)
    return counts


def job_of(output: str) -> str:
    match = re.search(r"^dtf: job (\w+):", output, re.M)
    assert match, output
    return match.group(1)


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_pytest_dtf_looks_like_local_pytest(make_cluster, tmp_path):
    project = make_project(tmp_path / "proj", PROJECT)
    gpu = {"capabilities": ["hardware=cuda"], "extra_args": ["--resource", "gpus=2"]}
    cluster = make_cluster(workers={"w1": {}, "w2": {}, "gpu1": gpu})
    ep = f"--dtf={cluster.endpoint}"

    # The portable part: identical counts to plain pytest, outcome by outcome.
    local = pytest_run(project, "-ra", "-k", PORTABLE)
    remote = pytest_run(project, ep, "-ra", "-k", PORTABLE)
    assert local.returncode == remote.returncode == 1, remote.stdout + remote.stderr
    expected = summary(local.stdout)
    assert expected == {
        "failed": 1,
        "passed": 7,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 1,
        "warning": 1,
        "error": 1,
        "deselected": 5,  # deselected on the workers, counted on the controller as locally
    }
    assert summary(remote.stdout) == expected, remote.stdout

    # The whole project: a crash, routing by marker, an unplaceable test; junit and -ra intact.
    junit = tmp_path / "out" / "junit.xml"
    run = pytest_run(project, ep, "-ra", f"--junitxml={junit}")
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    counts = summary(out)
    assert counts == {
        "failed": 2,
        "passed": 10,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 1,
        "warning": 1,
        "error": 2,
    }, out
    # FAILURES carries the traceback, -ra the reasons, as locally.
    assert re.search(r"^_+ test_fail _+$", out, re.M) and "assert sum(values) == 7" in out, out
    assert "E       AssertionError: the sum is off" in out
    assert "SKIPPED [1] test_basic.py:12: not on this fleet" in out
    assert (
        "XFAIL test_basic.py::test_xfail - known bug" in out and "XPASS test_basic.py::test_xpass - maybe fixed" in out
    )
    assert "ERROR test_basic.py::test_needs_database - RuntimeError: no database here" in out
    assert "FAILED test_crash.py::test_kills_its_session - worker crashed while running" in out
    assert re.search(r"DeprecationWarning: old api", out)
    # The tpu test: an error with the broker's reason, at once (the fleet has workers, none with tpu).
    assert re.search(r"ERROR test_hw.py::test_on_tpu - dtf: no live worker can run this test.*hardware", out), out
    assert "requires.hardware=tpu: no live worker has it" in out

    # The cuda test ran on the cuda worker, and only there.
    job = job_of(out)
    with cluster.client() as client:
        ran_on = {
            row["nodeid"]: task["worker_id"]
            for task in client.results(job)
            for row in ((task.get("result") or {}).get("tests") or [])
        }
    assert ran_on["test_hw.py::test_on_cuda"] == ran_on["test_hw.py::test_marked_cuda"] == "gpu1"
    assert ran_on["test_hw.py::test_gets_a_gpu_of_its_own"] == "gpu1"  # the only worker with GPUs
    assert "test_hw.py::test_on_tpu" not in ran_on
    assert ran_on["test_crash.py::test_after"] in {"w1", "w2", "gpu1"}  # the session came back

    # The controller's conftest saw every report: setup, call and teardown of each test that ran.
    seen = json.loads((project / "controller_reports.json").read_text())
    # One setup report per test, but the crashed one: its session died before it could send any.
    assert seen["setup"] == 16 and seen["call"] == 14, seen

    suites = ET.parse(junit).getroot()
    suite = suites.find("testsuite")
    assert suite is not None
    totals = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}
    assert totals == {"tests": "17", "failures": "2", "errors": "2", "skipped": "2"}, totals
    assert len(suite.findall("testcase")) == 17


def test_dtf_pytest_shorthand_and_exit_codes(make_cluster, tmp_path):
    project = make_project(tmp_path / "proj", PROJECT)
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    run = dtf("pytest", "-k", PORTABLE, "--broker", cluster.endpoint, "-ra", "-p", "no:cacheprovider", cwd=project)
    assert run.returncode == 1, run.stdout + run.stderr
    counts = summary(run.stdout)
    assert counts["failed"] == 1 and counts["passed"] == 7 and counts["xfailed"] == 1, run.stdout
    seen = json.loads((project / "controller_reports.json").read_text())
    assert seen["setup"] == 12, seen

    ok = dtf("pytest", "test_basic.py::TestGroup", f"--broker={cluster.endpoint}", "-q", cwd=project)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert summary(ok.stdout) == {"passed": 3}

    none = dtf("pytest", "-k", "no_such_test", "--broker", cluster.endpoint, cwd=project)
    assert none.returncode == 5, none.stdout + none.stderr

    make_project(tmp_path / "broken", {"pytest.ini": "[pytest]\n", "test_broken.py": "import no_such_module\n"})
    broken = dtf("pytest", "--broker", cluster.endpoint, cwd=tmp_path / "broken")
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "ERROR collecting test_broken.py" in broken.stdout and "1 error during collection" in broken.stdout

    unreachable = dtf("pytest", "--broker", "tcp://127.0.0.1:1", "--timeout-connect", "0.5", cwd=project)
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert unreachable.stderr.strip().splitlines() == ["dtf: broker at tcp://127.0.0.1:1 did not answer within 0.5s"]
    plain = pytest_run(project, "--dtf=tcp://127.0.0.1:1", "--dtf-connect-timeout=0.5")
    assert plain.returncode == 3 and "did not answer" in plain.stderr


SLOW = {
    "pytest.ini": "[pytest]\n",
    "test_slow.py": textwrap.dedent("""
        import time

        def test_first_fails():
            assert False, "broken"

        def test_slow_0():
            time.sleep(0.3)
    """)
    + "".join(f"\ndef test_slow_{i}():\n    time.sleep(0.3)\n" for i in range(1, 30)),
    "test_flaky.py": """
        from pathlib import Path

        def test_flaky():
            marker = Path(__file__).with_name("flaky.count")
            tries = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(tries + 1))
            assert tries >= 1, "fails the first time only"
    """,
}


def test_exitfirst_last_failed_and_reruns(make_cluster, tmp_path):
    project = make_project(tmp_path / "slow", SLOW)
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    ep = f"--dtf={cluster.endpoint}"

    # -x: the first failure stops the run and cancels what the fleet has not run.
    first = pytest_run(project, ep, "-x", "test_slow.py")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "stopping after 1 failures" in first.stdout
    counts = summary(first.stdout)
    assert counts["failed"] == 1 and counts.get("passed", 0) < 30, first.stdout
    with cluster.client() as client:
        status = client.status(job_of(first.stdout))
    assert status["counts"].get("cancelled", 0) >= 1, status

    # --lf: the failures DuckDB holds for this rootdir, and only them.
    again = pytest_run(project, ep, "--lf", "test_slow.py")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "run-last-failure: rerun previous 1 failure" in again.stdout
    assert summary(again.stdout) == {"failed": 1, "deselected": 30}

    # --dtf-reruns: fails, reruns, passes; reported as a rerun then a pass, stored as flaky.
    flaky = pytest_run(project, ep, "--dtf-reruns=2", "test_flaky.py")
    assert flaky.returncode == 0, flaky.stdout + flaky.stderr
    assert summary(flaky.stdout) == {"passed": 1, "rerun": 1}
    assert re.search(r"^test_flaky.py R\.", flaky.stdout, re.M), flaky.stdout
    cluster.stop()
    outcomes = {o for (o,) in query(cluster.db, "select outcome from test_results where nodeid like '%test_flaky'")}
    assert outcomes == {"failed", "flaky"}, outcomes


SCOPED = {
    "pytest.ini": "[pytest]\n",
    "test_scoped.py": textwrap.dedent("""
        from pathlib import Path
        import pytest

        @pytest.fixture(scope="module")
        def resource():
            with Path(__file__).with_name("setups.txt").open("a") as fh:
                fh.write("setup\\n")
            return 42
    """)
    + "".join(f"\ndef test_uses_{i}(resource):\n    assert resource == 42\n" for i in range(12)),
    "test_other.py": "".join(f"\ndef test_other_{i}():\n    pass\n" for i in range(12)),
}


def test_loadscope_sets_up_a_module_fixture_once(make_cluster, tmp_path):
    project = make_project(tmp_path / "scoped", SCOPED)
    cluster = make_cluster(workers={"w1": {}, "w2": {}})
    run = pytest_run(project, f"--dtf={cluster.endpoint}", "--dtf-dist=loadscope", "-v")
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary(run.stdout) == {"passed": 24}
    assert (project / "setups.txt").read_text().splitlines() == ["setup"]
    assert run.stdout.count(" PASSED") == 24


def test_each_report_shows_as_its_test_finishes_not_when_its_batch_ends(make_cluster, tmp_path):
    """Two tests in one task (loadfile): the first is on the controller's screen while the
    second still runs, waiting for a file only this test creates once it has seen the first."""
    release = tmp_path / "release"
    project = make_project(
        tmp_path / "proj",
        {
            "test_stream.py": f"""
                import os, time

                def test_first():
                    pass

                def test_second():
                    deadline = time.monotonic() + 60
                    while not os.path.exists({str(release)!r}):
                        assert time.monotonic() < deadline, "never released"
                        time.sleep(0.02)
            """
        },
    )
    cluster = make_cluster(workers={"w1": {}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", f"--dtf={cluster.endpoint}",
         "--dtf-dist=loadfile"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**environ(), "PYTHONUNBUFFERED": "1"},  # each line as a terminal would get it
    )  # fmt: skip
    seen = ""
    try:
        deadline = time.monotonic() + 60
        while "test_stream.py::test_first PASSED" not in seen:  # -v ends the line when the next test starts
            assert time.monotonic() < deadline and proc.poll() is None, seen
            chunk = os.read(proc.stdout.fileno(), 4096)
            seen += chunk.decode(errors="replace")
        assert "test_second" not in seen  # still running: its batch has not ended
        release.touch()
        rest = seen + proc.stdout.read()
        assert proc.wait(timeout=60) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "test_stream.py::test_second PASSED" in rest
    assert summary(rest) == {"passed": 2}
