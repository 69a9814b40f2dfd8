"""`dtf up`: one command brings up broker, fleet, API, dashboard and a suite; Ctrl-C stops all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

from dtf_bus.testing.cluster import wait_for

pytestmark = pytest.mark.integration


def test_up_with_dashboard_prints_urls_and_ctrl_c_stops_everything(tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "s"\n[[tasks]]\nname = "t"\nplugin = "sim"\nparams = { seconds = 0.05 }\nrepeat = 3\n')
    argv = [
        sys.executable, "-m", "dtf_bus.cli", "up", "--workers", "2", "--profile", "mixed", "--suite", str(suite),
        "--dashboard", "--http", "127.0.0.1:0", "--dashboard-port", "0", "--bind", "tcp://127.0.0.1:0",
        "--metrics-bind", "tcp://127.0.0.1:0", "--db", str(tmp_path / "up.duckdb"), "--workdir", str(tmp_path / "up"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    children: list[psutil.Process] = []
    try:

        def running() -> bool:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "dtf up exited early:\n" + "".join(lines)
            lines.append(line)
            return "press Ctrl-C" in line

        wait_for(running, 60, "dtf up to report it is running")
        out = "".join(lines)
        urls = {line.split()[0]: line.split()[1] for line in lines if line.startswith(("api ", "dashboard "))}
        assert "3 succeeded" in out and set(urls) == {"api", "dashboard"}, out

        assert "?token=" in urls["api"] and "?token=" in urls["dashboard"], out
        base, _, token = urls["api"].partition("/api?token=")
        assert (tmp_path / "up.duckdb.api-token").read_text().strip() == token

        def status() -> dict:
            request = urllib.request.Request(base + "/api/status", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())["data"]

        with pytest.raises(urllib.error.HTTPError) as refused:  # the API asks for the token
            urllib.request.urlopen(base + "/api/status", timeout=5)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as refused:  # and so does the dashboard
            urllib.request.urlopen(urls["dashboard"].partition("?")[0], timeout=5)
        assert refused.value.code == 401

        wait_for(lambda: status()["workers"] == 2, 10, "the API to count 2 workers")  # metrics tick once a second
        with urllib.request.urlopen(urls["dashboard"], timeout=10) as response:
            assert response.status == 200 and "bokeh" in response.read().decode().lower()
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # broker, two workers, dashboard
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running after Ctrl-C: {alive}"
    finally:
        if proc.poll() is None:  # the test failed midway: stop it and what it started, by pid
            children = children or psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
        for child in children:
            if child.is_running():
                child.kill()
        proc.stdout.close()
