"""Code shipped to workers, end to end: a worker that cannot see the submitter's directory (a
mount namespace hides it under an empty tmpfs) runs a shipped shell task and a shipped pytest
suite; unchanged code crosses the wire once (the broker's counters say so); shipped requirements
become one venv per worker, built once however many tasks want it at the same time.

Real broker, workers and CLIs in subprocesses; the worker runs under ``unshare --mount`` (root),
and the test is skipped, saying why, where that is not allowed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_pytest_dist import make_project

pytestmark = pytest.mark.integration

# Runs the worker in a mount namespace of its own where "$0" (the submitter's side) is an empty tmpfs.
HIDE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"']

SUITE = {
    "pytest.ini": "[pytest]\n",
    "conftest.py": """
        import pytest

        @pytest.fixture
        def greeting():
            with open(__file__.replace("conftest.py", "sub/data.txt")) as fh:
                return fh.read().strip()
    """,
    "tests/test_shipped.py": """
        import os

        SUBMITTED_FROM = os.environ.get("SUBMITTED_FROM", "")

        def test_reads_shipped_data(greeting):
            assert greeting == "hello shipped"

        def test_runs_outside_the_submitters_directory():
            assert SUBMITTED_FROM and not os.path.exists(SUBMITTED_FROM)
            assert not __file__.startswith(SUBMITTED_FROM)

        def test_fails_as_written():
            assert 1 + 1 == 3
    """,
    "sub/data.txt": "hello shipped\n",
}


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DTF_"))}
    return {**env, "COLUMNS": "200", **extra}


def namespaces_work(tmp_path: Path) -> str | None:
    """Why a mount namespace cannot hide a directory here, or None."""
    probe = tmp_path / "probe"
    (probe / "inside").mkdir(parents=True)
    try:
        proc = subprocess.run(
            [*HIDE, str(probe), "sh", "-c", f"test ! -e {probe}/inside"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return "unshare is not installed"
    return None if proc.returncode == 0 else f"unshare --mount is not allowed here: {proc.stderr.strip()[:200]}"


def dtf_submit(spec: Path, project: Path, endpoint: str, *extra: str) -> tuple[dict, str]:
    argv = [sys.executable, "-m", "dtf_bus.cli", "submit", str(spec), "--ship", str(project), "--wait", "--json"]
    proc = subprocess.run(
        [*argv, "--broker", endpoint, "--timeout", "60", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_a_worker_that_cannot_see_the_project_runs_it_shipped_and_unchanged_code_is_sent_once(tmp_path, make_cluster):
    why = namespaces_work(tmp_path)
    if why:
        pytest.skip(why)
    hidden = tmp_path / "client"
    project = make_project(hidden / "proj", SUITE)
    spec = project / "spec.toml"
    spec.write_text(
        '[[tasks]]\nname = "cat"\nplugin = "shell"\n'
        f'params = {{ cmd = "test ! -e {project}/sub/data.txt && cat data.txt", cwd = "sub" }}\n'
    )
    cluster = make_cluster()
    cluster.start_worker(
        "w1",
        wrap=[*HIDE, str(hidden)],
        extra_args=["--ship-cache", str(tmp_path / "cache")],
        env={"SUBMITTED_FROM": str(project)},
    )
    cluster.wait_for_workers(["w1"])

    status, stderr = dtf_submit(spec, project, cluster.endpoint)
    assert status["succeeded"] == 1, status
    assert "uploaded" in stderr
    with cluster.client() as client:
        (task,) = client.results(status["job_id"])
        first = client.ping()["ship"]
    assert task["result"]["stdout"] == "hello shipped\n"
    assert task["result"]["ship"]["cached"] is False and task["result"]["ship"]["fetched_bytes"] > 0
    assert first["uploads"] == 1 and first["received_bytes"] == first["stored_bytes"] > 0
    assert first["fetched_by"] == {"w1": first["stored_bytes"]}

    # The same code again: nothing is uploaded, nothing fetched; the worker's tree is reused.
    status, stderr = dtf_submit(spec, project, cluster.endpoint)
    assert status["succeeded"] == 1 and "already on the broker" in stderr
    with cluster.client() as client:
        (task,) = client.results(status["job_id"])
        second = client.ping()["ship"]
    assert task["result"]["ship"]["cached"] is True and task["result"]["ship"]["fetched_bytes"] == 0
    assert second["received_bytes"] == first["received_bytes"] and second["sent_bytes"] == first["sent_bytes"]

    # pytest --dtf --dtf-ship: the rootdir's project (the same files: still nothing sent).
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--dtf={cluster.endpoint}", "--dtf-ship", "-p", "no:cacheprovider", "-rA"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=environ(),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "2 passed" in output and "1 failed" in output, output
    assert "FAILED tests/test_shipped.py::test_fails_as_written" in output
    assert f"dtf: shipped {project} (" in output and "already on the broker" in output
    with cluster.client() as client:
        third = client.ping()["ship"]
    assert third["received_bytes"] == first["received_bytes"] and third["sent_bytes"] == first["sent_bytes"]


def wheel(path: Path, name: str, version: str, module: str) -> Path:
    """A pure-Python wheel, written by hand: pip installs it offline."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: dtf-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for file, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{file},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    out = path / f"{name}-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as zf:
        for file, text in files.items():
            zf.writestr(file, text)
    return out


def test_shipped_requirements_become_one_venv_built_once_for_concurrent_tasks(tmp_path, make_cluster):
    project = tmp_path / "proj"
    wheel(project / "wheels", "shipdemo", "1.0", "VALUE = 42\n")
    requirements = tmp_path / "requirements.txt"  # outside the project: it travels on its own
    requirements.write_text("./wheels/shipdemo-1.0-py3-none-any.whl\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[[tasks]]\nname = "import"\nplugin = "shell"\nrepeat = 2\n'
        'params = { cmd = "python -c \\"import shipdemo, sys; print(shipdemo.VALUE, sys.prefix)\\"" }\n'
    )
    cluster = make_cluster()
    # PIP_NO_INDEX: the test never reaches a package index, whatever pip's configuration says.
    cluster.start_worker("w1", slots=2, extra_args=["--ship-cache", str(tmp_path / "cache")], env={"PIP_NO_INDEX": "1"})
    cluster.wait_for_workers(["w1"])
    status, _ = dtf_submit(spec, project, cluster.endpoint, "--ship-requirements", str(requirements))
    with cluster.client() as client:
        tasks = client.results(status["job_id"])
    assert status["succeeded"] == 2, [(t["error"], (t["result"] or {}).get("stderr")) for t in tasks]
    venvs = {t["result"]["ship"]["venv"] for t in tasks}
    assert len(venvs) == 1
    (venv,) = venvs
    assert all(t["result"]["stdout"].split() == ["42", venv] for t in tasks)  # the venv's python ran it
    assert sorted(t["result"]["ship"]["venv_cached"] for t in tasks) == [False, True]  # built once


def test_shipping_mistakes_are_one_line_usage_errors_before_anything_is_sent(tmp_path):
    project = make_project(tmp_path / "proj", SUITE)
    spec = tmp_path / "spec.toml"
    spec.write_text('[[tasks]]\nname = "t"\nplugin = "shell"\nparams = { cmd = "true" }\n')
    nowhere = ["--broker", "tcp://127.0.0.1:9"]  # nothing listens: the checks come first

    def dtf(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "dtf_bus.cli", "submit", str(spec), *nowhere, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ())

    too_big = dtf("--ship", str(project), "--ship-max-bytes", "10")
    assert too_big.returncode == 2 and len(too_big.stderr.strip().splitlines()) == 1, too_big.stderr
    assert too_big.stderr.startswith(f"dtf submit: --ship: {project}: ") and "over the shipping limit" in too_big.stderr
    orphan = dtf("--ship-requirements", str(spec))
    assert orphan.returncode == 2
    assert orphan.stderr.strip() == "dtf submit: --ship: --ship-requirements needs --ship DIR"
    missing = dtf("--ship", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"dtf submit: --ship: {tmp_path / 'nope'}: not a directory"
