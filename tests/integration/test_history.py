"""Run history through the real CLI, a real broker and its DuckDB file: two runs of a tiny suite on
two commits of a git repository made here, one test changed between them, then what a test lead
asks: `dtf jobs` (commit, branch, dirty, labels), `dtf compare` (a CI gate: exit 1), `dtf flaky`,
`dtf history`; and benchmark rows compared across runs.

One cluster serves the module (the runs build on each other); each step is its own test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dtf_bus import runmeta
from dtf_bus.testing.cluster import LocalCluster, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DTF = shutil.which("dtf", path=os.path.dirname(sys.executable)) or str(ROOT / "bin" / "dtf")

V1 = """
    import time
    from pathlib import Path

    def test_stable():
        pass

    def test_breaks():
        assert 1 + 1 == 2

    def test_heals():
        assert False, "broken in v1"

    def test_removed():
        pass

    def test_slow():
        time.sleep(0)

    def test_flaky():
        pass
"""
V2 = (
    V1.replace("assert 1 + 1 == 2", 'assert 1 + 1 == 3, "broken in v2"')
    .replace('assert False, "broken in v1"', "pass")
    .replace("def test_removed():\n        pass\n", "def test_added():\n        pass\n")
    .replace("time.sleep(0)", "time.sleep(0.8)")
    .replace(
        "def test_flaky():\n        pass\n",
        "def test_flaky():\n"
        '        marker = Path(__file__).with_name("flaky.count")\n'
        "        tries = int(marker.read_text()) if marker.exists() else 0\n"
        "        marker.write_text(str(tries + 1))\n"
        '        assert tries >= 1, "fails the first time only"\n',
    )
)
BENCH = """
    def measure(ms):
        return {"benchmarks": [{"name": "matmul", "params": {"n": 8}, "latency_ms": {"p50": ms, "p90": ms},
                                "iterations": 5, "unit": "GFLOP/s", "throughput": 100 / ms}],
                "environment": {"device": "test-cpu"}}
"""


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DTF_", "GIT_"))}
    env.update(COLUMNS="200", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


def run(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ())


def git(repo: Path, *args: str) -> str:
    done = run("git", *args, cwd=repo)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit(repo: Path, suite: str, message: str) -> str:
    (repo / "test_suite.py").write_text(textwrap.dedent(suite))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Repo:
    """The module's cluster, repository and what the steps learnt (jobs, commits)."""

    def __init__(self, cluster: LocalCluster, path: Path) -> None:
        self.cluster, self.path = cluster, path
        self.commits: list[str] = []
        self.jobs: list[str] = []

    def dtf(self, *args: str) -> subprocess.CompletedProcess:
        return run(DTF, *args, "--broker", self.cluster.endpoint, cwd=self.path)

    def json(self, *args: str, code: int = 0) -> object:
        done = self.dtf(*args, "--json")
        assert done.returncode == code, done.stdout + done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("history")
    path = base / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "pytest.ini").write_text("[pytest]\n")
    (path / ".gitignore").write_text("flaky.count\n__pycache__/\n")
    (path / "bench_mod.py").write_text(textwrap.dedent(BENCH))
    cluster = LocalCluster(base / "cluster", heartbeat_interval=0.2, heartbeat_liveness=5)
    try:
        cluster.start_broker()
        cluster.start_worker("w1", slots=2)
        cluster.wait_for_workers(["w1"])
        yield Repo(cluster, path)
    finally:
        cluster.stop()


def job_of(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("dtf: job "))
    return line.split()[2].rstrip(":")


def test_two_runs_on_two_commits_are_two_jobs_with_their_commit(repo):
    repo.commits.append(commit(repo.path, V1, "v1"))
    first = run(DTF, "pytest", "--broker", repo.cluster.endpoint, "--label", "suite=tiny", cwd=repo.path)
    assert first.returncode == 1, first.stdout + first.stderr  # test_heals fails in v1
    repo.jobs.append(job_of(first.stdout))

    repo.commits.append(commit(repo.path, V2, "v2"))
    ep = f"--dtf={repo.cluster.endpoint}"
    second = run(sys.executable, "-m", "pytest", ep, "--dtf-label=suite=tiny", "--dtf-reruns=1", cwd=repo.path)
    assert second.returncode == 1, second.stdout + second.stderr  # test_breaks fails; test_flaky on its first try
    assert "1 failed, 5 passed, 2 rerun" in second.stdout  # test_breaks failed its rerun too
    repo.jobs.append(job_of(second.stdout))

    # The store has a run's last rows within a flush of its end (and the tasks cancelled at its close).
    jobs = wait_for(
        lambda: (found := repo.json("jobs", "--label", "suite=tiny")) and all(j["done"] for j in found) and found,
        10,
        "both runs done in the store",
    )
    assert [j["job_id"] for j in jobs] == repo.jobs[::-1]  # newest first
    for job, sha in zip(jobs, repo.commits[::-1], strict=True):
        assert job["commit"] == sha and len(sha) == 40
        assert job["branch"] == "main" and job["dirty"] is False and job["commit_time"] > 0
        assert job["labels"] == {"suite": "tiny"}
        assert job["done"] and job["finished"] == job["total"] and job["name"].startswith("pytest")
    assert repo.json("jobs", "--label", "suite=other") == []
    assert [j["job_id"] for j in repo.json("jobs", "--commit", repo.commits[0][:8])] == repo.jobs[:1]
    table = repo.dtf("jobs", "--limit", "1")
    assert table.returncode == 0 and repo.jobs[1] in table.stdout and f"main@{repo.commits[1][:10]}" in table.stdout


def test_compare_lists_what_changed_and_fails_the_gate(repo):
    assert len(repo.jobs) == 2, "needs the runs of the test before"
    result = repo.json("compare", "--label", "suite=tiny", "--slower-absolute", "0.3", code=1)
    assert (result["a"]["job_id"], result["b"]["job_id"]) == tuple(repo.jobs)
    names = {key: [t["nodeid"] for t in result[key]] for key in ("new_failures", "fixed", "added", "removed")}
    assert names == {
        "new_failures": ["test_suite.py::test_breaks"],
        "fixed": ["test_suite.py::test_heals"],
        "added": ["test_suite.py::test_added"],
        "removed": ["test_suite.py::test_removed"],
    }  # test_flaky passed in v1 and passed on its rerun in v2: no change
    broken = result["new_failures"][0]
    assert broken["was"] == "passed" and "broken in v2" in broken["message"]
    assert "assert 1 + 1 == 3" in broken["details"]  # the traceback
    assert [s["nodeid"] for s in result["slower"]] == ["test_suite.py::test_slow"]
    assert result["slower"][0]["b_s"] >= 0.8 and result["slower"][0]["runs"] == 1
    assert result["benchmark_regressions"] == [] and result["regressed"] is True

    # The same by job ids, as text; and B against the run before it.
    text = repo.dtf("compare", *repo.jobs)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "new failures: 1" in text.stdout and "FAILED test_suite.py::test_breaks (was passed)" in text.stdout
    assert text.stdout.rstrip().endswith("REGRESSED")
    assert repo.json("compare", repo.jobs[1], code=1)["a"]["job_id"] == repo.jobs[0]
    # Back from v2 to v1: test_heals is a new failure again, test_breaks fixed; nothing is slower.
    back = repo.json("compare", repo.jobs[1], repo.jobs[0], code=1)
    assert [t["nodeid"] for t in back["fixed"]] == ["test_suite.py::test_breaks"] and back["slower"] == []
    # Against itself nothing changed: exit 0.
    same = repo.json("compare", repo.jobs[0], f"commit:{repo.commits[0]}", code=0)
    assert not any(same[key] for key in ("new_failures", "fixed", "added", "removed", "slower"))

    unknown = repo.dtf("compare", "nosuchjob", repo.jobs[0])
    assert unknown.returncode == 2 and unknown.stderr.strip() == "dtf compare: unknown job 'nosuchjob'"
    lonely = repo.dtf("compare", "--label", "suite=nothing")
    assert lonely.returncode == 2 and "0 job(s) match the filters; compare needs two" in lonely.stderr


def test_flaky_and_a_tests_history(repo):
    assert len(repo.jobs) == 2, "needs the runs of the first test"
    flaky = {t["nodeid"]: t for t in repo.json("flaky", "--since", "1d")}
    assert list(flaky) == ["test_suite.py::test_flaky"], flaky
    assert flaky["test_suite.py::test_flaky"]["passed_on_rerun"] == 1

    history = repo.json("history", "test_slow")  # the end of a node id names it
    assert history["nodeid"] == "test_suite.py::test_slow"
    assert [r["commit"] for r in history["runs"]] == repo.commits[::-1]
    assert [r["outcome"] for r in history["runs"]] == ["passed", "passed"]
    assert history["runs"][0]["duration_s"] >= 0.8 > history["runs"][1]["duration_s"]
    assert sum(h["runs"] for h in history["hardware"].values()) == 2
    shown = repo.dtf("history", "test_suite.py::test_breaks")
    assert shown.returncode == 0 and "failed" in shown.stdout and "passed" in shown.stdout
    vague = repo.dtf("history", "test_")
    assert vague.returncode == 2 and "matches" in vague.stderr and "test_suite.py::test_added" in vague.stderr


def test_a_dirty_checkout_and_benchmarks_across_runs(repo):
    spec = repo.path / "bench.toml"
    jobs = []
    for ms in (10.0, 10.2, 20.0):
        spec.write_text(
            'name = "bench"\n[[tasks]]\nname = "matmul"\nplugin = "python"\n'
            f'params = {{ target = "bench_mod:measure", cwd = "{repo.path}", params = {{ ms = {ms} }} }}\n'
        )
        done = repo.json("submit", str(spec), "--wait", "--label", "kind=bench")
        assert done["succeeded"] == 1, done
        assert done["meta"]["dirty"] is False  # bench.toml is untracked: not a change of the code
        jobs.append(done["job_id"])
    assert repo.json("compare", jobs[0], jobs[1])["benchmark_regressions"] == []
    (slowed,) = repo.json("compare", jobs[1], jobs[2], code=1)["benchmark_regressions"]
    assert (slowed["benchmark"], slowed["params"], slowed["hardware"]) == ("matmul", {"n": 8}, "test-cpu")
    assert slowed["metric"] == "p50_ms" and slowed["worse_by"] == pytest.approx(20.0 / 10.2 - 1)

    (repo.path / "bench_mod.py").write_text(textwrap.dedent(BENCH) + "\n# edited\n")
    dirty = repo.json("submit", str(spec), "--label", "kind=dirty")
    (job,) = repo.json("jobs", "--label", "kind=dirty")
    assert job["job_id"] == dirty["job_id"] and job["dirty"] is True and job["commit"] == repo.commits[-1]


def test_no_git_means_no_metadata_never_an_error(tmp_path, monkeypatch):
    assert runmeta.git_info(tmp_path) == {}  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert runmeta.collect(ROOT, {"k": "v"}) == {"labels": {"k": "v"}}
