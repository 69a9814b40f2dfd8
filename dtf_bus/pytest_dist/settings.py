"""The run's ``--dtf-*`` options, checked once, and the arguments the worker sessions get.

Apart from the entry point (:mod:`dtf_bus.pytest_dist.plugin`), which must stay cheap: this
module imports the planning code and is loaded only when ``--dtf`` is given.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest

from dtf_bus.pytest_dist.plan import Option, PlanError, parse_labels, parse_marker_map, parse_requires, session_args


@dataclass
class Settings:
    """The run's dtf options, checked once."""

    requires: dict[str, Any]
    dist: str
    max_workers: int | None
    python: str | None
    reruns: int
    placement_timeout: float
    marker_requires: dict[str, dict[str, Any]]
    args: list[str] = field(default_factory=list)
    ship: Any = None  # dtf_bus.ship.client.Shipped with --dtf-ship
    labels: dict[str, str] = field(default_factory=dict)  # --dtf-label, stored on the job with its git facts

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        option = config.option
        if getattr(option, "numprocesses", None):
            raise PlanError("--dtf and -n (pytest-xdist) cannot be used together")
        if option.dtf_max_workers is not None and option.dtf_max_workers < 1:
            raise PlanError("--dtf-max-workers must be at least 1")
        if option.dtf_reruns < 0:
            raise PlanError("--dtf-reruns must be >= 0")
        if not option.dtf_placement_timeout >= 0:
            raise PlanError("--dtf-placement-timeout must be >= 0 seconds")
        return cls(
            requires=parse_requires(option.dtf_requires),
            dist=option.dtf_dist,
            max_workers=option.dtf_max_workers,
            python=option.dtf_python,
            reruns=option.dtf_reruns,
            placement_timeout=option.dtf_placement_timeout,
            marker_requires=parse_marker_map(config.getini("dtf_markers")),
            args=session_args_of(config),
            labels=parse_labels(option.dtf_label),
        )


def session_args_of(config: pytest.Config) -> list[str]:
    """The user's arguments (``PYTEST_ADDOPTS`` first, as pytest reads them) as worker sessions
    get them; ini ``addopts`` are left out, the sessions read the same ini file."""
    options: dict[str, Option] = {}
    for group in getattr(config._parser, "_groups", []):  # no public API lists the options
        for opt in group.options:
            nargs = opt.attrs().get("nargs")
            if nargs is None and opt.attrs().get("action") in (
                "store_true",
                "store_false",
                "store_const",
                "count",
                "append_const",
            ):
                nargs = 0  # pytest 8 keeps addoption's keywords, not argparse's action
            for name in opt.names():
                options[name] = Option(opt.dest, nargs)
    args = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + list(config.invocation_params.args)
    return session_args(args, options, str(config.invocation_params.dir), str(config.rootpath))
