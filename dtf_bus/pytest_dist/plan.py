"""Distributing a pytest suite: the plan (pure) and the ``dtf pytest`` shorthand.

The controller (:mod:`dtf_bus.pytest_dist.plugin`) asks this module every question that needs no
socket and no pytest session, so each answer is unit-tested on plain data:

- which of the user's arguments the worker sessions get (:func:`session_args`): all but dtf's
  own and the controller-only ones (``-x``, ``--junitxml``, ``--lf`` ...), which act on the
  replayed reports here and would change what a worker session runs if sent;
- what each test needs of a worker (:func:`parse_requires`, :func:`merge_requires`);
- the order and selection for ``--lf`` / ``--ff`` (:func:`select_last_failed`, pytest's meaning);
- the scheduling units of ``--dtf-dist`` (:func:`plan_units`), sized and prioritised from the
  durations DuckDB learned (longest first, as LPT scheduling does, so the tail stays short).

``dtf pytest ARGS...`` is ``pytest --dtf ARGS...`` run in this process (:func:`main`), taking
``--broker``, ``--curve-secret``, ``--broker-key`` and ``--label`` anywhere among ARGS. Its exit codes are
pytest's (0 passed, 1 failed, 2 interrupted or collection errors, 4 usage, 5 no tests) and 3 for
an unreachable broker.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtf_bus import config, defaults, runmeta

DIST_MODES = ("load", "loadfile", "loadscope", "loadgroup")
COLLECT_TASK = "collect"

# Options that act on the replayed reports on the controller, or would make a worker session run
# something else than the node ids it is handed (-x stops it, --lf deselects, --basetemp is one
# directory for every session); never sent to workers. By argparse dest, so every spelling counts.
CONTROLLER_ONLY_DESTS = frozenset(
    {
        "maxfail",  # -x, --maxfail
        "reportchars",  # -r
        "xmlpath",  # --junitxml
        "junitprefix",
        "durations",
        "durations_min",
        "lf",
        "failedfirst",
        "newfirst",
        "last_failed_no_failures",
        "cacheshow",
        "cacheclear",
        "stepwise",
        "stepwise_skip",
        "stepwise_reset",
        "collectonly",
        "usepdb",
        "usepdb_cls",
        "trace",
        "basetemp",
        "debug",
        "pastebin",
        "no_header",
        "no_summary",
        # Reporting plugins the controller runs on the replayed reports.
        "htmlpath",
        "self_contained_html",
        "css",
        "reportlog",
        "json_report",
        "json_report_file",
        # pytest-xdist: refused together with --dtf anyway.
        "numprocesses",
        "maxprocesses",
        "dist",
        "tx",
    }
)


class PlanError(ValueError):
    """A user's option or ini value that cannot be planned with; the message is for the user."""


# ------------------------------------------------------------------ requirements


def parse_requires(items: Iterable[str] | None, flag: str = "--dtf-requires") -> dict[str, Any]:
    """``K=V`` pairs as a task's ``requires``; ``hardware`` accumulates an any-of list."""
    try:
        pairs = config.parse_assignments(list(items or []), flag)
    except config.ConfigError as exc:
        raise PlanError(str(exc)) from None
    requires: dict[str, Any] = {}
    for key, value in pairs:
        if key == "hardware":
            wanted = requires.setdefault("hardware", [])
            for name in str(value).replace("|", ",").split(","):
                if name.strip() and name.strip() not in wanted:
                    wanted.append(name.strip())
        else:
            requires[key] = value
    return requires


def parse_labels(items: Iterable[str] | None) -> dict[str, str]:
    """``--dtf-label K=V`` values (stored on the run's job, beside its git facts)."""
    try:
        return runmeta.parse_labels(items, "--dtf-label")
    except runmeta.MetaError as exc:
        raise PlanError(str(exc)) from None


def run_meta(rootdir: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """What the run's job records of where it came from: the git facts of the suite's rootdir
    (the checkout under test) and the labels. A run is one job, so this is sent once."""
    return runmeta.collect(rootdir, dict(labels))


def parse_marker_map(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The ini option ``dtf_markers`` (``gpu = hardware=cuda min_memory_gb=16``): marker name to
    the requirements every test carrying that marker adds."""
    markers: dict[str, dict[str, Any]] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise PlanError(f"dtf_markers line {line!r}: expected 'marker = KEY=VALUE ...'")
        pairs = rest.replace(",", " ").split()
        markers[name.strip()] = parse_requires(pairs, f"dtf_markers {name.strip()}")
    return markers


def _hardware(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def merge_requires(base: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``--dtf-requires`` with one test's own: the test's keys win, and two hardware
    any-of lists meet in their intersection (a cuda test in a ``cuda,rocm`` run needs cuda)."""
    merged = {**base, **item}
    if "hardware" in base and "hardware" in item:
        mine = _hardware(item["hardware"])
        both = [h for h in _hardware(base["hardware"]) if h in mine]
        merged["hardware"] = both or mine
    return merged


def requires_key(requires: Mapping[str, Any]) -> str:
    return json.dumps(requires, sort_keys=True, default=str)


# --------------------------------------------------------------- session args


@dataclass(frozen=True)
class Option:
    """What the argument parser knows about one option string: where it goes and whether it
    takes a value (argparse's ``nargs``: 0 none, None one, ``"?"`` an optional one)."""

    dest: str
    nargs: int | str | None


def _takes_value(option: Option | None, token_has_value: bool) -> bool:
    if option is None or token_has_value:
        return False
    return option.nargs not in (0, "?")


def session_args(
    args: Sequence[str],
    options: Mapping[str, Option],
    invocation_dir: str,
    rootdir: str,
) -> list[str]:
    """The user's pytest arguments as a worker session gets them.

    Drops dtf's options (dest ``dtf*``) and :data:`CONTROLLER_ONLY_DESTS` in any spelling
    (``-xvs`` keeps ``-v -s``), and makes paths relative to the rootdir: the session runs there,
    not where the user typed the command. ``--dtf`` takes its endpoint only as ``--dtf=EP``, so
    the token after a bare ``--dtf`` is a path.
    """
    out: list[str] = []
    positional: list[str] = []
    pyargs = False
    i = 0
    n = len(args)

    def dropped(option: Option | None) -> bool:
        return option is not None and (option.dest in CONTROLLER_ONLY_DESTS or option.dest.startswith("dtf"))

    while i < n:
        token = args[i]
        if token == "--":
            positional.extend(args[i + 1 :])
            break
        if token.startswith("--"):
            name, eq, _ = token.partition("=")
            option = options.get(name)
            taken = [token]
            if name != "--dtf" and _takes_value(option, bool(eq)) and i + 1 < n:
                taken.append(args[i + 1])
                i += 1
            if option is not None and option.dest == "pyargs":
                pyargs = True
            if not dropped(option):
                out.extend(taken)
        elif token.startswith("-") and len(token) > 1:
            j = 1
            while j < len(token):
                option = options.get("-" + token[j])
                if _takes_value(option, False):
                    value = token[j + 1 :]
                    if not value and i + 1 < n:
                        value = args[i + 1]
                        i += 1
                    if not dropped(option):
                        out.extend(["-" + token[j], value])
                    break
                if not dropped(option):
                    out.append("-" + token[j])
                j += 1
        else:
            positional.append(token)
        i += 1
    if not pyargs:
        positional = [_rootdir_relative(p, invocation_dir, rootdir) for p in positional]
        if not positional and os.path.abspath(invocation_dir) != os.path.abspath(rootdir):
            positional = [_rootdir_relative(".", invocation_dir, rootdir)]
    return out + positional


def _rootdir_relative(arg: str, invocation_dir: str, rootdir: str) -> str:
    """A path (or ``path::test`` node id) typed in ``invocation_dir``, relative to ``rootdir``."""
    path, sep, rest = arg.partition("::")
    full = os.path.normpath(os.path.join(invocation_dir, path))
    rel = os.path.relpath(full, rootdir)
    if rel.startswith(os.pardir):
        rel = full  # outside the rootdir: only an absolute path can name it
    return rel + sep + rest


# ------------------------------------------------------------------ --lf / --ff


def _test_file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def select_last_failed(
    nodeids: Sequence[str],
    last_failed: Iterable[str],
    lf: bool,
    ff: bool,
    no_failures: str = "all",
) -> tuple[list[str], list[str], str | None]:
    """pytest's ``--lf`` / ``--ff`` on collected node ids: ``(to run in order, deselected,
    status line)``. A failed file (a collection error last time) selects all of its tests."""
    if not (lf or ff):
        return list(nodeids), [], None
    failed = set(last_failed)
    previous = [n for n in nodeids if n in failed or _test_file(n) in failed]
    if not failed:
        if lf and no_failures == "none":
            return [], list(nodeids), "run-last-failure: no previously failed tests, deselecting all items."
        return list(nodeids), [], "run-last-failure: no previously failed tests, not deselecting items."
    if not previous:
        noun = "failure" if len(failed) == 1 else "failures"
        return list(nodeids), [], f"run-last-failure: {len(failed)} known {noun} not in selected tests"
    noun = "failure" if len(previous) == 1 else "failures"
    if lf:
        chosen = set(previous)
        return (
            previous,
            [n for n in nodeids if n not in chosen],
            f"run-last-failure: rerun previous {len(previous)} {noun}",
        )
    chosen = set(previous)
    rest = [n for n in nodeids if n not in chosen]
    return previous + rest, [], f"run-last-failure: rerun previous {len(previous)} {noun} first"


# ----------------------------------------------------------------- scheduling


@dataclass
class Unit:
    """One task of the run: node ids a session runs in this order, on a worker meeting
    ``requires``; ``cost`` is the estimated seconds, the task's priority (longest first), unless
    ``first`` (the collection, ``--ff``'s failures, reruns) puts it ahead of everything."""

    name: str
    nodeids: list[str]
    requires: dict[str, Any]
    cost: float
    rerun: int = 0
    label: str = ""
    first: bool = False

    @property
    def priority(self) -> int:
        return defaults.MAX_PRIORITY - 1 if self.first else priority(self.cost)


def priority(cost: float) -> int:
    """Estimated milliseconds as the broker's priority: higher runs first, so longest first
    (the top value is kept for units that go ``first``)."""
    return max(0, min(defaults.MAX_PRIORITY - 2, round(cost * 1000)))


def estimate_costs(nodeids: Iterable[str], durations: Mapping[str, float]) -> dict[str, float]:
    """Seconds per test: learned, else the median of the learned ones in this run, else a default."""
    nodeids = list(nodeids)
    known = [float(durations[n]) for n in nodeids if isinstance(durations.get(n), int | float)]
    fallback = statistics.median(known) if known else defaults.PYTEST_UNKNOWN_TEST_SECONDS
    return {n: float(durations[n]) if isinstance(durations.get(n), int | float) else fallback for n in nodeids}


def _unit_name(index: int, label: str) -> str:
    return f"{index:05d} {label}"[: defaults.PYTEST_TASK_NAME_CHARS]


def plan_units(
    items: Sequence[Mapping[str, Any]],
    dist: str,
    costs: Mapping[str, float],
    sessions: int,
    base_requires: Mapping[str, Any] | None = None,
) -> list[Unit]:
    """The run's scheduling units for ``--dtf-dist`` (xdist's meanings), in planning order.

    ``load``: chunks of consecutive tests of one file, guided self-scheduling by estimated
    seconds (each chunk about the remaining work over ``PYTEST_CHUNKS_PER_SESSION x sessions``,
    at least ``PYTEST_MIN_CHUNK_SECONDS``, at most ``PYTEST_MAX_CHUNK_TESTS`` tests): large chunks
    first, small ones to fill the tail. ``loadfile``: a file. ``loadscope``: a class, else a
    module. ``loadgroup``: an ``xdist_group`` name; tests without one are chunked as ``load``.
    A unit never mixes requirements: tests needing other hardware go to a unit of their own.
    """
    if dist not in DIST_MODES:
        raise PlanError(f"--dtf-dist must be one of {', '.join(DIST_MODES)}, not {dist!r}")
    base = dict(base_requires or {})
    sessions = max(1, sessions)
    keyed = [(item, merge_requires(base, item.get("requires") or {})) for item in items]
    units: list[Unit] = []

    def add(label: str, group: list[tuple[Mapping[str, Any], dict[str, Any]]]) -> None:
        nodeids = [item["nodeid"] for item, _ in group]
        units.append(
            Unit(
                name=_unit_name(len(units), label),
                nodeids=nodeids,
                requires=group[0][1],
                cost=sum(costs.get(n, defaults.PYTEST_UNKNOWN_TEST_SECONDS) for n in nodeids),
                label=label,
            )
        )

    def grouped(key_of: Any, pairs: list[tuple[Mapping[str, Any], dict[str, Any]]]) -> None:
        groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], dict[str, Any]]]] = {}
        for item, req in pairs:
            groups.setdefault((key_of(item), requires_key(req)), []).append((item, req))
        for (label, _), group in groups.items():
            add(label, group)

    if dist == "loadfile":
        grouped(lambda item: _test_file(item["nodeid"]), keyed)
    elif dist == "loadscope":
        grouped(lambda item: item.get("scope") or _test_file(item["nodeid"]), keyed)
    elif dist == "loadgroup":
        grouped(lambda item: f"group {item['group']}", [(i, r) for i, r in keyed if i.get("group")])
        _chunk([(i, r) for i, r in keyed if not i.get("group")], costs, sessions, add)
    else:
        _chunk(keyed, costs, sessions, add)
    return units


def _chunk(
    pairs: list[tuple[Mapping[str, Any], dict[str, Any]]],
    costs: Mapping[str, float],
    sessions: int,
    add: Any,
) -> None:
    """Guided self-scheduling over runs of consecutive tests with one file and one requirement."""
    remaining = sum(costs.get(item["nodeid"], defaults.PYTEST_UNKNOWN_TEST_SECONDS) for item, _ in pairs)
    runs: list[list[tuple[Mapping[str, Any], dict[str, Any]]]] = []
    last: tuple[str, str] | None = None
    for item, req in pairs:
        key = (_test_file(item["nodeid"]), requires_key(req))
        if key != last:
            runs.append([])
            last = key
        runs[-1].append((item, req))
    for run in runs:
        start = 0
        while start < len(run):
            target = max(remaining / (defaults.PYTEST_CHUNKS_PER_SESSION * sessions), defaults.PYTEST_MIN_CHUNK_SECONDS)
            end, cost = start, 0.0
            while end < len(run) and end - start < defaults.PYTEST_MAX_CHUNK_TESTS and (end == start or cost < target):
                cost += costs.get(run[end][0]["nodeid"], defaults.PYTEST_UNKNOWN_TEST_SECONDS)
                end += 1
            chunk = run[start:end]
            first = _test_file(chunk[0][0]["nodeid"])
            label = first if start == 0 and end == len(run) else f"{first}[{start}:{end}]"
            add(label, chunk)
            remaining -= cost
            start = end


# ---------------------------------------------------------------- dtf pytest


SHORTHAND_FLAGS = {
    "--broker": "--dtf",
    "--curve-secret": "--dtf-curve-secret",
    "--broker-key": "--dtf-broker-key",
    "--label": "--dtf-label",
}
SHORTHAND_HIDDEN = {"--timeout-connect": "--dtf-connect-timeout"}


def shorthand_args(argv: Sequence[str]) -> list[str]:
    """``dtf pytest`` arguments as pytest's: ``--broker EP`` (or ``--broker=EP``) anywhere becomes
    ``--dtf=EP`` (``--dtf`` alone without one), the CURVE flags their ``--dtf-`` spellings;
    everything else goes to pytest untouched, in order."""
    out: list[str] = []
    endpoint = ""
    flags = {**SHORTHAND_FLAGS, **SHORTHAND_HIDDEN}
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if name in flags and (eq or i + 1 < len(argv)):
            if not eq:
                value = argv[i + 1]
                i += 1
            if name == "--broker":
                endpoint = value
            else:
                out.append(f"{flags[name]}={value}")
        elif token == "--":
            out.extend(argv[i:])
            break
        else:
            out.append(token)
        i += 1
    return [f"--dtf={endpoint}", *out]


def _plugin_installed() -> bool:
    """Whether pytest finds the controller through the ``pytest11`` entry point ``dtf``."""
    from importlib import metadata

    return any(ep.name == "dtf" for ep in metadata.entry_points(group="pytest11"))


def main(argv: Sequence[str]) -> int:
    """``dtf pytest ARGS...``: ``pytest --dtf ARGS...`` in this process; pytest's exit code."""
    import pytest

    args = shorthand_args(argv)
    if not _plugin_installed():  # a checkout run through bin/dtf without `pip install -e .`
        args = ["-p", "dtf_bus.pytest_dist.plugin", *args]
    return int(pytest.main(args))
