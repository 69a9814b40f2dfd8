"""What a task's command inherits from its worker: never the worker's keys or credentials."""

import threading

import pytest

from dtf_bus import plugins
from dtf_bus.plugins import TaskContext, run_process

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DTF_CURVE_SECRET", True),
        ("DTF_BROKER_KEY", True),
        ("DTF_API_KEY", True),
        ("DTF_API_TOKEN", True),
        ("DTF_DB_PASSWORD", True),
        ("DTF_BROKER", False),
        ("DTF_TASK_ID", False),
        ("HOME", False),
    ],
)
def test_secret_variables_are_named(name, secret):
    assert plugins.is_secret_variable(name) is secret


def test_a_command_never_sees_the_workers_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("DTF_CURVE_SECRET", "/keys/worker.key_secret")
    monkeypatch.setenv("DTF_API_TOKEN", "tok")
    monkeypatch.setenv("DTF_BROKER", "tcp://127.0.0.1:5555")
    ctx = TaskContext("j.0", 2, "w1", {}, None, {}, threading.Event())
    out = tmp_path / "env.txt"
    proc = run_process(ctx, f"env > {out}", env={"MINE": "kept"})
    assert proc.returncode == 0
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "DTF_CURVE_SECRET" not in seen and "DTF_API_TOKEN" not in seen
    assert seen["DTF_BROKER"] == "tcp://127.0.0.1:5555" and seen["MINE"] == "kept"
    assert (seen["DTF_TASK_ID"], seen["DTF_ATTEMPT"], seen["DTF_WORKER_ID"]) == ("j.0", "2", "w1")
