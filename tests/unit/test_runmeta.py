"""Run metadata: labels and SUBMIT ``meta`` checked as the broker checks them, and stored on the
job's row in an old database file as in a new one (recovery reads both)."""

from __future__ import annotations

import duckdb
import pytest

from dtf_bus import defaults, runmeta
from dtf_bus.store import recovery, rows
from dtf_bus.store.db import Store
from dtf_bus.task import Job

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_labels_parse_and_bad_ones_name_the_flag():
    assert runmeta.parse_labels(["suite=nightly", "ci/run=42", "suite=again", "empty="]) == {
        "suite": "again",
        "ci/run": "42",
        "empty": "",
    }
    with pytest.raises(runmeta.MetaError, match=r"--label: expected KEY=VALUE, got 'nightly'"):
        runmeta.parse_labels(["nightly"])
    with pytest.raises(runmeta.MetaError, match="label key 'a b'"):
        runmeta.parse_labels(["a b=1"])
    with pytest.raises(runmeta.MetaError, match="--dtf-label: label key ''"):
        runmeta.parse_labels(["=1"], "--dtf-label")
    too_many = [f"k{i}=v" for i in range(defaults.MAX_JOB_LABELS + 1)]
    with pytest.raises(runmeta.MetaError, match=f"at most {defaults.MAX_JOB_LABELS}"):
        runmeta.parse_labels(too_many)
    with pytest.raises(runmeta.MetaError, match="at most 256 chars"):
        runmeta.parse_labels(["k=" + "v" * 257])


@pytest.mark.parametrize(
    ("meta", "error"),
    [
        ("x", "meta: expected a table"),
        ({"commit": SHA[:12]}, "meta.commit: expected the full 40-character"),
        ({"commit": SHA.upper()}, "meta.commit"),
        ({"branch": ""}, "meta.branch"),
        ({"branch": "b" * 257}, "meta.branch"),
        ({"dirty": "yes"}, "meta.dirty: expected true or false"),
        ({"commit_time": True}, "meta.commit_time: expected epoch seconds"),
        ({"commit_time": float("nan")}, "meta.commit_time"),
        ({"commit_time": 1e12}, "not a plausible epoch"),
        ({"labels": ["a"]}, "meta.labels: expected a table"),
        ({"labels": {"k": 1}}, "label 'k' must be a string"),
        ({"hostname": "x"}, "unknown field"),
    ],
)
def test_the_broker_refuses_malformed_meta_naming_the_field(meta, error):
    with pytest.raises(runmeta.MetaError, match=error):
        runmeta.validate_meta(meta)


def test_valid_meta_is_kept_as_sent():
    meta = {"commit": SHA, "branch": "main", "dirty": False, "commit_time": 1_700_000_000, "labels": {"a": "1"}}
    assert runmeta.validate_meta(meta) == {**meta, "commit_time": 1_700_000_000.0}
    assert runmeta.validate_meta(None) == {} == runmeta.validate_meta({})
    assert runmeta.validate_meta({"commit": "f" * 64}) == {"commit": "f" * 64}  # a SHA-256 repository


OLD_JOBS = "CREATE TABLE jobs (job_id VARCHAR PRIMARY KEY, name VARCHAR, submitted_at TIMESTAMP, total INTEGER);"


def test_an_old_file_gains_the_columns_and_jobs_round_trip_through_recovery(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_JOBS)
    con.execute("INSERT INTO jobs VALUES ('old', 'before', now()::TIMESTAMP, 0)")
    con.close()
    meta = {"commit": SHA, "branch": "main", "dirty": True, "commit_time": 1_700_000_000.0, "labels": {"s": "n"}}
    store = Store(path, flush_interval=0.05)
    try:
        store.put("jobs", rows.job_row(Job("new", "after", [], submitted_at=1_700_000_100.0, meta=meta), 0))
        assert store.flush(10)
        cursor = store.cursor()
        jobs, _ = recovery.load_jobs(cursor, "TRUE", [])
        cursor.close()
    finally:
        store.close()
    by_id = {job.job_id: job for job in jobs}
    assert by_id["old"].meta == {} and by_id["old"].submitter == "anonymous"
    assert by_id["new"].meta == meta
