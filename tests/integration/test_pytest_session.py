"""The pytest-session executor on real pytest sessions, called directly as a worker's task thread
would (no broker): a temp project with every outcome, fixtures across batches, a test that kills
its session, cancel, the idle reaper, and a worker that exits or dies under its sessions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from _pytest.reports import TestReport

from dtf_bus.plugins import TaskContext, TaskFailed
from dtf_bus.testing.cluster import wait_for
from dtf_plugins.pytest_session import PytestSessionExecutor

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROJECT = {
    "pytest.ini": """
        [pytest]
        dtf_markers =
            gpu = hardware=cuda min_memory_gb=16
    """,
    "test_outcomes.py": """
        import warnings
        import pytest

        def test_pass():
            pass

        def test_fail():
            value = 2 + 2
            assert value == 5, "arithmetic is broken"

        @pytest.mark.skip(reason="not on this fleet")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="maybe fixed")
        def test_xpass():
            pass

        @pytest.fixture
        def db():
            raise RuntimeError("no database")

        def test_fixture_error(db):
            pass

        def test_warns():
            print("noise on stdout")
            warnings.warn("careful now", UserWarning)
    """,
    "test_scope.py": """
        import os
        import pytest

        LOG = os.path.join(os.path.dirname(__file__), "scope.log")

        @pytest.fixture(scope="module")
        def resource():
            with open(LOG, "a") as fh:
                fh.write("setup\\n")
            yield
            with open(LOG, "a") as fh:
                fh.write("teardown\\n")

        def test_one(resource):
            pass

        def test_two(resource):
            pass

        def test_three(resource):
            pass
    """,
    "test_crash.py": """
        import os

        def test_before():
            pass

        def test_exit():
            os._exit(3)

        def test_after():
            pass
    """,
    "test_marks.py": """
        import pytest

        @pytest.mark.gpu
        def test_gpu():
            pass

        @pytest.mark.dtf(requires={"hardware": "rocm", "pool": "x"})
        @pytest.mark.xdist_group("db")
        class TestRouted:
            @pytest.mark.dtf(requires={"pool": "y"})
            def test_closest_wins(self):
                pass
    """,
    "test_slow.py": """
        import os
        import subprocess
        import sys
        import time

        def test_sleeps():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            with open(os.environ["SLOW_PIDS"], "w") as fh:
                fh.write(f"{os.getpid()} {child.pid}")
            time.sleep(300)
    """,
    "test_teardown_error.py": """
        import pytest

        @pytest.fixture(scope="module")
        def fragile():
            yield
            raise OSError("could not release the device")

        def test_uses_fragile(fragile):
            pass

        def test_also_fragile(fragile):
            pass
    """,
}


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in PROJECT.items():
        path = root / name
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "suite")


@pytest.fixture
def executor() -> Any:
    ex = PytestSessionExecutor()
    yield ex
    ex.close(grace=1.0)


def context(project: Path, session: str = "s", caps: dict | None = None, **params: Any) -> TaskContext:
    params = {"session": session, "rootdir": str(project), "args": [], **params}
    return TaskContext("task", 1, "w1", params, None, caps or {})


def collect(executor: Any, project: Path, **params: Any) -> dict[str, Any]:
    return executor.run(context(project, mode="collect", **params))


def run(executor: Any, project: Path, nodeids: list[str], **params: Any) -> dict[str, Any]:
    return executor.run(context(project, mode="run", nodeids=nodeids, **params))


def rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["nodeid"]: row for row in result["tests"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_collection_answers_items_requirements_groups_and_scopes(executor, project):
    result = collect(executor, project, marker_requires={"slow": {"pool": "big"}})
    items = {item["nodeid"]: item for item in result["collected"]["items"]}
    assert result["collected"]["count"] == len(items) == 18
    assert len(result["collected"]["digest"]) == 40
    gpu = items["test_marks.py::test_gpu"]
    assert gpu["requires"] == {"hardware": "cuda", "min_memory_gb": 16}
    routed = items["test_marks.py::TestRouted::test_closest_wins"]
    assert routed["requires"] == {"hardware": "rocm", "pool": "y"}
    assert routed["group"] == "db" and routed["scope"] == "test_marks.py::TestRouted"
    assert items["test_scope.py::test_one"]["scope"] == "test_scope.py"
    assert items["test_scope.py::test_one"]["requires"] == {} and items["test_scope.py::test_one"]["group"] is None
    assert items["test_outcomes.py::test_fail"]["location"] == ["test_outcomes.py", 7, "test_fail"]
    assert result["session"]["rootdir"] == str(project) and result["session"]["pytest"] == pytest.__version__
    assert result["tests"] == [] and result["crashed"] == []
    assert not (project / ".pytest_cache").exists()  # the worker's checkout is not written to


def test_every_outcome_streams_pytests_own_reports(executor, project):
    ids = [f"test_outcomes.py::{name}" for name in ("test_pass", "test_fail", "test_skip", "test_xfail")]
    ids += [f"test_outcomes.py::{name}" for name in ("test_xpass", "test_fixture_error", "test_warns")]
    result = run(executor, project, ids)
    got = rows(result)
    assert [row["nodeid"] for row in result["tests"]] == ids
    assert {n.split("::")[1]: (r["outcome"], r["phase"]) for n, r in got.items()} == {
        "test_pass": ("passed", "call"),
        "test_fail": ("failed", "call"),
        "test_skip": ("skipped", "setup"),
        "test_xfail": ("xfailed", "call"),
        "test_xpass": ("xpassed", "call"),
        "test_fixture_error": ("error", "setup"),
        "test_warns": ("passed", "call"),
    }
    failed = got["test_outcomes.py::test_fail"]
    assert "arithmetic is broken" in failed["message"] and "assert 4 == 5" in failed["details"]
    assert got["test_outcomes.py::test_skip"]["message"] == "Skipped: not on this fleet"
    assert got["test_outcomes.py::test_xfail"]["message"] == "known bug"
    assert "no database" in got["test_outcomes.py::test_fixture_error"]["details"]

    kinds = [r["kind"] for r in result["reports"]]
    assert kinds.count("start") == kinds.count("finish") == len(ids)
    assert kinds.count("test") == 3 * len(ids) - 2  # a skip and an error in setup: no call phase
    rebuilt = [TestReport._from_json(r["data"]) for r in result["reports"] if r["kind"] == "test"]
    call = next(r for r in rebuilt if r.nodeid.endswith("test_fail") and r.when == "call")
    assert "arithmetic is broken" in call.longreprtext and "def test_fail" in call.longreprtext
    xfail = next(r for r in rebuilt if r.nodeid.endswith("test_xfail") and r.when == "call")
    assert xfail.skipped and xfail.wasxfail == "known bug"
    warns = next(r for r in rebuilt if r.nodeid.endswith("test_warns") and r.when == "call")
    assert ("Captured stdout call", "noise on stdout\n") in [tuple(s) for s in warns.sections]
    warning = next(r["data"] for r in result["reports"] if r["kind"] == "warning")
    assert warning["message"] == "careful now" and warning["category"] == "UserWarning"
    assert warning["nodeid"] == "test_outcomes.py::test_warns"
    assert result["crashed"] == [] and result["collected"]["count"] == 18


def test_module_fixture_lives_across_batches_and_is_torn_down_when_the_run_moves_on(executor, project):
    log = project / "scope.log"
    run(executor, project, ["test_scope.py::test_one"])
    run(executor, project, ["test_scope.py::test_two"])  # the guess was right: nothing torn down
    assert log.read_text().split() == ["setup"]
    run(executor, project, ["test_crash.py::test_before"])  # elsewhere: the module is torn down first
    assert log.read_text().split() == ["setup", "teardown"]
    run(executor, project, ["test_scope.py::test_three"])  # the last item: torn down in its batch
    assert log.read_text().split() == ["setup", "teardown", "setup", "teardown"]


def test_teardown_error_when_switching_batches_is_the_previous_tests_teardown_report(executor, project):
    first = run(executor, project, ["test_teardown_error.py::test_uses_fragile"])
    assert rows(first)["test_teardown_error.py::test_uses_fragile"]["outcome"] == "passed"
    second = run(executor, project, ["test_crash.py::test_before"])
    got = rows(second)
    late = got["test_teardown_error.py::test_uses_fragile"]
    assert (late["outcome"], late["phase"]) == ("error", "teardown")
    assert "could not release the device" in late["details"]
    assert got["test_crash.py::test_before"]["outcome"] == "passed"
    report = TestReport._from_json(next(r["data"] for r in second["reports"] if r["kind"] == "test"))
    assert report.nodeid == "test_teardown_error.py::test_uses_fragile" and report.when == "teardown"


def test_a_test_that_kills_its_session_fails_and_the_batch_goes_on(executor, project):
    ids = ["test_crash.py::test_before", "test_crash.py::test_exit", "test_crash.py::test_after"]
    first_pid = collect(executor, project)["session"]["pid"]
    result = run(executor, project, ids)
    got = rows(result)
    assert [r["outcome"] for r in result["tests"]] == ["passed", "failed", "passed"]
    assert got["test_crash.py::test_exit"]["message"] == "worker crashed while running test_crash.py::test_exit"
    assert "session exited with code 3" in got["test_crash.py::test_exit"]["details"]
    assert result["crashed"] == ["test_crash.py::test_exit"]
    assert result["session"]["pid"] != first_pid  # restarted
    crash = next(r["data"] for r in result["reports"] if r["kind"] == "test" and r["data"]["nodeid"].endswith("exit"))
    assert TestReport._from_json(crash).failed
    assert not alive(first_pid)


def test_node_ids_the_session_did_not_collect_fail_the_task_naming_them(executor, project):
    missing = r"2 node id\(s\) not collected.*test_gone\.py::test_a, test_outcomes\.py::nope"
    with pytest.raises(TaskFailed, match=missing):
        run(executor, project, ["test_outcomes.py::test_pass", "test_gone.py::test_a", "test_outcomes.py::nope"])
    # The session is fine and stays in the pool for the next task.
    assert rows(run(executor, project, ["test_outcomes.py::test_pass"]))["test_outcomes.py::test_pass"]


def test_collection_errors_fail_the_collect_task_with_their_reports(executor, project):
    (project / "test_broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(TaskFailed, match=r"1 error.* during collection: test_broken\.py") as failed:
        collect(executor, project)
    reports = failed.value.result["reports"]
    assert [r["kind"] for r in reports] == ["collect"]
    assert "no_such_module_here" in str(reports[0]["data"]["longrepr"])


def test_a_bad_interpreter_or_usage_fails_the_task_saying_why(executor, project):
    with pytest.raises(TaskFailed, match="cannot start /no/such/python"):
        collect(executor, project, python="/no/such/python")
    with pytest.raises(TaskFailed, match=r"pytest ended before collecting.*--no-such-option"):
        collect(executor, project, args=["--no-such-option"])


def test_rootdir_map_lets_a_worker_hold_the_suite_elsewhere(executor, project):
    caps = {"rootdir_map": {"/ci/checkout": str(project)}}
    ctx = context(project, caps=caps, mode="run", nodeids=["test_outcomes.py::test_pass"])
    ctx.params["rootdir"] = "/ci/checkout"
    result = executor.run(ctx)
    assert result["session"]["rootdir"] == str(project)
    assert rows(result)["test_outcomes.py::test_pass"]["outcome"] == "passed"


def test_cancel_kills_the_sessions_process_group(executor, project, tmp_path):
    pids_file = tmp_path / "pids"
    ctx = context(project, mode="run", nodeids=["test_slow.py::test_sleeps"], env={"SLOW_PIDS": str(pids_file)})
    outcome: dict[str, Any] = {}

    def task() -> None:
        try:
            outcome["result"] = executor.run(ctx)
        except TaskFailed as exc:
            outcome["failed"] = exc

    thread = threading.Thread(target=task)
    thread.start()
    text = wait_for(lambda: pids_file.exists() and pids_file.read_text(), 30, "the slow test to start")
    session_pid, child_pid = map(int, text.split())
    ctx.cancel("cancelled")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "cancelled" in str(outcome["failed"])
    wait_for(lambda: not alive(session_pid) and not alive(child_pid), 10, "the session's group to die")
    # The next task of that key gets a fresh session.
    fresh = run(executor, project, ["test_outcomes.py::test_pass"], env={"SLOW_PIDS": str(pids_file)})
    assert fresh["session"]["pid"] != session_pid


def test_idle_sessions_are_shut_down(project):
    executor = PytestSessionExecutor(idle=0.3)
    try:
        pid = collect(executor, project)["session"]["pid"]
        wait_for(lambda: not alive(pid), 15, "the idle session to be shut down")
        assert executor.pool.live == set()
    finally:
        executor.close(grace=1.0)


def test_sessions_of_one_key_run_concurrently(executor, project):
    ids = [["test_outcomes.py::test_pass"], ["test_scope.py::test_one"], ["test_crash.py::test_before"]]
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda n=n: results.append(run(executor, project, n))) for n in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r["tests"][0]["nodeid"] for r in results) == sorted(n[0] for n in ids)
    assert all(r["tests"][0]["outcome"] == "passed" for r in results)


WORKER_SCRIPT = """
import sys, time
from dtf_bus.plugins import TaskContext
from dtf_plugins.pytest_session import PytestSessionExecutor

executor = PytestSessionExecutor()
ctx = TaskContext("t", 1, "w", {"session": "s", "rootdir": sys.argv[1], "args": [], "mode": "collect"}, None, {})
print(executor.run(ctx)["session"]["pid"], flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)
time.sleep(300)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_worker_that_exits_or_dies_leaves_no_session_behind(project, how):
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(project), how],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(proc.stdout.readline())
        assert alive(pid)
        if how == "sigkill":
            proc.send_signal(signal.SIGKILL)  # no atexit: the session sees EOF on its commands
        proc.wait(timeout=30)
        wait_for(lambda: not alive(pid), 15, "the session to end with its worker")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_real_worker_runs_sessions_and_its_drain_ends_them(make_cluster, project):
    """Through a broker and a 2-slot worker: collect, then two run tasks that reuse the sessions;
    the worker's drain (SIGTERM) exits it and takes its sessions along."""
    cluster = make_cluster(workers={"w1": {"slots": 2}})
    base = {"session": "job-1", "rootdir": str(project), "args": []}
    with cluster.client() as client:
        job = client.submit([{"name": "collect", "plugin": "pytest-session", "params": {**base, "mode": "collect"}}])
        client.wait(job, timeout=60)
        [collected] = client.results(job)
        assert collected["state"] == "succeeded", collected
        pid = collected["result"]["session"]["pid"]
        batches = [["test_outcomes.py::test_pass", "test_outcomes.py::test_xfail"], ["test_scope.py::test_one"]]
        tasks = [
            {"name": f"run{i}", "plugin": "pytest-session", "params": {**base, "mode": "run", "nodeids": ids}}
            for i, ids in enumerate(batches)
        ]
        job = client.submit(tasks)
        client.wait(job, timeout=60)
        results = {r["name"]: r for r in client.results(job)}
    assert all(r["state"] == "succeeded" for r in results.values()), results
    outcomes = {row["nodeid"]: row["outcome"] for r in results.values() for row in r["result"]["tests"]}
    assert outcomes == {
        "test_outcomes.py::test_pass": "passed",
        "test_outcomes.py::test_xfail": "xfailed",
        "test_scope.py::test_one": "passed",
    }
    pids = {r["result"]["session"]["pid"] for r in results.values()}
    assert pid in pids  # the collect task's session served a run task
    cluster.workers["w1"].popen.send_signal(signal.SIGTERM)
    cluster.workers["w1"].popen.wait(timeout=30)
    wait_for(lambda: not any(alive(p) for p in pids | {pid}), 15, "the worker's sessions to end")
