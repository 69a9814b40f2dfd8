"""The one config merge of the broker, the worker and ``dtf``: flag > environment > file > default,
given values kept even when 0, empty or false, and unknown keys and tables refused by name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dtf_bus import config, defaults
from dtf_bus.broker.app import BROKER_OPTIONS
from dtf_bus.client import CLIENT_OPTIONS
from dtf_bus.config import ConfigError, Option
from dtf_bus.worker.options import WORKER_OPTIONS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "configs" / "workers").glob("*.toml"))
OPTIONS = (Option("broker", env="DTF_BROKER"), Option("slots"), Option("plugins", flag="plugin"))
WHERE = "[worker] of w.toml"


def merge(flags: dict, env: dict | None = None, table: dict | None = None) -> config.Settings:
    return config.merge(OPTIONS, argparse.Namespace(**flags), env or {}, table or {}, WHERE)


@pytest.mark.parametrize(
    ("flag", "env", "table", "expected", "origin"),
    [
        ("tcp://flag:1", "tcp://env:1", "tcp://file:1", "tcp://flag:1", "--broker"),
        (None, "tcp://env:1", "tcp://file:1", "tcp://env:1", "$DTF_BROKER"),
        (None, None, "tcp://file:1", "tcp://file:1", "broker in [worker] of w.toml"),
        (None, None, None, "tcp://default:1", "default"),
    ],
)
def test_flag_beats_environment_beats_file_beats_default(flag, env, table, expected, origin):
    settings = merge({"broker": flag}, {"DTF_BROKER": env} if env else {}, {"broker": table} if table else {})
    assert settings.get("broker", "tcp://default:1") == expected
    assert settings.origin("broker") == origin


@pytest.mark.parametrize("value", [0, 0.0, "", False, []])
def test_a_given_flag_counts_even_when_falsy(value):
    settings = merge({"slots": value}, table={"slots": 4})
    assert settings.get("slots", 1) == value and settings.origin("slots") == "--slots"


@pytest.mark.parametrize("value", [0, "", False])
def test_a_given_file_value_counts_even_when_falsy(value):
    assert merge({"slots": None}, table={"slots": value}).get("slots", 1) == value


def test_an_empty_environment_variable_is_unset():
    settings = merge({"broker": None}, {"DTF_BROKER": ""}, {"broker": "tcp://file:1"})
    assert settings.get("broker") == "tcp://file:1"


def test_an_environment_value_is_text_and_only_named_variables_count():
    settings = merge({}, {"DTF_BROKER": "tcp://env:1", "DTF_SLOTS": "3"})
    assert settings.get("broker") == "tcp://env:1" and settings.get("slots", 1) == 1


def test_a_flag_with_another_dest_fills_its_config_key():
    settings = merge({"plugin": ["sim"]}, table={"plugins": ["shell"]})
    assert settings.get("plugins") == ["sim"] and settings.origin("plugins") == "--plugin"


def test_flags_may_be_a_mapping_and_missing_flags_are_not_given():
    settings = config.merge(OPTIONS, {}, {}, {"slots": 2}, WHERE)
    assert settings.get("slots") == 2 and settings.get("broker") is None


def test_an_unknown_key_is_refused_by_name_with_the_known_ones():
    with pytest.raises(ConfigError) as refused:
        merge({}, table={"slot": 4})
    assert str(refused.value) == "unknown key 'slot' in [worker] of w.toml; known: broker, plugins, slots"


def test_asking_for_an_option_nobody_declared_is_a_bug():
    with pytest.raises(KeyError):
        merge({}).get("slot")


def test_load_refuses_an_unknown_table_and_a_key_outside_any_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[wroker]\nslots = 2\n")
    with pytest.raises(ConfigError, match=r"^unknown table \[wroker\] in .*c\.toml; known: \[broker\], \[worker\]"):
        config.load(path)
    path.write_text('slots = 2\n[worker]\nbroker = "tcp://h:1"\n')
    with pytest.raises(ConfigError, match=r"^unknown key 'slots' in .*c\.toml, outside any table"):
        config.load(path)
    path.write_text('[broker]\nbind = "tcp://h:1"\n[worker]\nslots = 2\n[capabilities]\npool = "ci"\n')
    assert config.load(path)["worker"] == {"slots": 2}


def test_the_commands_read_their_documented_variables():
    assert {o.name: o.env for o in WORKER_OPTIONS if o.env} == {
        "broker": defaults.BROKER_ENV,
        "curve_secret": defaults.CURVE_SECRET_ENV,
        "broker_key": defaults.BROKER_KEY_ENV,
        "alive_file": defaults.ALIVE_FILE_ENV,
        "ship_cache": defaults.SHIP_CACHE_DIR_ENV,
    }
    assert [o.env for o in CLIENT_OPTIONS] == ["DTF_BROKER", "DTF_CURVE_SECRET", "DTF_BROKER_KEY"]
    assert not any(o.env for o in BROKER_OPTIONS)  # the broker reads no variables


@pytest.mark.parametrize(
    ("path", "section", "options"),
    [
        ("configs/broker.toml", "broker", BROKER_OPTIONS),
        ("deploy/docker/broker.toml", "broker", BROKER_OPTIONS),
        ("configs/worker-cpu.toml", "worker", WORKER_OPTIONS),
        *[
            (f"configs/workers/{p.name}", "worker", WORKER_OPTIONS)
            for p in sorted((ROOT / "configs/workers").glob("*"))
        ],
    ],
)
def test_every_shipped_config_is_accepted(path, section, options):
    table = config.section(config.load(ROOT / path), section)
    assert table, path
    settings = config.merge(options, {}, {}, table, config.table_label(path, section))
    assert all(settings.get(key) == value for key, value in table.items())
