import json

import pytest

from dtf_bus import spec

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
