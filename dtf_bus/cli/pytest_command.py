"""``dtf pytest ARGS...``: ``pytest --dtf ARGS...`` (see :mod:`dtf_bus.pytest_dist.plan`).

Handed to pytest before argparse sees anything, since the arguments are pytest's. It keeps
pytest's own exit codes, plus 3 for an unreachable broker.
"""

from __future__ import annotations

import argparse
import sys

from dtf_bus import config
from dtf_bus.client import default_endpoint
from dtf_bus.pytest_dist import plan as pytest_dist

PYTEST_USAGE_ERROR = 4  # pytest's own code for a usage error: `dtf pytest` keeps pytest's codes


def run(argv: list[str]) -> int:
    """``argv`` is what follows ``dtf pytest``; an endpoint without a scheme is a usage error."""
    endpoint = pytest_dist.shorthand_args(argv)[0].partition("=")[2] or default_endpoint()
    try:
        config.endpoint(endpoint)
    except config.ConfigError as exc:
        print(f"dtf pytest: {exc}", file=sys.stderr)
        return PYTEST_USAGE_ERROR
    return pytest_dist.main(argv)


def add_parser(sub: argparse._SubParsersAction) -> None:
    # Listed for `dtf --help` only: main() hands `dtf pytest ...` to pytest before parsing.
    sub.add_parser(
        "pytest",
        add_help=False,
        help="run a pytest suite across the fleet: pytest --dtf ARGS... (--broker EP anywhere)",
    )
