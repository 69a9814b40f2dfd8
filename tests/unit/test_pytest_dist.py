"""The plan of a distributed pytest run (pure logic): session args, requirements, --lf/--ff,
scheduling units and the ``dtf pytest`` shorthand."""

from __future__ import annotations

import pytest

from dtf_bus import defaults
from dtf_bus.pytest_dist import plan as pytest_dist
from dtf_bus.pytest_dist.plan import Option, PlanError

pytestmark = pytest.mark.unit

# What pytest's parser says about the options these tests use (dest, nargs).
OPTIONS = {
    "-x": Option("maxfail", 0),
    "--exitfirst": Option("maxfail", 0),
    "--maxfail": Option("maxfail", None),
    "-v": Option("verbose", 0),
    "-q": Option("verbose", 0),
    "-s": Option("capture", 0),
    "-r": Option("reportchars", None),
    "-k": Option("keyword", None),
    "-m": Option("markexpr", None),
    "-p": Option("plugins", None),
    "-o": Option("override_ini", None),
    "--junitxml": Option("xmlpath", None),
    "--junit-xml": Option("xmlpath", None),
    "--durations": Option("durations", None),
    "--lf": Option("lf", 0),
    "--ff": Option("failedfirst", 0),
    "--tb": Option("tbstyle", None),
    "--pyargs": Option("pyargs", 0),
    "--basetemp": Option("basetemp", None),
    "--dtf": Option("dtf", "?"),
    "--dtf-requires": Option("dtf_requires", None),
    "--dtf-reruns": Option("dtf_reruns", None),
    "--import-mode": Option("importmode", None),
}


def args_for(argv: list[str], cwd: str = "/src", rootdir: str = "/src") -> list[str]:
    return pytest_dist.session_args(argv, OPTIONS, cwd, rootdir)


def test_session_args_drop_dtf_and_controller_only_options_in_every_spelling():
    argv = [
        "--dtf",
        "tests/",
        "-xvs",
        "--maxfail",
        "2",
        "-rA",
        "--junitxml",
        "out.xml",
        "--junit-xml=o2.xml",
        "--durations=5",
        "--lf",
        "--dtf-requires",
        "hardware=cuda",
        "--dtf-reruns=2",
        "-k",
        "not slow",
        "-p",
        "no:randomly",
        "--tb=short",
        "--import-mode",
        "importlib",
        "--basetemp=/tmp/x",
    ]
    assert args_for(argv) == [
        "-v",
        "-s",
        "-k",
        "not slow",
        "-p",
        "no:randomly",
        "--tb=short",
        "--import-mode",
        "importlib",
        "tests",
    ]


def test_a_bare_dtf_never_takes_the_next_token_and_dtf_ep_is_dropped():
    assert args_for(["--dtf", "test_a.py::test_x", "-q"]) == ["-q", "test_a.py::test_x"]
    assert args_for(["--dtf=tcp://h:5555", "t.py"]) == ["t.py"]
    assert args_for(["-r", "fE", "-x", "t.py"]) == ["t.py"]


def test_session_args_make_paths_relative_to_the_rootdir():
    # Typed in /src/pkg while the rootdir is /src: the session runs in /src.
    assert args_for(["tests/test_a.py::T::t", "-k", "x.py"], cwd="/src/pkg") == [
        "-k",
        "x.py",
        "pkg/tests/test_a.py::T::t",
    ]
    assert args_for([], cwd="/src/pkg") == ["pkg"]  # pytest's default: the invocation dir
    assert args_for([]) == []  # in the rootdir the session applies testpaths itself
    assert args_for(["/elsewhere/t.py"]) == ["/elsewhere/t.py"]
    assert args_for(["--pyargs", "pkg.tests"], cwd="/src/pkg") == ["--pyargs", "pkg.tests"]


def test_requires_flags_and_marker_map():
    assert pytest_dist.parse_requires(["hardware=cuda,rocm", "hardware=tpu", "min_memory_gb=32", "pool=ci"]) == {
        "hardware": ["cuda", "rocm", "tpu"],
        "min_memory_gb": 32,
        "pool": "ci",
    }
    with pytest.raises(PlanError, match="expected KEY=VALUE"):
        pytest_dist.parse_requires(["cuda"])
    assert pytest_dist.parse_marker_map(["gpu = hardware=cuda min_memory_gb=16", "", "# note", "big = pool=big"]) == {
        "gpu": {"hardware": ["cuda"], "min_memory_gb": 16},
        "big": {"pool": "big"},
    }
    with pytest.raises(PlanError, match="dtf_markers"):
        pytest_dist.parse_marker_map(["gpu"])


def test_merge_requires_lets_the_test_narrow_the_run():
    base = {"hardware": ["cuda", "rocm"], "pool": "ci"}
    assert pytest_dist.merge_requires(base, {"hardware": "cuda"}) == {"hardware": ["cuda"], "pool": "ci"}
    assert pytest_dist.merge_requires(base, {"hardware": ["tpu"]}) == {"hardware": ["tpu"], "pool": "ci"}
    assert pytest_dist.merge_requires({}, {"min_memory_gb": 8}) == {"min_memory_gb": 8}


IDS = ["a.py::t1", "a.py::t2", "b.py::t3", "c.py::t4"]


def test_last_failed_keeps_pytests_meaning():
    run, deselected, status = pytest_dist.select_last_failed(IDS, ["b.py::t3", "gone.py::x"], lf=True, ff=False)
    assert (run, deselected) == (["b.py::t3"], ["a.py::t1", "a.py::t2", "c.py::t4"])
    assert status == "run-last-failure: rerun previous 1 failure"
    run, deselected, status = pytest_dist.select_last_failed(IDS, ["c.py::t4", "a.py::t2"], lf=False, ff=True)
    assert run == ["a.py::t2", "c.py::t4", "a.py::t1", "b.py::t3"] and deselected == []
    assert status.endswith("first")
    # A file that failed to collect last time selects all its tests.
    assert pytest_dist.select_last_failed(IDS, ["a.py"], lf=True, ff=False)[0] == ["a.py::t1", "a.py::t2"]
    # No failures known: everything (--lfnf all) or nothing (--lfnf none).
    assert pytest_dist.select_last_failed(IDS, [], lf=True, ff=False)[:2] == (IDS, [])
    assert pytest_dist.select_last_failed(IDS, [], lf=True, ff=False, no_failures="none")[:2] == ([], IDS)
    run, _, status = pytest_dist.select_last_failed(IDS, ["z.py::q"], lf=True, ff=False)
    assert run == IDS and "1 known failure not in selected tests" in status
    assert pytest_dist.select_last_failed(IDS, ["a.py::t1"], lf=False, ff=False) == (IDS, [], None)


def items(nodeids: list[str], **extra: dict) -> list[dict]:
    return [
        {"nodeid": n, "requires": {}, "group": None, "scope": n.split("::")[0], **extra.get(n, {})} for n in nodeids
    ]


def test_load_chunks_consecutive_tests_of_one_file_and_one_requirement():
    ids = [f"a.py::t{i}" for i in range(10)] + [f"b.py::t{i}" for i in range(3)]
    its = items(ids, **{"a.py::t5": {"requires": {"hardware": "cuda"}}})
    by_id = {item["nodeid"]: item for item in its}
    costs = dict.fromkeys(ids, 1.0)
    units = pytest_dist.plan_units(its, "load", costs, sessions=2)
    assert [n for u in units for n in u.nodeids] == ids  # every test once, in order
    for unit in units:
        assert len({n.split("::")[0] for n in unit.nodeids}) == 1
        assert len({pytest_dist.requires_key(by_id[n]["requires"]) for n in unit.nodeids}) == 1
    cuda = [u for u in units if u.requires]
    assert [u.nodeids for u in cuda] == [["a.py::t5"]] and cuda[0].requires == {"hardware": "cuda"}
    # Guided: the first chunk takes about a quarter of a session's share, later ones shrink.
    assert len(units[0].nodeids) == 2 and len(units[-1].nodeids) == 1
    assert len(set(u.name for u in units)) == len(units)


def test_load_chunks_are_bounded_and_priorities_put_the_longest_first():
    ids = [f"a.py::t{i}" for i in range(1000)]
    units = pytest_dist.plan_units(items(ids), "load", dict.fromkeys(ids, 0.001), sessions=1)
    assert max(len(u.nodeids) for u in units) <= defaults.PYTEST_MAX_CHUNK_TESTS
    # Sub-millisecond tests: no chunk under PYTEST_MIN_CHUNK_SECONDS of work but the last.
    assert all(u.cost >= defaults.PYTEST_MIN_CHUNK_SECONDS - 1e-9 for u in units[:-1])
    slow = pytest_dist.Unit("s", ["x"], {}, cost=12.5)
    fast = pytest_dist.Unit("f", ["y"], {}, cost=0.2)
    assert slow.priority == 12500 > fast.priority == 200
    assert pytest_dist.Unit("r", ["z"], {}, cost=0.0, first=True).priority == defaults.MAX_PRIORITY - 1
    assert pytest_dist.priority(1e9) < defaults.MAX_PRIORITY - 1


def test_loadfile_loadscope_loadgroup():
    ids = ["a.py::T::t1", "a.py::T::t2", "a.py::t3", "b.py::t4", "b.py::t5"]
    scopes = {"a.py::T::t1": {"scope": "a.py::T"}, "a.py::T::t2": {"scope": "a.py::T"}}
    costs = dict.fromkeys(ids, 1.0)
    by_file = pytest_dist.plan_units(items(ids, **scopes), "loadfile", costs, sessions=4)
    assert [u.nodeids for u in by_file] == [ids[:3], ids[3:]]
    by_scope = pytest_dist.plan_units(items(ids, **scopes), "loadscope", costs, sessions=4)
    assert [u.nodeids for u in by_scope] == [ids[:2], ["a.py::t3"], ids[3:]]
    assert by_scope[0].label == "a.py::T"
    groups = {"a.py::t3": {"group": "db"}, "b.py::t5": {"group": "db"}}
    by_group = pytest_dist.plan_units(items(ids, **groups), "loadgroup", costs, sessions=4)
    assert by_group[0].nodeids == ["a.py::t3", "b.py::t5"] and by_group[0].label == "group db"
    assert sorted(n for u in by_group[1:] for n in u.nodeids) == sorted(["a.py::T::t1", "a.py::T::t2", "b.py::t4"])
    with pytest.raises(PlanError, match="--dtf-dist"):
        pytest_dist.plan_units(items(ids), "each", costs, sessions=1)


def test_estimated_costs_fall_back_to_the_median_of_known_ones():
    costs = pytest_dist.estimate_costs(["a", "b", "c", "d"], {"a": 1.0, "b": 3.0, "c": 2.0, "x": 9.0})
    assert costs == {"a": 1.0, "b": 3.0, "c": 2.0, "d": 2.0}
    assert pytest_dist.estimate_costs(["a"], {}) == {"a": defaults.PYTEST_UNKNOWN_TEST_SECONDS}


def test_dtf_pytest_shorthand_arguments():
    assert pytest_dist.shorthand_args(["tests/", "--broker", "tcp://h:1", "-x"]) == ["--dtf=tcp://h:1", "tests/", "-x"]
    assert pytest_dist.shorthand_args(["-k", "a", "--broker=tcp://h:2", "--curve-secret", "c.key"]) == [
        "--dtf=tcp://h:2",
        "-k",
        "a",
        "--dtf-curve-secret=c.key",
    ]
    assert pytest_dist.shorthand_args(["--broker-key=b.key", "t.py"]) == ["--dtf=", "--dtf-broker-key=b.key", "t.py"]
    assert pytest_dist.shorthand_args(["--", "--broker"]) == ["--dtf=", "--", "--broker"]
