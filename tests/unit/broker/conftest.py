"""Fixtures for the broker's state-machine tests (driver.py drives them).

One real DuckDB store serves every test of this directory (opening one costs more than a test):
a machine built here never restores from it, and every job id is new, so tests stay apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from dtf_bus.balancer.least_loaded import LeastLoaded
from dtf_bus.broker.health import Health
from dtf_bus.broker.machine import BrokerMachine
from dtf_bus.ship.store import ShipStore
from dtf_bus.store.archive import Archive
from dtf_bus.store.db import Store
from tests.unit.broker.driver import DEAD, INTERVAL, LIVENESS, Driver


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("state") / "state.duckdb", flush_interval=0.005)
    yield store
    store.close()


@pytest.fixture(scope="session")
def archive(store: Store) -> Iterator[Archive]:
    archive = Archive(store)
    yield archive
    archive.close()


@pytest.fixture
def make_driver(store: Store, archive: Archive):
    def make(**kwargs: Any) -> Driver:
        kwargs.setdefault("health", Health(INTERVAL, LIVENESS, DEAD))
        kwargs.setdefault("rng", random.Random(7))
        kwargs.setdefault("strategy", LeastLoaded())  # built, not looked up: entry points cost ms
        kwargs.setdefault("prefetch", 0)
        machine = BrokerMachine(store, ships=ShipStore(None), archive=archive, **kwargs)
        return Driver(machine, store)

    return make


@pytest.fixture
def driver(make_driver) -> Driver:
    return make_driver()
