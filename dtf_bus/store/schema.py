"""Every table of the results store, declared once: its columns, their SQL types, its key.

The DDL, the column order rows are written in (:mod:`dtf_bus.store.rows`), the ``SELECT``
recovery reads back with (:mod:`dtf_bus.store.recovery`) and the readers' field lists all
derive from these declarations, so a column is added in one place and cannot fall out of step
with a hand-written tuple. The core tables are created when the store opens; the result and
metric tables by the hooks that fill them (:class:`~dtf_bus.store.results.ResultRows`,
:class:`~dtf_bus.monitor.monitor.Monitor`). docs/schema.md describes what each column means.

Changing a table that files in the field already have: add the column here *and* append an
idempotent statement to ``migrations`` (``ADD COLUMN IF NOT EXISTS``); never edit one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _columns(text: str) -> tuple[tuple[str, str], ...]:
    """``name TYPE`` per line, as a CREATE TABLE lists them."""
    return tuple((name, sql_type) for name, sql_type in (line.split(None, 1) for line in text.strip().splitlines()))


@dataclass(frozen=True, slots=True)
class TableSchema:
    """One table: ``key`` leading columns form its primary key (0: append-only, every row
    kept; the store coalesces keyed rows by it); ``migrations`` bring older files up to it."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: int = 0
    migrations: tuple[str, ...] = ()
    names: tuple[str, ...] = field(init=False)
    types: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.columns))
        object.__setattr__(self, "types", dict(self.columns))

    def ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS``, then the migrations."""
        lines = []
        for i, (name, sql_type) in enumerate(self.columns):
            inline_key = " PRIMARY KEY" if self.key == 1 and i == 0 else ""
            lines.append(f"    {name} {sql_type}{inline_key}")
        if self.key > 1:
            lines.append(f"    PRIMARY KEY ({', '.join(self.names[: self.key])})")
        create = f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + "\n);\n"
        return create + "".join(f"{statement};\n" for statement in self.migrations)

    def row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row from values keyed by column name: every column, no other name (a typo would
        otherwise write NULL where a value was meant)."""
        if len(values) != len(self.names) or not all(name in values for name in self.names):
            unknown = sorted(set(values) - set(self.names))
            missing = [name for name in self.names if name not in values]
            raise ValueError(f"{self.name} row: unknown column(s) {unknown}, missing {missing}")
        return tuple(values[name] for name in self.names)

    def select(self, names: tuple[str, ...] | None = None) -> str:
        """The columns to read back (``names``, or all), by name: timestamps as epoch seconds,
        as rows carry them."""
        return ", ".join(
            f"epoch({name}) AS {name}" if self.types[name] == "TIMESTAMP" else name
            for name in (self.names if names is None else names)
        )


JOBS = TableSchema(
    "jobs",
    _columns("""
        job_id VARCHAR
        name VARCHAR
        submitted_at TIMESTAMP
        total INTEGER
        submitter VARCHAR
        git_commit VARCHAR
        git_branch VARCHAR
        git_dirty BOOLEAN
        git_commit_time TIMESTAMP
        labels JSON
    """),
    key=1,
)
TASKS = TableSchema(
    "tasks",
    _columns("""
        task_id VARCHAR
        job_id VARCHAR
        name VARCHAR
        plugin VARCHAR
        params JSON
        requires JSON
        priority BIGINT
        timeout DOUBLE
        retries BIGINT
        retry_backoff DOUBLE
        seq BIGINT
        state VARCHAR
        attempts BIGINT
        worker_id VARCHAR
        submitted_at TIMESTAMP
        started_at TIMESTAMP
        ended_at TIMESTAMP
        result JSON
        error VARCHAR
        failures BIGINT
        lost_workers BIGINT
        depends_on JSON
        resources JSON
        placement_timeout DOUBLE
    """),
    key=1,
)
ATTEMPTS = TableSchema(
    "attempts",
    _columns("""
        task_id VARCHAR
        attempt INTEGER
        worker_id VARCHAR
        assigned_at TIMESTAMP
        started_at TIMESTAMP
        ended_at TIMESTAMP
        outcome VARCHAR
        stale BOOLEAN
        result JSON
        error VARCHAR
    """),
    key=2,
)
TASK_DURATIONS = TableSchema(
    "task_durations",
    _columns("""
        worker_id VARCHAR
        plugin VARCHAR
        task_key VARCHAR
        ewma_s DOUBLE
        samples BIGINT
        updated_at TIMESTAMP
    """),
    key=3,
)
WORKERS = TableSchema(
    "workers",
    _columns("""
        worker_id VARCHAR
        hostname VARCHAR
        hardware VARCHAR[]
        capabilities JSON
        slots INTEGER
        plugins VARCHAR[]
        registered_at TIMESTAMP
        last_seen TIMESTAMP
        state VARCHAR
    """),
    key=1,
)
WORKER_KEYS = TableSchema(
    "worker_keys",
    _columns("""
        worker_id VARCHAR
        key VARCHAR
        bound_at TIMESTAMP
    """),
    key=1,
)

# Created when the store opens, in this order.
CORE = (JOBS, TASKS, ATTEMPTS, TASK_DURATIONS, WORKERS, WORKER_KEYS)
SCHEMA = "".join(table.ddl() for table in CORE)

# Statements run in order at every open, after SCHEMA, to bring a core table written by an older
# dtf up to it; each must be idempotent (a column widened again, ADD COLUMN IF NOT EXISTS).
# Append, never edit: files in the field have run the earlier ones.
MIGRATIONS: list[str] = [
    # Widened from INTEGER, so no value a spec admits (nor a counter) can fail a row's insert.
    "ALTER TABLE tasks ALTER priority TYPE BIGINT",
    "ALTER TABLE tasks ALTER retries TYPE BIGINT",
    "ALTER TABLE tasks ALTER attempts TYPE BIGINT",
    "ALTER TABLE tasks ALTER failures TYPE BIGINT",
    "ALTER TABLE tasks ALTER lost_workers TYPE BIGINT",
    # Who submitted each job (roles on the bus); older files have no such column.
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS submitter VARCHAR",
    # Consumable resources a task asks for ({"gpus": 1}).
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS resources JSON",
    # Kept so a restarted broker still fails what no worker takes in time.
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS placement_timeout DOUBLE",
    # Where each run came from (dtf_bus/runmeta.py): the commit, branch, dirty flag and labels.
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS git_commit VARCHAR",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS git_branch VARCHAR",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS git_dirty BOOLEAN",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS git_commit_time TIMESTAMP",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS labels JSON",
]

# Per-test and per-benchmark rows (dtf_bus.store.results), one set per attempt that counts.
TEST_RESULTS = TableSchema(
    "test_results",
    _columns("""
        task_id VARCHAR
        attempt INTEGER
        nodeid VARCHAR
        job_id VARCHAR
        worker_id VARCHAR
        hardware VARCHAR[]
        outcome VARCHAR
        duration_s DOUBLE
        message VARCHAR
        details VARCHAR
        recorded_at TIMESTAMP
        phase VARCHAR
        rootdir VARCHAR
    """),
    key=3,
    migrations=(
        "ALTER TABLE test_results ADD COLUMN IF NOT EXISTS phase VARCHAR",
        "ALTER TABLE test_results ADD COLUMN IF NOT EXISTS rootdir VARCHAR",
    ),
)
BENCHMARK_RESULTS = TableSchema(
    "benchmark_results",
    _columns("""
        task_id VARCHAR
        attempt INTEGER
        seq INTEGER
        job_id VARCHAR
        worker_id VARCHAR
        hardware VARCHAR[]
        device VARCHAR
        benchmark VARCHAR
        params JSON
        batch_size INTEGER
        precision VARCHAR
        warmup INTEGER
        iterations INTEGER
        p50_ms DOUBLE
        p90_ms DOUBLE
        p99_ms DOUBLE
        mean_ms DOUBLE
        throughput DOUBLE
        unit VARCHAR
        memory_bytes BIGINT
        environment JSON
        recorded_at TIMESTAMP
    """),
    key=3,
)

# The monitor's time series (dtf_bus.monitor): every metric name is a DOUBLE column, stored
# and served as history under that name.
SYSTEM_METRICS = (
    "workers_total",
    "workers_active",
    "workers_busy",
    "slots_total",
    "slots_busy",
    "utilisation",
    "queued",
    "assigned",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "throughput",
    "queue_wait_mean",
    "queue_wait_p95",
    "queue_oldest_wait",
    "success_rate",
    "task_duration_mean",
)
WORKER_METRICS = (
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "load",
    "running",
    "slots",
    "completed",
    "failed",
    "success_rate",
    "duration_mean",
    "score",
)
METRICS_SYSTEM = TableSchema("metrics_system", (("ts", "TIMESTAMP"), *((m, "DOUBLE") for m in SYSTEM_METRICS)))
METRICS_WORKER = TableSchema(
    "metrics_worker",
    (("ts", "TIMESTAMP"), ("worker_id", "VARCHAR"), ("status", "VARCHAR"), *((m, "DOUBLE") for m in WORKER_METRICS)),
)
ANOMALIES = TableSchema(
    "anomalies",
    _columns("""
        ts TIMESTAMP
        type VARCHAR
        severity VARCHAR
        subject VARCHAR
        explanation VARCHAR
        value DOUBLE
        threshold DOUBLE
    """),
)
MONITOR = (METRICS_SYSTEM, METRICS_WORKER, ANOMALIES)  # each keeps METRICS_RETENTION of history, by ts
RESULTS = (TEST_RESULTS, BENCHMARK_RESULTS)
