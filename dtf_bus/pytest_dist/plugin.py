"""``pytest --dtf``: run a pytest suite across a dtf fleet and look exactly like pytest.

Registered as the ``pytest11`` entry point ``dtf``, so it loads in every pytest run. Without
``--dtf`` it only declares its options, its ini key and the ``dtf`` marker (so a suite using
the marker passes ``--strict-markers`` locally too) and costs nothing else: no dtf module beyond
``defaults`` is imported. That is why this module holds only the options and the switch: with
``--dtf`` it checks them (:mod:`~dtf_bus.pytest_dist.settings`), reaches the broker and registers
the controller of docs/pytest-dist.md (:mod:`~dtf_bus.pytest_dist.controller`, modelled on
pytest-xdist's ``DSession``), which plans with :mod:`~dtf_bus.pytest_dist.plan`, submits with
:mod:`~dtf_bus.pytest_dist.scheduling` and replays every worker report through pytest's own hooks
(:mod:`~dtf_bus.pytest_dist.replay`). The terminal, ``--junitxml``, ``--durations``, ``-x``,
``-ra`` and any conftest or reporting plugin on this side therefore behave as in a local run.

``--dtf`` takes its endpoint only as ``--dtf=EP`` (as pytest-cov's ``--cov``): ``pytest --dtf
tests/`` is the default endpoint and the path ``tests/``.
"""

from __future__ import annotations

import copy
import sys

import pytest

from dtf_bus import defaults

MARKER_LINE = (
    "dtf(requires={...}, resources={...}): under pytest --dtf, run this test only on dtf workers "
    "meeting these requirements (hardware any-of, min_memory_gb, or any capability), holding these "
    "consumable resources (e.g. resources={'gpus': 1}: a GPU of its own) while it runs"
)


# ----------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dtf", "distributed testing over a dtf fleet")
    group.addoption(
        "--dtf",
        nargs="?",
        const="",
        default=None,
        metavar="EP",
        help="run the tests on the dtf fleet at EP (only as --dtf=EP; default $DTF_BROKER, else "
        f"{defaults.BROKER_ENDPOINT})",
    )
    group.addoption(
        "--dtf-requires",
        action="append",
        default=[],
        metavar="K=V",
        help="worker requirement for every test, e.g. hardware=cuda (repeatable; hardware accumulates any-of)",
    )
    group.addoption(
        "--dtf-dist",
        choices=("load", "loadfile", "loadscope", "loadgroup"),
        default="load",
        help="scheduling units, as xdist's --dist: load (default), loadfile, loadscope, loadgroup",
    )
    group.addoption("--dtf-label", action="append", default=[], metavar="K=V", help="a label stored on the run's job")
    group.addoption("--dtf-max-workers", type=int, default=None, metavar="N", help="use at most N sessions at once")
    group.addoption("--dtf-python", default=None, metavar="PATH", help="the interpreter the workers run pytest with")
    group.addoption(
        "--dtf-reruns", type=int, default=0, metavar="N", help="rerun a failed test up to N times (passing: flaky)"
    )
    group.addoption(
        "--dtf-placement-timeout",
        type=float,
        default=defaults.PYTEST_PLACEMENT_TIMEOUT,
        metavar="S",
        help="seconds a test waits for a live worker that can run it (default %(default)s)",
    )
    group.addoption(
        "--dtf-curve-secret", default=None, metavar="FILE", help="CURVE keypair (default $DTF_CURVE_SECRET)"
    )
    group.addoption(
        "--dtf-broker-key", default=None, metavar="FILE", help="the broker's CURVE public key (default $DTF_BROKER_KEY)"
    )
    group.addoption(
        "--dtf-connect-timeout",
        type=float,
        default=defaults.CLIENT_TIMEOUT,
        metavar="S",
        help="seconds the broker has to answer (default %(default)s)",
    )
    group.addoption("--dtf-ship", action="store_true", help="ship the project (rootdir's git checkout) to the workers")
    group.addoption("--dtf-ship-requirements", metavar="FILE", help="with --dtf-ship: tests run in a venv of FILE")
    group.addoption(
        "--dtf-ship-max-bytes", type=int, default=defaults.SHIP_MAX_BYTES, metavar="N", help="ship at most N bytes"
    )
    parser.addini(
        "dtf_markers",
        "dtf: marker name = worker requirements (K=V ...), one per line, e.g. 'gpu = hardware=cuda'",
        type="linelist",
        default=[],
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """A bare ``--dtf`` never takes the next token as its endpoint: it becomes ``--dtf=``, and the
    early parse is redone so the initial conftests are those of the paths the user gave."""
    if "--dtf" not in args:
        return
    args[:] = ["--dtf=" if a == "--dtf" else a for a in args]
    known = early_config.known_args_namespace
    reparsed = parser.parse_known_args(args, namespace=copy.copy(early_config.option))
    if reparsed.confcutdir is None:
        reparsed.confcutdir = known.confcutdir
    early_config.known_args_namespace = reparsed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Turns on the controller: checks the options, reaches the broker, registers the plugin.
    An unreachable broker is one line and exit 3, before any session output."""
    endpoint = config.getoption("dtf", None)
    if endpoint is None:
        return None
    option = config.option
    if option.help or option.version or option.markers or option.showfixtures or option.show_fixtures_per_test:
        return None
    # `from dtf_bus.pytest_dist.plan import`, never `from dtf_bus.pytest_dist import plan`: the
    # latter takes the package's attribute, which pytester's in-process runs leave pointing at a
    # module they dropped from sys.modules, and PlanError would then be two classes.
    from dtf_bus import config as dtf_config
    from dtf_bus.client import BrokerUnreachable, Client, ClientError, default_endpoint
    from dtf_bus.pytest_dist.controller import EXIT_UNREACHABLE, Controller
    from dtf_bus.pytest_dist.plan import PlanError
    from dtf_bus.pytest_dist.settings import Settings
    from dtf_bus.security import curve as security
    from dtf_bus.ship import client as ship_client

    try:
        endpoint = dtf_config.endpoint(endpoint or default_endpoint(), "--dtf")
        settings = Settings.from_config(config)
        curve = security.resolve_client_curve(option.dtf_curve_secret, option.dtf_broker_key)
    except (PlanError, security.SecurityError, dtf_config.ConfigError) as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return pytest.ExitCode.USAGE_ERROR
    client = Client(endpoint, timeout=option.dtf_connect_timeout, curve=curve)
    try:
        workers = client.workers()
        settings.ship = ship_client.for_pytest(client, config.rootpath, option)  # --dtf-ship: packed, uploaded
    except BrokerUnreachable as exc:
        client.close()
        sys.stderr.write(f"dtf: {exc}\n")
        return EXIT_UNREACHABLE
    except ClientError as exc:
        client.close()
        sys.stderr.write(f"ERROR: dtf: {exc}\n")
        return pytest.ExitCode.USAGE_ERROR
    client.timeout = max(client.timeout, defaults.CLIENT_TIMEOUT)
    config.pluginmanager.register(Controller(config, client, settings, workers), "dtf-controller")
    return None
