"""The worker profiles ``dtf up`` starts its fleet with: the repository's configs/workers/*.toml.

The wheel installs configs/ as the package ``dtf_configs`` (pyproject.toml's package-dir), so the
profiles are found where dtf is installed, a checkout (editable install) or a venv alike, never
relative to the current directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dtf_bus.config import ConfigError

CONFIG_PACKAGE = "dtf_configs"


def config_dir() -> Path:
    """The installed configs/ directory. Found, not imported: it holds data, not code."""
    spec = importlib.util.find_spec(CONFIG_PACKAGE)
    if spec is None or not spec.origin:
        raise ConfigError(f"dtf's example configs are missing: package {CONFIG_PACKAGE} is not installed")
    return Path(spec.origin).parent


def worker_config(profile: str) -> Path:
    """The TOML file of one worker profile (``cpu-small`` -> .../workers/cpu-small.toml)."""
    return config_dir() / "workers" / f"{profile}.toml"
