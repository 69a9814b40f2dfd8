"""pyproject.toml's package list: what the wheel installs, and under which names.

Packages are listed, not found (find cannot rename plugins/ to dtf_plugins), so a new
sub-package of dtf_bus that nobody listed would work in a checkout and be missing from the
wheel; this test catches that. The wheel itself is built and run in tests/deploy."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
RENAMED = {"dtf_plugins": "plugins", "dtf_dashboard": "bokeh_app", "dtf_configs": "configs"}


def source_dir(package: str) -> Path:
    top, *rest = package.split(".")
    return ROOT / SETUPTOOLS["package-dir"].get(top, top) / Path(*rest)


def test_the_repository_directories_install_under_dtf_names():
    assert SETUPTOOLS["package-dir"] == RENAMED
    assert not {"plugins", "bokeh_app", "configs"} & {p.split(".")[0] for p in SETUPTOOLS["packages"]}


def test_every_package_on_disk_is_listed_and_every_listed_one_exists():
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "dtf_bus").rglob("__init__.py")} | set(
        RENAMED
    )
    listed = set(SETUPTOOLS["packages"])
    assert listed == on_disk, f"pyproject packages: add {sorted(on_disk - listed)}, drop {sorted(listed - on_disk)}"
    for package in listed:
        assert (source_dir(package) / "__init__.py").is_file(), package


def test_the_worker_profiles_are_package_data():
    globs = SETUPTOOLS["package-data"]["dtf_configs"]
    shipped = {p for g in globs for p in (ROOT / "configs").glob(g)}
    assert shipped == set((ROOT / "configs").rglob("*.toml")), "a config file the wheel would leave out"
    assert (ROOT / "configs" / "workers" / "cpu-small.toml") in shipped


def test_executor_entry_points_name_installed_modules():
    points = metadata.entry_points(group="dtf.executors")
    assert {"sim", "shell", "pytest", "python", "cpu", "cuda", "browser"} <= set(points.names)
    for point in points:
        module = point.value.partition(":")[0]
        assert module.startswith("dtf_plugins."), point
        assert (source_dir(module.rpartition(".")[0]) / f"{module.rpartition('.')[2]}.py").is_file(), point
