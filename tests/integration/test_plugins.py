"""The executor plugins on a real cluster: `dtf pytest`, python, cpu, cuda, hardware detection.

Each test runs a real broker and real worker processes; `dtf` is the installed console script,
and results are read back from the DuckDB file once the broker has stopped.
"""

from __future__ import annotations

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
import psutil
import pytest

from dtf_bus import hardware
from dtf_bus.cluster import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROJECT = {
    "pytest.ini": "[pytest]\n",
    "test_pass.py": """
        import pytest

        def test_one():
            assert 1 + 1 == 2

        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert n > 0

        @pytest.mark.skip(reason="not on this fleet")
        def test_skipped():
            pass
    """,
    "test_fail.py": """
        def test_ok():
            pass

        def test_wrong():
            assert 2 + 2 == 5, "arithmetic is broken"
    """,
    "sub/test_error.py": """
        import pytest

        @pytest.fixture
        def db():
            raise RuntimeError("no database")

        def test_needs_db(db):
            pass

        class TestGroup:
            def test_fine(self):
                pass
    """,
}


def dtf(*args: str, cwd: Path | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    exe = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def make_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_dtf_pytest_runs_a_suite_across_the_fleet(make_cluster, tmp_path):
    project = make_project(tmp_path / "proj", PROJECT)
    cluster = make_cluster(workers={"w1": {"slots": 2}, "w2": {}})
    report = tmp_path / "out" / "junit.xml"
    run = dtf("pytest", "--junitxml", str(report), "--broker", cluster.endpoint, cwd=project)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    job = re.search(r"job (\w+): 8 test\(s\) in 3 task\(s\)", out).group(1)
    assert re.search(r"=+ 1 failed, 5 passed, 1 skipped, 1 error in [\d.]+s =+", out), out
    failed = re.search(
        r"^FAILED test_fail.py::test_wrong \[(w1|w2)\] - AssertionError: arithmetic is broken$", out, re.M
    )
    assert failed, out
    assert re.search(
        r'^ERROR sub/test_error.py::test_needs_db \[(w1|w2)\] - failed on setup with "RuntimeError', out, re.M
    )
    assert re.search(r"^test_pass.py \.\.\.s ", out, re.M) and "[100%]" in out

    suites = ET.parse(report).getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors"), suites.get("skipped")) == (
        "8",
        "1",
        "1",
        "1",
    )
    assert {s.get("hostname") for s in suites.iter("testsuite")} <= {"w1", "w2"}
    names = {(c.get("classname"), c.get("name")) for c in suites.iter("testcase")}
    assert ("sub.test_error.TestGroup", "test_fine") in names and ("test_pass", "test_param[2]") in names

    # The same job as JUnit, straight from the broker.
    again = dtf("results", job, "--format", "junit", "--broker", cluster.endpoint)
    assert again.returncode == 0, again.stderr
    assert ET.fromstring(again.stdout).get("tests") == "8"

    cluster.stop()
    rows = query(cluster.db, f"select nodeid, outcome, worker_id, message from test_results where job_id = '{job}'")
    outcomes = {nodeid: outcome for nodeid, outcome, _, _ in rows}
    assert outcomes == {
        "test_pass.py::test_one": "passed",
        "test_pass.py::test_param[1]": "passed",
        "test_pass.py::test_param[2]": "passed",
        "test_pass.py::test_skipped": "skipped",
        "test_fail.py::test_ok": "passed",
        "test_fail.py::test_wrong": "failed",
        "sub/test_error.py::test_needs_db": "error",
        "sub/test_error.py::TestGroup::test_fine": "passed",
    }
    assert {worker for _, _, worker, _ in rows} <= {"w1", "w2"}
    assert any("arithmetic is broken" in (m or "") for n, _, _, m in rows if n.endswith("test_wrong"))
    assert query(cluster.db, f"select count(*) from tasks where job_id = '{job}' and plugin = 'pytest'") == [(3,)]


def test_dtf_pytest_exit_codes(make_cluster, tmp_path):
    project = make_project(tmp_path / "proj", PROJECT)
    cluster = make_cluster(workers={"w1": {"slots": 2}})
    ok = dtf("pytest", "-k", "not wrong and not needs_db", "--split", "test", "--broker", cluster.endpoint, cwd=project)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "in 6 task(s) (split by test)" in ok.stdout
    assert re.search(r"=+ 5 passed, 1 skipped in [\d.]+s =+", ok.stdout), ok.stdout

    none = dtf("pytest", "-k", "no_such_test", "--broker", cluster.endpoint, cwd=project)
    assert none.returncode == 5 and "no tests collected" in none.stdout

    make_project(tmp_path / "broken", {"pytest.ini": "[pytest]\n", "test_broken.py": "import no_such_module\n"})
    broken = dtf("pytest", "--broker", cluster.endpoint, cwd=tmp_path / "broken")
    assert broken.returncode == 2 and "error(s) during collection" in broken.stdout

    missing = dtf("pytest", "no_such_dir", "--broker", cluster.endpoint, cwd=project)
    assert missing.returncode == 4, missing.stdout + missing.stderr

    unreachable = dtf("pytest", "--broker", "tcp://127.0.0.1:1", "--timeout-connect", "0.5", cwd=project)
    assert unreachable.returncode == 3 and "did not answer" in unreachable.stderr


def test_pytest_task_timeout_kills_the_tests_and_their_children(make_cluster, tmp_path):
    pidfile = tmp_path / "child.pid"
    project = make_project(
        tmp_path / "slow",
        {
            "pytest.ini": "[pytest]\n",
            "test_slow.py": f"""
                import subprocess, time

                def test_hangs():
                    child = subprocess.Popen(["sleep", "60"])
                    open({str(pidfile)!r}, "w").write(str(child.pid))
                    time.sleep(60)
            """,
        },
    )
    cluster = make_cluster(workers={"w1": {}})
    # Long enough for pytest to start and reach the test on a loaded 2-core machine.
    run = dtf("pytest", "--timeout", "4", "--broker", cluster.endpoint, cwd=project)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"^ERROR test_slow.py \[w1\] - timed out after 4.0s$", run.stdout, re.M), run.stdout
    assert pidfile.exists(), "the test never started its child within the timeout"
    child = int(pidfile.read_text())
    wait_for(
        lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
        5,
        "the timed-out test's child process to be gone",
    )


def test_python_plugin_calls_a_function(make_cluster, tmp_path):
    (tmp_path / "userbench.py").write_text(
        textwrap.dedent(
            """
            import os, time

            def work(n, scale=1):
                started = time.perf_counter()
                total = sum(i * scale for i in range(n))
                took = time.perf_counter() - started
                return {
                    "total": total,
                    "pid": os.getpid(),
                    "benchmarks": [{"name": "sum", "params": {"n": n}, "iterations": 1,
                                    "latency_ms": {"p50": took * 1000, "p90": took * 1000, "p99": took * 1000},
                                    "throughput": n / took, "unit": "items/s"}],
                }

            def boom():
                raise ValueError("bad input")

            def opaque():
                return object()

            def deep():
                value = 0
                for _ in range(80):
                    value = [value]
                return value
            """
        )
    )
    cluster = make_cluster(workers={"w1": {"slots": 3}})
    base = {"plugin": "python"}
    tasks = [
        {
            **base,
            "name": "ok",
            "params": {"target": "userbench:work", "params": {"n": 1000, "scale": 2}, "cwd": str(tmp_path)},
        },
        {**base, "name": "raises", "params": {"target": "userbench:boom", "cwd": str(tmp_path)}},
        {**base, "name": "missing", "params": {"target": "no_such_module:f", "cwd": str(tmp_path)}},
        {**base, "name": "opaque", "params": {"target": "userbench:opaque", "cwd": str(tmp_path)}},
        # The broker refuses results nested deeper than its limit: the worker fails the task
        # saying so, instead of sending (and resending) what would never be accepted.
        {**base, "name": "deep", "params": {"target": "userbench:deep", "cwd": str(tmp_path)}},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        client.wait(job, timeout=60)
        results = {r["name"]: r for r in client.results(job)}
    ok = results["ok"]
    assert ok["state"] == "succeeded", ok
    assert ok["result"]["value"]["total"] == 2 * sum(range(1000))
    assert ok["result"]["value"]["pid"] != cluster.workers["w1"].pid  # it ran in a subprocess
    assert results["raises"]["state"] == "failed"
    assert results["raises"]["error"] == "python: userbench:boom raised ValueError: bad input"
    assert "Traceback" in results["raises"]["result"]["traceback"]
    assert results["missing"]["error"].startswith("python: cannot import no_such_module: ModuleNotFoundError")
    assert "not JSON-serialisable" in results["opaque"]["error"]
    assert results["deep"]["state"] == "failed"
    assert results["deep"]["error"].startswith("result not deliverable: task_result: results entry: field 'result'")
    cluster.stop()
    [(name, throughput, worker)] = query(
        cluster.db, f"select benchmark, throughput, worker_id from benchmark_results where job_id = '{job}'"
    )
    assert name == "sum" and throughput > 0 and worker == "w1"


def test_cpu_plugin_measures_real_numbers(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    params = {"matmul_n": 32, "memory_mb": 1, "iterations": 3, "warmup": 1}
    tasks = [
        {"name": "cpu", "plugin": "cpu", "params": params},
        {"name": "cpu-python", "plugin": "cpu", "params": {**params, "backend": "python", "matmul_n": 8}},
        {"name": "cpu-bad", "plugin": "cpu", "params": {"iterations": 0}},
    ]
    with cluster.client() as client:
        job = client.submit(tasks)
        client.wait(job, timeout=60)
        results = {r["name"]: r for r in client.results(job)}
    for name in ("cpu", "cpu-python"):
        assert results[name]["state"] == "succeeded", results[name]
        records = results[name]["result"]["benchmarks"]
        assert {r["name"] for r in records} == {"matmul", "memory", "interpreter"}
        for r in records:
            lat = r["latency_ms"]
            assert r["throughput"] > 0 and r["iterations"] == 3
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert results["cpu"]["result"]["environment"]["python"]
    assert results["cpu-bad"]["error"] == "cpu: param 'iterations' must be an integer >= 1, got 0"
    cluster.stop()
    rows = query(
        cluster.db,
        f"select benchmark, precision, throughput, unit, hardware, worker_id from benchmark_results"
        f" where job_id = '{job}' order by task_id, seq",
    )
    assert len(rows) == len(results["cpu"]["result"]["benchmarks"]) + 3
    assert all(throughput > 0 and "cpu" in hw and worker == "w1" for _, _, throughput, _, hw, worker in rows)
    assert ("matmul", "fp64", "GFLOP/s") in {(b, p, u) for b, p, _, u, _, _ in rows}


@pytest.mark.skipif(bool(hardware.nvidia_gpus()), reason="this machine has a GPU: the no-GPU path cannot be shown")
def test_cuda_plugin_without_a_gpu_fails_with_a_clear_reason(make_cluster):
    cluster = make_cluster(workers={"w1": {}})
    with cluster.client() as client:
        job = client.submit([{"name": "gpu", "plugin": "cuda", "params": {"matmul_n": 64}}])
        client.wait(job, timeout=60)
        [result] = client.results(job)
    assert result["state"] == "failed"
    assert result["error"].startswith("cuda: no CUDA device available ("), result["error"]


def test_workers_advertise_detected_and_declared_hardware(make_cluster):
    started = time.monotonic()
    caps = hardware.detect()
    assert time.monotonic() - started < 10
    assert caps["hardware"][0] == "cpu" and caps["cpu_cores"] >= 1 and caps["memory_gb"] > 0
    assert hardware._run(["sleep", "5"], timeout=0.2) is None  # a hung tool is given up on
    tpu = ROOT / "configs" / "workers" / "tpu.toml"
    cluster = make_cluster(workers={"cpu-1": {}, "tpu-1": {"config": tpu, "capabilities": ["gpu_model=mock-X"]}})
    with cluster.client() as client:
        workers = {w["worker_id"]: w for w in client.workers()}
    declared = workers["tpu-1"]["capabilities"]
    assert workers["tpu-1"]["hardware"] == ["cpu", "tpu"] and declared["tpu_model"] == "mock-v5e"
    assert {"hardware", "tpu_model", "gpu_model"} <= set(declared["declared"])
    assert workers["cpu-1"]["capabilities"]["cpu_model"] == caps["cpu_model"]
    table = dtf("workers", "--broker", cluster.endpoint).stdout
    assert "DETAILS" in table.splitlines()[0] and "mock-X" in table and "speed 3" in table
