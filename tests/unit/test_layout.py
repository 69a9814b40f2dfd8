"""The structure's rules, checked on the source: no import cycle, no module over 500 lines, I/O at the edges.

Imports are read with ``ast`` from every module, including those under ``if TYPE_CHECKING:`` and inside
functions: a cycle hidden in either still ties the modules together for the next reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"dtf_bus": "dtf_bus", "dtf_plugins": "plugins", "dtf_dashboard": "bokeh_app"}
MAX_LINES = 500
# The pure state machines: events in, instructions out. Nothing of theirs may open a socket, start a
# thread or sleep, so their unit tests run in milliseconds and mean the same in production.
PURE = ["dtf_bus.broker.state", "dtf_bus.worker.state"]
IO_MODULES = {"zmq", "socket", "threading", "subprocess", "tornado", "duckdb", "time"}


def module_name(path: Path) -> str:
    """The import name of a source file, under its installed package name."""
    rel = path.relative_to(ROOT)
    installed = {v: k for k, v in PACKAGES.items()}[rel.parts[0]]
    parts = [installed, *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {
        module_name(p): p
        for folder in PACKAGES.values()
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # ``from pkg import mod`` ties us to mod; pkg itself only when a name is not a module
            targets = submodules + ([base] if any(s not in known for s in submodules) else [])
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name from a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = sources()
    known = set(mods)
    # A package's __init__ holds only a docstring here, so importing a submodule is not an edge to it.
    return {name: {t for t in imports(name, path, known) if t not in _faces(mods)} for name, path in mods.items()}


def _faces(mods: dict[str, Path]) -> set[str]:
    return {n for n, p in mods.items() if p.name == "__init__.py" and not _defines(p)}


def _defines(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(not isinstance(node, ast.Expr) for node in tree.body)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_over_500_lines():
    long = {name: n for name, p in sources().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("name", PURE)
def test_state_machines_do_no_io(name):
    mods = sources()
    assert name in mods, f"{name} is missing"
    tree = ast.parse(mods[name].read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            used.add((node.module or "").split(".")[0])
    assert used & IO_MODULES == set()


def test_installed_names_are_dtf_s_own():
    assert all(name.startswith("dtf_") for name in sources())
