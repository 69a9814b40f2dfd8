"""The config merge at the command line: a mistake in a config file or a flag is one line on
stderr and exit 2, before anything binds or connects; flag > environment > file for the worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]

WORKER_KEYS = (
    "alive_file, broker, broker_key, curve_secret, heartbeat_interval, heartbeat_liveness, id, plugins, "
    "ship_cache, ship_cache_bytes, slots"
)


def command(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` with no DTF_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    argv = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env={**clean, **(env or {})})


def test_an_unknown_worker_key_exits_2_naming_it(tmp_path):
    path = tmp_path / "worker.toml"
    path.write_text('[worker]\nbroker = "tcp://127.0.0.1:1"\nslot = 4\n')
    run = command("dtf_bus.worker", "--config", str(path))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"dtf-worker: unknown key 'slot' in [worker] of {path}; known: {WORKER_KEYS}"
    ]


def test_an_unknown_broker_key_exits_2_naming_it(tmp_path):
    path = tmp_path / "broker.toml"
    path.write_text('[broker]\nbnid = "tcp://127.0.0.1:0"\n')
    run = command("dtf_bus.broker", "--config", str(path), "--db", str(tmp_path / "b.duckdb"))
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"dtf-broker: unknown key 'bnid' in [broker] of {path}; known: api_keys, authorized_keys, ")
    assert not (tmp_path / "b.duckdb").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["dtf_bus.worker", "--heartbeat-interval", "0", "--broker", "tcp://127.0.0.1:1"],
        ["dtf_bus.broker", "--heartbeat-interval", "0", "--bind", "tcp://127.0.0.1:0"],
    ],
)
def test_a_zero_heartbeat_interval_is_refused_by_worker_and_broker_alike(argv, tmp_path):
    """It used to mean the default in the worker (``0 or default``) and an error in the broker."""
    run = command(*argv, "--db", str(tmp_path / "b.duckdb")) if argv[0] == "dtf_bus.broker" else command(*argv)
    assert run.returncode == 2
    assert (
        run.stderr.strip().splitlines()[-1].endswith("heartbeat interval must be a positive number of seconds, got 0.0")
    )


def test_the_worker_endpoint_comes_from_the_flag_then_the_environment_then_the_file(tmp_path):
    """Endpoints without a transport, which the worker refuses naming where each came from."""
    path = tmp_path / "worker.toml"
    path.write_text('[worker]\nbroker = "file:1"\n')
    run = command("dtf_bus.worker", "--config", str(path))
    assert run.returncode == 2 and f"dtf-worker: broker in [worker] of {path} 'file:1': an endpoint" in run.stderr
    run = command("dtf_bus.worker", "--config", str(path), env={"DTF_BROKER": "env:1"})
    assert run.returncode == 2 and "dtf-worker: $DTF_BROKER 'env:1': an endpoint" in run.stderr
    run = command("dtf_bus.worker", "--config", str(path), "--broker", "flag:1", env={"DTF_BROKER": "env:1"})
    assert run.returncode == 2 and "dtf-worker: --broker 'flag:1': an endpoint" in run.stderr
