"""The executor plugins on a real cluster: pytest, python, cpu, cuda, hardware detection.

Each test runs a real broker and real worker processes; `dtf` is the installed console script,
and results are read back from the DuckDB file once the broker has stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from dtf_bus.testing.cluster import wait_for
from dtf_bus.worker import hardware

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


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
    params = {"targets": ["test_slow.py"], "cwd": str(project), "rootdir": str(project)}
    with cluster.client() as client:
        # Long enough for pytest to start and reach the test on a loaded 2-core machine.
        job = client.submit([{"name": "slow", "plugin": "pytest", "params": params, "timeout": 4}])
        client.wait(job, timeout=60)
        (task,) = client.results(job)
    assert task["state"] == "timed_out" and task["error"] == "timed out after 4.0s", task
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
