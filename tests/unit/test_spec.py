import datetime
import json

import pytest

from dtf_bus import defaults, spec

pytestmark = pytest.mark.unit


def test_defaults_and_repeat():
    tasks = spec.validate([{"name": "t", "plugin": "sim", "repeat": 3}])
    assert [t["name"] for t in tasks] == ["t[0]", "t[1]", "t[2]"]
    assert tasks[0] == {
        "name": "t[0]",
        "plugin": "sim",
        "params": {},
        "requires": {},
        "priority": 0,
        "timeout": None,
        "placement_timeout": None,
        "resources": {},
        "retries": 0,
        "retry_backoff": 1.0,
        "depends_on": [],
    }


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"plugin": "sim"}, "task #1: field 'name' is required"),
        ({"name": "a"}, "task 'a': field 'plugin' is required"),
        ({"name": "a", "plugin": "sim", "timeout": -1}, "task 'a': field 'timeout' must be a positive number"),
        ({"name": "a", "plugin": "sim", "retries": "2"}, "task 'a': field 'retries' must be a non-negative integer"),
        ({"name": "a", "plugin": "sim", "priority": 1.5}, "task 'a': field 'priority' must be an integer"),
        ({"name": "a", "plugin": "sim", "repeat": 0}, "task 'a': field 'repeat' must be a positive integer"),
        ({"name": "a", "plugin": "sim", "params": [1]}, "task 'a': field 'params' must be a table"),
        ({"name": "a", "plugin": "sim", "requires": {"hardware": 3}}, "field 'requires.hardware' must be a string"),
        ({"name": "a", "plugin": "sim", "requires": {"min_memory_gb": "x"}}, "'requires.min_memory_gb' must be"),
        ({"name": "a", "plugin": "sim", "colour": "red"}, "task 'a': field 'colour' is not a task field"),
    ],
)
def test_invalid_task_named_with_field(task, message):
    with pytest.raises(spec.SpecError) as err:
        spec.validate([task])
    assert message in str(err.value)


def test_duplicate_names_rejected():
    with pytest.raises(spec.SpecError, match="duplicate name"):
        spec.validate([{"name": "a", "plugin": "sim"}, {"name": "a", "plugin": "sim"}])


def test_empty_rejected():
    with pytest.raises(spec.SpecError, match="no tasks"):
        spec.validate([])


def test_load_toml_and_json(tmp_path):
    toml = tmp_path / "suite.toml"
    toml.write_text('name = "nightly"\n[[tasks]]\nname = "a"\nplugin = "sim"\npriority = 5\n')
    name, tasks = spec.load(toml)
    assert name == "nightly" and tasks[0]["priority"] == 5
    js = tmp_path / "suite.json"
    js.write_text(json.dumps({"tasks": [{"name": "b", "plugin": "shell", "params": {"cmd": "true"}}]}))
    name, tasks = spec.load(js)
    assert name == "suite" and tasks[0]["params"] == {"cmd": "true"}


def test_load_reports_syntax_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tasks]\nname=")
    with pytest.raises(spec.SpecError, match=r"bad\.toml: not valid toml"):
        spec.load(bad)
    with pytest.raises(spec.SpecError, match="cannot read spec"):
        spec.load(tmp_path / "missing.toml")


def test_depends_on_resolves_repeated_groups():
    tasks = spec.validate(
        [
            {"name": "build", "plugin": "sim", "repeat": 2},
            {"name": "test", "plugin": "sim", "depends_on": ["build"]},
            {"name": "report", "plugin": "sim", "depends_on": "test"},
        ]
    )
    deps = {t["name"]: t["depends_on"] for t in tasks}
    assert deps == {"build[0]": [], "build[1]": [], "test": ["build[0]", "build[1]"], "report": ["test"]}
    assert spec.validate(tasks) == tasks  # validating an already validated spec changes nothing


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [{"name": "a", "plugin": "sim", "depends_on": ["ghost"]}],
            "task 'a': field 'depends_on' names unknown task 'ghost'",
        ),
        ([{"name": "a", "plugin": "sim", "depends_on": ["a"]}], "names the task itself"),
        (
            [
                {"name": "a", "plugin": "sim", "depends_on": ["c"]},
                {"name": "b", "plugin": "sim", "depends_on": ["a"]},
                {"name": "c", "plugin": "sim", "depends_on": ["b"]},
                {"name": "d", "plugin": "sim"},
            ],
            "dependency cycle among tasks: a, b, c",
        ),
        ([{"name": "a", "plugin": "sim", "depends_on": [1]}], "field 'depends_on' must be a list of task names"),
    ],
)
def test_bad_dependencies_rejected(tasks, message):
    with pytest.raises(spec.SpecError) as err:
        spec.validate(tasks)
    assert message in str(err.value)


# Bounds: every number a spec holds fits its column and the arithmetic done with it.


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", 2**31, "field 'priority' must be an integer from -1000000 to 1000000"),
        ("priority", -(2**63), "field 'priority' must be an integer from"),
        ("retries", 2**31, "field 'retries' must be a non-negative integer, at most 100"),
        ("retries", 101, "at most 100"),
        ("timeout", 1e300, "field 'timeout' must be a positive number of seconds, at most"),
        ("retry_backoff", 1e12, "field 'retry_backoff' must be a number of seconds from 0 to"),
        ("requires", {"min_memory_gb": 2**63}, "field 'requires.min_memory_gb' must be a number from 0 to"),
    ],
)
def test_numbers_out_of_bounds_are_spec_errors(field, value, message):
    with pytest.raises(spec.SpecError) as err:
        spec.validate([{"name": "a", "plugin": "sim", field: value}])
    assert str(err.value).startswith("task 'a': ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bounds_admit_their_limits():
    task = {"name": "a", "plugin": "sim", "priority": -1_000_000, "retries": 100, "timeout": 30 * 86400.0}
    assert spec.validate([task])[0]["priority"] == -1_000_000


def test_params_capped_per_task():
    big = {"blob": "x" * (defaults.MAX_TASK_PARAMS_BYTES + 1)}
    with pytest.raises(spec.SpecError, match=r"task 'big': field 'params' is \d+ bytes packed; at most 1048576"):
        spec.validate([{"name": "small", "plugin": "sim"}, {"name": "big", "plugin": "sim", "params": big}])


def test_params_capped_per_job_counting_repeats():
    params = {"blob": "x" * 1000}  # ~1 KB, fine once; 100,000 copies are ~100 MB
    with pytest.raises(spec.SpecError, match=r"task 'r': params of the job reach \d+ bytes \(repeats counted\)"):
        spec.validate([{"name": "r", "plugin": "sim", "params": params, "repeat": 100_000}])


def test_a_100000_task_job_of_ordinary_params_is_admitted():
    tasks = [
        {"name": f"t{i}", "plugin": "shell", "params": {"cmd": f"echo {i}", "env": {"N": str(i)}}}
        for i in range(100_000)
    ]
    assert len(spec.validate(tasks)) == 100_000


def test_params_that_cannot_be_sent_are_named():
    with pytest.raises(spec.SpecError, match="task 'a': field 'params' holds a value that cannot be sent"):
        spec.validate([{"name": "a", "plugin": "sim", "params": {"when": datetime.date(2024, 1, 1)}}])


# Env redaction: names kept, values gone, the task's own params untouched.


def test_redact_env_keeps_names_and_never_mutates():
    params = {"cmd": "deploy", "env": {"TOKEN": "s3cret", "REGION": "eu"}}
    redacted = spec.redact_env(params)
    assert redacted == {"cmd": "deploy", "env": {"TOKEN": "***", "REGION": "***"}}
    assert params == {"cmd": "deploy", "env": {"TOKEN": "s3cret", "REGION": "eu"}}
    assert spec.env_redacted(redacted) and not spec.env_redacted(params)


@pytest.mark.parametrize("params", [{}, {"cmd": "x"}, {"env": {}}, {"env": None}])
def test_redact_env_without_env_values_is_the_same_object(params):
    assert spec.redact_env(params) is params
    assert not spec.env_redacted(params)


def test_redact_env_hides_an_env_that_is_not_a_table():
    assert spec.redact_env({"env": "TOKEN=s3cret"}) == {"env": "***"}
    assert spec.env_redacted({"env": "***"})
