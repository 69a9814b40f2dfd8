"""The browser executor on a real cluster: a worker drives Debian's headless Chromium through
Playwright and runs real pages and scripts sent through a real broker.

Most tests share one worker (module scope), as a browser fleet would: its one browser serves
every task, so each result must say it was launched once. Never `playwright install`: the
executor drives /usr/bin/chromium (bin/_bootstrap.sh installs it).
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import psutil
import pytest

from dtf_bus import spec
from dtf_bus.testing.cluster import LocalCluster, wait_for
from tests.conftest import FAST_HEARTBEAT

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
BROKEN_PAGE = "<script>throw new Error('broken page')</script>"


def require_chromium() -> None:
    """Fail (or skip, with DTF_SKIP_BROWSER_TESTS set) where Debian's chromium is missing, as the dashboard tests do."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("DTF_SKIP_BROWSER_TESTS"):
            pytest.skip("DTF_SKIP_BROWSER_TESTS is set and /usr/bin/chromium is missing")
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install chromium (bin/_bootstrap.sh)")


@pytest.fixture(scope="module", autouse=True)
def chromium_present():
    require_chromium()


@pytest.fixture(scope="module")
def web(tmp_path_factory, chromium_present):
    """One broker and one two-slot browser worker for the module; stopped by pid at the end."""
    cluster = LocalCluster(tmp_path_factory.mktemp("browser"), **FAST_HEARTBEAT)
    try:
        cluster.start_broker()
        cluster.start_worker("web", slots=2)
        cluster.wait_for_workers(["web"])
        yield cluster
    finally:
        cluster.stop()


def run(cluster: LocalCluster, tasks: list[dict], timeout: float = 60) -> dict[str, dict]:
    """Submit ``tasks`` (plugin browser unless given), wait, and return the results by name."""
    with cluster.client() as client:
        job = client.submit([{"plugin": "browser", **t} for t in tasks])
        client.wait(job, timeout=timeout)
        results = {r["name"]: r for r in client.results(job)}
    for r in results.values():  # the worker's one browser served every task
        if r["result"] and "browser_launches" in r["result"]:
            # 0 when a task timed out while the browser was still starting (a loaded machine)
            assert r["result"]["browser_launches"] <= 1, r
    return results


def test_script_value_browser_version_and_webgpu_report(web):
    with web.client() as client:
        (worker,) = client.workers()
    caps = worker["capabilities"]
    assert "browser" in worker["plugins"] and caps["browser"] == "chromium"
    results = run(
        web,
        [
            {"name": "sum", "params": {"script": "return {sum: args.a + args.b, list: [1, 'two', null]}",
                                       "args": {"a": 2, "b": 40}}},
            {"name": "html", "params": {"html": "<title>dtf page</title><p id=x>hello</p>",
                                        "script": "return [document.title, document.getElementById('x').textContent]"}},
            {"name": "nothing", "params": {"script": "const x = 1;"}},
        ],
    )  # fmt: skip
    done = results["sum"]
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["value"] == {"sum": 42, "list": [1, "two", None]}
    # The version the page's browser reports is the one the worker detected from `chromium --version`.
    assert result["browser"]["version"] == caps["browser_version"]
    assert "HeadlessChrome/" in result["browser"]["user_agent"]
    # The default page is a secure context, so WebGPU is asked, and answers with an adapter or a reason.
    assert result["secure_context"] is True
    webgpu = result["webgpu"]
    if webgpu["available"]:
        assert webgpu["vendor"] or webgpu["architecture"], webgpu
        assert isinstance(webgpu["features"], list) and webgpu["limits"]["maxBufferSize"] > 0
    else:
        assert webgpu["reason"], webgpu
    assert set(result["webnn"]) >= {"available"} and (result["webnn"]["available"] or result["webnn"]["reason"])
    assert result["console_errors"] == [] and result["page_errors"] == [] and result["crashed"] is False
    assert results["html"]["state"] == "succeeded", results["html"]
    assert results["html"]["result"]["value"] == ["dtf page", "hello"]
    assert results["html"]["result"]["title"] == "dtf page"
    assert results["nothing"]["result"]["value"] is None  # undefined is JSON null


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>served</title><body>from a real server</body>"
        self.send_response(200 if self.path == "/page.html" else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_page():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_page_and_failures_say_why(web, http_page):
    results = run(
        web,
        [
            {"name": "url", "params": {"url": f"{http_page}/page.html", "script": "return document.body.textContent"}},
            {"name": "404", "params": {"url": f"{http_page}/missing.html"}},
            {"name": "throws", "params": {"script": "const o = null;\nreturn o.field;"}},
            {"name": "rejects", "params": {"script": "await Promise.resolve(); throw new RangeError('too far');"}},
            {"name": "syntax", "params": {"script": "return 1 +"}},
            {"name": "circular", "params": {"script": "const a = {}; a.self = a; return a;"}},
            {"name": "page-throws", "params": {"html": BROKEN_PAGE, "script": "return 1"}},
            {"name": "page-tolerated", "params": {"html": "<script>console.error('noisy')</script>" + BROKEN_PAGE,
                                                  "script": "return 1", "fail_on_page_error": False}},
            {"name": "bad-param", "params": {"scirpt": "return 1"}},
        ],
    )  # fmt: skip
    url = results["url"]
    assert url["state"] == "succeeded", url
    assert url["result"]["value"] == "from a real server" and url["result"]["status"] == 200
    assert url["result"]["secure_context"] is True  # 127.0.0.1 is potentially trustworthy
    assert results["404"]["error"] == f"browser: {http_page}/missing.html answered HTTP 404"
    throws = results["throws"]
    assert throws["state"] == "failed"
    assert throws["error"].startswith("browser: the script threw TypeError: Cannot read properties of null"), throws
    assert throws["result"]["error"]["name"] == "TypeError" and throws["result"]["error"]["stack"]
    assert results["rejects"]["error"] == "browser: the script threw RangeError: too far"
    assert results["syntax"]["error"].startswith("browser: the script could not run: SyntaxError"), results["syntax"]
    assert results["circular"]["error"] == (
        "browser: the script's return value is not JSON: Converting circular structure to JSON"
    )
    assert results["page-throws"]["state"] == "failed"
    assert results["page-throws"]["error"] == "browser: the page threw Error: broken page"
    tolerated = results["page-tolerated"]
    assert tolerated["state"] == "succeeded" and tolerated["result"]["value"] == 1, tolerated
    assert [e["message"] for e in tolerated["result"]["page_errors"]] == ["broken page"]
    assert [e["text"] for e in tolerated["result"]["console_errors"]] == ["noisy"]
    assert results["bad-param"]["error"].startswith("browser: unknown param 'scirpt'")
    for r in results.values():
        if r["state"] == "failed":
            assert "\n" not in r["error"], r["error"]


def test_timeouts_close_the_page_and_keep_the_browser(web):
    forever = "await new Promise(() => {});"
    results = run(
        web,
        [
            {"name": "param-timeout", "params": {"script": forever, "timeout": 1}},
            {"name": "task-timeout", "params": {"script": forever}, "timeout": 1.5},
        ],
    )
    assert results["param-timeout"]["state"] == "failed"
    assert results["param-timeout"]["error"] == "browser: timed out after 1s running the script"
    assert results["param-timeout"]["result"]["webgpu"]  # what was seen before the timeout is kept
    assert results["task-timeout"]["state"] == "timed_out", results["task-timeout"]
    # Two slots, one browser: two pages run at once, and the browser outlived the timeouts.
    overlap = "const start = Date.now(); await new Promise(r => setTimeout(r, 1000)); return [start, Date.now()];"
    after = run(web, [{"name": "a", "params": {"script": overlap}}, {"name": "b", "params": {"script": overlap}}])
    (a0, a1), (b0, b1) = after["a"]["result"]["value"], after["b"]["result"]["value"]
    assert a0 < b1 and b0 < a1, "the two pages did not run at the same time"


def test_the_example_suite_runs(web):
    name, tasks = spec.load(ROOT / "configs" / "suites" / "browser.toml")
    results = run(web, tasks)
    assert name == "browser" and set(results) == {"canvas-smoke", "js-matmul", "webgpu-scale"}
    for task in ("canvas-smoke", "js-matmul"):
        assert results[task]["state"] == "succeeded", results[task]
    assert results["canvas-smoke"]["result"]["value"] == {"title": "canvas", "pixel": [255, 0, 0]}
    [matmul] = results["js-matmul"]["result"]["value"]["benchmarks"]
    assert matmul["throughput"] > 0 and matmul["unit"] == "GFLOP/s"
    webgpu = results["webgpu-scale"]
    if webgpu["result"]["webgpu"]["available"]:
        assert webgpu["state"] == "succeeded", webgpu
        [scale] = webgpu["result"]["value"]["benchmarks"]
        assert scale["throughput"] > 0 and webgpu["result"]["value"]["environment"]["device"]
    else:  # a Chromium without even a software adapter says so
        assert webgpu["state"] == "failed", webgpu
        assert "WebGPU" in webgpu["error"] or "adapter" in webgpu["error"], webgpu


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.fault
def test_benchmark_rows_profile_plain_workers_and_a_killed_worker_takes_its_browser(make_cluster, monkeypatch):
    cluster = make_cluster()
    cluster.start_worker("web", config=ROOT / "configs" / "workers" / "browser.toml")
    monkeypatch.setenv("DTF_BROWSER_EXECUTABLE", "/nonexistent/chromium")
    cluster.start_worker("plain")
    monkeypatch.delenv("DTF_BROWSER_EXECUTABLE")
    workers = {w["worker_id"]: w for w in cluster.wait_for_workers(["web", "plain"])}
    assert "browser" in workers["web"]["plugins"] and "browser" not in workers["plain"]["plugins"]
    assert "browser" in workers["plain"]["capabilities"]  # the binary on PATH is still detected
    log = cluster.workers["plain"].log_tail(200)
    assert "browser: DTF_BROWSER_EXECUTABLE=/nonexistent/chromium is not an executable file" in log
    bench = """
        const samples = [];
        for (let i = 0; i < 5; i++) {
            const t = performance.now();
            let s = 0;
            for (let j = 0; j < 1e5; j++) s += j;
            samples.push(performance.now() - t);
        }
        samples.sort((x, y) => x - y);
        const p50 = samples[2];
        return {benchmarks: [{name: "js-loop", params: {n: 1e5}, iterations: 5, latency_ms: {p50, mean: p50},
                              throughput: 0.1 / (p50 / 1000), unit: "Mop/s"}]};
    """
    tasks = [
        {"name": f"bench-{i}", "params": {"script": bench}, "requires": {"browser": "chromium", "hardware": "webgpu"}}
        for i in range(3)
    ]
    results = run(cluster, tasks)
    for r in results.values():
        assert r["state"] == "succeeded" and r["worker_id"] == "web", r
    env = results["bench-0"]["result"]["value"]["environment"]
    assert env["browser"] == "chromium" and env["browser_version"] == results["bench-0"]["result"]["browser"]["version"]
    job = results["bench-0"]["job_id"]
    # Killed outright, the worker takes its browser with it (Playwright's driver sees its pipe close).
    descendants = psutil.Process(cluster.workers["web"].pid).children(recursive=True)
    assert any("chrom" in p.name().lower() for p in descendants), [p.name() for p in descendants]
    cluster.kill_worker("web")
    wait_for(lambda: all(_gone(p) for p in descendants), 15, "the killed worker's browser processes to exit")
    cluster.stop()
    con = duckdb.connect(str(cluster.db), read_only=True)
    try:
        rows = con.execute(
            "select benchmark, unit, throughput, environment->>'browser_version' from benchmark_results"
            " where job_id = ? order by task_id",
            [job],
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 3 and all(r[0] == "js-loop" and r[1] == "Mop/s" and r[2] > 0 for r in rows), rows
    assert {r[3] for r in rows} == {env["browser_version"]}


def test_ctrl_c_drains_a_browser_worker_and_its_running_page_finishes(make_cluster):
    """A terminal's Ctrl-C reaches the worker and Playwright's driver (one process group): the
    worker drains, so the page it runs must finish in a browser that is still there."""
    cluster = make_cluster(workers={"web": {}})
    worker = psutil.Process(cluster.workers["web"].pid)
    script = "await new Promise(r => setTimeout(r, 2000)); return 'finished'"
    with cluster.client() as client:
        job = client.submit([{"name": "slow", "plugin": "browser", "params": {"script": script}}])

        def browser_up():
            kids = worker.children(recursive=True)
            drivers = [p for p in kids if "node" in p.name()]  # Playwright's driver
            return drivers if drivers and any("chrom" in p.name().lower() for p in kids) else None

        drivers = wait_for(browser_up, 30, "the worker's browser to start")
        for proc in [worker, *drivers]:
            proc.send_signal(signal.SIGINT)
        client.wait(job, timeout=60)
        [task] = client.results(job)
    assert task["state"] == "succeeded" and task["result"]["value"] == "finished", task
    descendants = worker.children(recursive=True)
    assert cluster.workers["web"].popen.wait(15) == 0  # drained, then exited
    wait_for(lambda: all(_gone(p) for p in descendants), 15, "the drained worker's browser processes to exit")


def test_asking_for_the_plugin_where_it_cannot_load_is_one_clear_line(tmp_path):
    def worker(*args, env=None, code=None):
        argv = [sys.executable, "-m", "dtf_bus.worker"] if code is None else [sys.executable, "-c", code]
        return subprocess.run(
            [*argv, "--broker", "tcp://127.0.0.1:9", "--plugin", "browser", *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=tmp_path,
        )  # fmt: skip

    missing = worker(env={"DTF_BROWSER_EXECUTABLE": str(tmp_path / "no-chromium")})
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"dtf-worker: plugin 'browser' failed to load: browser: DTF_BROWSER_EXECUTABLE={tmp_path / 'no-chromium'}"
        " is not an executable file"
    ]
    # A worker without Playwright: its import is blocked, as if it were not installed.
    blocked = "import sys; sys.modules['playwright'] = None; from dtf_bus.worker.main import main; sys.exit(main())"
    no_playwright = worker(code=blocked)
    assert no_playwright.returncode == 2
    assert no_playwright.stderr.strip().splitlines() == [
        "dtf-worker: plugin 'browser' failed to load: browser: playwright is not installed (pip install 'dtf[browser]')"
    ]
