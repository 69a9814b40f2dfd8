"""A local cluster of real processes: one broker and N workers, each its own subprocess.

``dtf up`` uses it to bring up a demo fleet, and the tests use it (like Dask's
``gen_cluster``) to build a whole cluster per test on ephemeral ports in a temp dir, with
helpers to SIGKILL, SIGSTOP, restart and disconnect workers. Every process it starts is
tracked by pid and stopped by pid; nothing is ever killed by name.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_bus import defaults
from dtf_bus.client import Client
from dtf_bus.security import curve as security
from dtf_bus.security import keyfiles
from dtf_bus.testing import faults

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    pass


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 5.0, sig: int | None = None) -> None:
        """Signal (default SIGTERM), wait up to ``timeout``, then SIGKILL."""
        if self.popen is None:
            return
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)  # a stopped process cannot handle signals
            self.popen.send_signal(sig or signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        else:
            self.popen.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalCluster:
    def __init__(
        self,
        workdir: str | Path,
        db: str | Path | None = None,
        strategy: str | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_liveness: int | None = None,
        dead_liveness: int | None = None,
        bind: str = "tcp://127.0.0.1:0",
        metrics_bind: str = "tcp://127.0.0.1:0",
        log_level: str = "INFO",
        http: str | None = None,
        secure: bool = False,
        faults: bool = False,
    ) -> None:
        """``secure``: CURVE on, with keys made in ``workdir/keys`` (broker, client, one per worker).
        ``faults``: workers run with fault injection (:mod:`dtf_bus.testing.faults`), so that
        :meth:`close_worker_socket` works."""
        self.workdir = Path(workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.db = Path(db) if db else self.workdir / "dtf.duckdb"
        self.strategy = strategy
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self.dead_liveness = dead_liveness
        self.bind = bind
        self.metrics_bind = metrics_bind
        self.log_level = log_level
        self.broker: Proc | None = None
        self.workers: dict[str, Proc] = {}
        self.endpoint = ""
        self.metrics_endpoint = ""
        self.http = http  # HOST:PORT for the broker's HTTP API (port 0: any), or None for none
        self.http_url = ""
        # The API's token (webauth): the broker makes it beside the database on first start.
        self.api_token_file: Path | None = None
        self.api_token = ""
        self.dashboard: Proc | None = None
        self.dashboard_url = ""  # the page's address; start_dashboard returns it with ?token=
        self.secure = secure
        self.faults = faults
        self.keys_dir = self.workdir / "keys"
        self.authorized_dir = self.keys_dir / "authorized"  # the broker's --authorized-keys
        self.client_curve: security.ClientCurve | None = None
        if secure:
            self.broker_public, self.broker_secret = keyfiles.generate(self.keys_dir, "broker", overwrite=True)
            self.client_curve = security.client_curve(self.node_key("client", role="admin"), self.broker_public)

    # --------------------------------------------------------------- broker

    def start_broker(self, timeout: float = 15.0, extra_args: list[str] | None = None) -> None:
        ready = self.workdir / "broker.ready.json"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "dtf_bus.broker",
            "--bind",
            self.endpoint or self.bind,
            "--metrics-bind",
            self.metrics_endpoint or self.metrics_bind,
            "--db",
            str(self.db),
            "--ready-file",
            str(ready),
            "--log-level",
            self.log_level,
        ]
        if self.strategy:
            argv += ["--strategy", self.strategy]
        if self.heartbeat_interval is not None:
            argv += ["--heartbeat-interval", str(self.heartbeat_interval)]
        if self.heartbeat_liveness is not None:
            argv += ["--heartbeat-liveness", str(self.heartbeat_liveness)]
        if self.dead_liveness is not None:
            argv += ["--dead-liveness", str(self.dead_liveness)]
        if self.http:  # a restarted broker keeps the port it had
            argv += ["--http", self.http_url.partition("://")[2] or self.http]
        if self.secure:
            argv += ["--curve-secret", str(self.broker_secret), "--authorized-keys", str(self.authorized_dir)]
        argv += extra_args or []
        self.broker = self._spawn("broker", argv)

        def is_ready() -> bool:
            if not self.broker.alive():
                raise ClusterError(f"broker exited:\n{self.broker.log_tail()}")
            return ready.exists()

        wait_for(is_ready, timeout, "the broker to listen")
        info = json.loads(ready.read_text())
        self.endpoint, self.metrics_endpoint = info["endpoint"], info["metrics_endpoint"]
        self.http_url = info.get("http") or ""
        if info.get("http_token_file"):
            self.api_token_file = Path(info["http_token_file"])
            self.api_token = self.api_token_file.read_text().strip()

    def api_headers(self) -> dict[str, str]:
        """Headers that authorise a request to this cluster's HTTP API (as admin)."""
        return {"Authorization": f"Bearer {self.api_token}"}

    def kill_broker(self, sig: int = signal.SIGKILL) -> None:
        assert self.broker is not None
        self.broker.signal(sig)
        self.broker.popen.wait(10)

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    # -------------------------------------------------------------- workers

    def start_worker(
        self,
        worker_id: str,
        slots: int = 1,
        capabilities: list[str] | None = None,
        config: str | Path | None = None,
        extra_args: list[str] | None = None,
        authorized: bool = True,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
    ) -> Proc:
        """In a secure cluster the worker gets its own keypair, admitted unless ``authorized`` is False.
        ``env`` is added to this process's environment for the worker (CUDA_VISIBLE_DEVICES, PATH).
        ``wrap`` runs the worker's command line under another (``unshare ...``) that execs it."""
        argv = [
            sys.executable,
            "-m",
            "dtf_bus.testing.faults" if self.faults else "dtf_bus.worker",
            "--broker",
            self.endpoint,
            "--id",
            worker_id,
            "--slots",
            str(slots),
            "--log-level",
            self.log_level,
        ]
        if self.secure:
            secret = self.node_key(f"worker-{worker_id}", authorized, role="worker")
            argv += ["--curve-secret", str(secret), "--broker-key", str(self.broker_public)]
        for cap in capabilities or []:
            argv += ["--capability", cap]
        if config:
            argv += ["--config", str(config)]
        if self.heartbeat_interval is not None:
            argv += ["--heartbeat-interval", str(self.heartbeat_interval)]
        if self.heartbeat_liveness is not None:
            argv += ["--heartbeat-liveness", str(self.heartbeat_liveness)]
        argv = [*(wrap or []), *argv, *(extra_args or [])]
        proc = self._spawn(f"worker-{worker_id}", argv, env)
        proc.extra = {"slots": slots, "capabilities": capabilities, "config": config, "extra_args": extra_args}
        if env:
            proc.extra["env"] = env
        if wrap:
            proc.extra["wrap"] = wrap
        if not authorized:
            proc.extra["authorized"] = False
        self.workers[worker_id] = proc
        return proc

    def restart_worker(self, worker_id: str) -> Proc:
        old = self.workers[worker_id]
        old.stop(sig=signal.SIGQUIT)
        return self.start_worker(worker_id, **old.extra)

    def drain_worker(self, worker_id: str) -> None:
        """SIGTERM: the worker finishes its tasks, takes no new ones, then exits."""
        self.workers[worker_id].signal(signal.SIGTERM)

    def kill_worker(self, worker_id: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[worker_id]
        proc.signal(sig)
        if sig == signal.SIGKILL:
            proc.popen.wait(10)

    def pause_worker(self, worker_id: str) -> None:
        self.workers[worker_id].signal(signal.SIGSTOP)

    def resume_worker(self, worker_id: str) -> None:
        self.workers[worker_id].signal(signal.SIGCONT)

    def close_worker_socket(self, worker_id: str) -> None:
        """The worker closes its DEALER and stays away; its process and tasks live on."""
        self._fault_signal(worker_id, faults.PARTITION)

    def reopen_worker_socket(self, worker_id: str) -> None:
        self._fault_signal(worker_id, faults.HEAL)

    def _fault_signal(self, worker_id: str, sig: int) -> None:
        if not self.faults:
            raise ClusterError("fault injection needs a cluster started with faults=True")
        self.workers[worker_id].signal(sig)

    def wait_for_workers(self, worker_ids: list[str] | int, timeout: float = 15.0) -> list[dict[str, Any]]:
        with self.client() as client:

            def registered() -> list[dict[str, Any]] | None:
                workers = client.workers()
                ids = {w["worker_id"] for w in workers}
                if isinstance(worker_ids, int):
                    return workers if len(ids) >= worker_ids else None
                return workers if set(worker_ids) <= ids else None

            return wait_for(registered, timeout, f"workers {worker_ids} to register", interval=0.05)

    # ------------------------------------------------------------ dashboard

    def start_dashboard(self, port: int = 0, address: str = "127.0.0.1", timeout: float = 60.0) -> str:
        """Serve bokeh_app/ for this cluster's broker (needs ``http``); returns the page's
        ready-to-open URL (``?token=``: the dashboard asks for the API's token too)."""
        if not self.http_url:
            raise ClusterError("the dashboard needs the broker's HTTP API: start the cluster with http=HOST:PORT")
        ready = self.workdir / "dashboard.ready.json"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "dtf_bus.dashboard",
            "--address",
            address,
            "--port",
            str(port),
            "--broker",
            self.endpoint,
            "--events",
            self.metrics_endpoint,
            "--http",
            self.http_url,
            "--api-key-file",
            str(self.api_token_file),
            "--ready-file",
            str(ready),
            "--log-level",
            self.log_level,
        ]
        self.dashboard = self._spawn("dashboard", argv)

        def is_ready() -> bool:
            if not self.dashboard.alive():
                raise ClusterError(f"dashboard exited:\n{self.dashboard.log_tail()}")
            return ready.exists()

        wait_for(is_ready, timeout, "the dashboard to serve", interval=0.05)
        self.dashboard_url = json.loads(ready.read_text())["url"]
        return f"{self.dashboard_url}?token={self.api_token}"

    def stop_dashboard(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()

    # --------------------------------------------------------------- common

    def client(self, timeout: float = defaults.CLIENT_TIMEOUT) -> Client:
        return Client(self.endpoint, timeout=timeout, curve=self.client_curve)

    # ------------------------------------------------------------- CURVE keys

    def node_key(self, name: str, authorized: bool = True, role: str = "client") -> Path:
        """A node's secret key file (made on first use); its public key admitted with ``role``
        if ``authorized``."""
        secret = self.keys_dir / f"{name}.key_secret"
        if not secret.exists():
            keyfiles.generate(self.keys_dir, name)
        if authorized:
            keyfiles.authorize(self.keys_dir / f"{name}.key", self.authorized_dir, role)
        return secret

    def revoke(self, name: str) -> None:
        """Remove a node's key (``worker-ID`` for a worker) from the authorized directory."""
        (self.authorized_dir / f"{name}.key").unlink()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / "logs" / f"{name}.log"
        environ = {**os.environ, **env} if env else None
        with log_path.open("ab") as fh:
            popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ)
        return Proc(name, argv, log_path, popen)

    def stop(self) -> None:
        """Stop every process this cluster started (workers first, at once), by pid."""
        self.stop_dashboard()
        # Every worker is told first and waited for after, so workers killing stubborn tasks
        # (KILL_GRACE each) take that long once, not once per worker.
        for proc in self.workers.values():
            proc.signal(signal.SIGCONT)  # a stopped process cannot handle signals
            proc.signal(signal.SIGQUIT)
        for proc in self.workers.values():
            proc.stop(sig=signal.SIGQUIT)
        self.stop_broker()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
