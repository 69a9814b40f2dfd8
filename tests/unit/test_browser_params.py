"""The browser executor's pure parts: params, finding Chromium, flags, result shaping (no browser)."""

from __future__ import annotations

import pytest

from dtf_bus import defaults
from dtf_bus.plugins import TaskFailed
from dtf_plugins.browser import BrowserUnavailable, browser_args, find_chromium, parse_job, with_benchmark_environment
from dtf_plugins.browser_page import PageReport, _error_message, first_line, script_function

pytestmark = pytest.mark.unit


def test_params_default_to_a_blank_page_and_the_default_timeout():
    job = parse_job({})
    assert (job.url, job.html, job.script, job.args) == (None, None, None, None)
    assert job.timeout == defaults.BROWSER_TIMEOUT and job.wait_until == "load" and job.fail_on_page_error is True
    job = parse_job({"url": "http://x/", "script": "return 1", "args": [1], "timeout": 2, "wait_until": "commit"})
    assert (job.url, job.script, job.args, job.timeout, job.wait_until) == ("http://x/", "return 1", [1], 2.0, "commit")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"url": "http://x/", "html": "<p>"}, "browser: give param 'url' or 'html', not both"),
        ({"script": 3}, "browser: param 'script' must be a string, got int"),
        ({"url": " "}, "browser: param 'url' is empty"),
        ({"timeout": 0}, "browser: param 'timeout' must be a positive number of seconds, got 0"),
        ({"timeout": True}, "browser: param 'timeout' must be a positive number of seconds, got True"),
        ({"wait_until": "idle"}, "browser: param 'wait_until' must be one of load, domcontentloaded, networkidle"),
        ({"fail_on_page_error": "no"}, "browser: param 'fail_on_page_error' must be true or false"),
        ({"scirpt": "return 1"}, "browser: unknown param 'scirpt'"),
    ],
)
def test_bad_params_are_one_line(params, error):
    with pytest.raises(TaskFailed) as caught:
        parse_job(params)
    assert str(caught.value).startswith(error) and "\n" not in str(caught.value)


def _executable(path):
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_chromium_is_the_variable_else_the_first_known_name_on_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chrome = _executable(bin_dir / "google-chrome")
    assert find_chromium({"PATH": str(bin_dir)}) == chrome
    chromium = _executable(bin_dir / "chromium")
    assert find_chromium({"PATH": str(bin_dir)}) == chromium  # chromium comes first in BROWSER_BINARIES
    own = _executable(tmp_path / "my-chrome")
    assert find_chromium({"PATH": str(bin_dir), defaults.BROWSER_EXECUTABLE_ENV: own}) == own


def test_no_chromium_names_what_was_looked_for(tmp_path):
    with pytest.raises(BrowserUnavailable, match=r"^browser: no Chromium found \(looked for chromium, "):
        find_chromium({"PATH": str(tmp_path)})
    not_executable = tmp_path / "chrome"
    not_executable.write_text("")
    with pytest.raises(BrowserUnavailable, match=r"is not an executable file$"):
        find_chromium({defaults.BROWSER_EXECUTABLE_ENV: str(not_executable)})


def test_flags_from_the_environment_follow_the_defaults():
    assert browser_args({}) == list(defaults.BROWSER_ARGS)
    assert browser_args({defaults.BROWSER_ARGS_ENV: "--use-angle=vulkan '--lang=en US'"})[-2:] == [
        "--use-angle=vulkan",
        "--lang=en US",
    ]
    with pytest.raises(BrowserUnavailable, match="DTF_BROWSER_ARGS cannot be split"):
        browser_args({defaults.BROWSER_ARGS_ENV: "'unclosed"})


def test_a_benchmark_value_gets_the_browser_in_its_environment_and_keeps_its_own():
    result = {
        "browser": {"name": "chromium", "version": "120.0", "user_agent": "UA"},
        "webgpu": {"available": True, "vendor": "nvidia", "architecture": "hopper", "description": ""},
        "value": {"benchmarks": [{"name": "x"}], "environment": {"device": "H200", "browser_version": "own"}},
    }
    with_benchmark_environment(result)
    assert result["value"]["environment"] == {
        "browser": "chromium",
        "browser_version": "own",
        "user_agent": "UA",
        "webgpu_adapter": "nvidia hopper",
        "device": "H200",
    }
    plain = {"browser": {"version": "1"}, "value": [1, 2]}
    with_benchmark_environment(plain)
    assert plain["value"] == [1, 2]


def test_messages_are_capped_and_counted():
    report = PageReport()
    for i in range(defaults.BROWSER_MAX_MESSAGES + 3):
        report.keep("console_errors", {"text": str(i)})
    result = report.as_result()
    assert len(result["console_errors"]) == defaults.BROWSER_MAX_MESSAGES
    assert result["console_errors_dropped"] == 3 and "page_errors_dropped" not in result


def test_playwright_messages_lose_the_call_name_and_the_call_log():
    class Error(Exception):
        message = "Page.goto: net::ERR_CONNECTION_REFUSED at http://x/\nCall log:\n  - navigating"

    assert first_line(_error_message(Error())) == "net::ERR_CONNECTION_REFUSED at http://x/"
    assert first_line("\n  \n") == "no message"


def test_the_script_is_spliced_as_a_function_body():
    source = script_function("return args.x;")
    assert source.startswith("async (args) => {") and "\nreturn args.x;\n" in source
    assert "new Function" not in source  # a page's Content-Security-Policy may forbid it
