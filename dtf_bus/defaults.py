"""Every tunable of dtf in one place.

Code imports these names instead of repeating numbers, so a reader can see (and a test can
override) the whole configuration surface at a glance.
"""

from __future__ import annotations

# Endpoints. Without CURVE the broker stays on loopback.
BROKER_ENDPOINT = "tcp://127.0.0.1:5555"
METRICS_ENDPOINT = "tcp://127.0.0.1:5556"
BROKER_ENV = "DTF_BROKER"
DB_PATH = "./dtf.duckdb"

# Heartbeats (the zguide's Paranoid Pirate numbers): a peer silent for
# HEARTBEAT_LIVENESS * HEARTBEAT_INTERVAL seconds is dead.
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_LIVENESS = 3

# Worker reconnect back-off when the broker is gone: starts small, doubles, capped.
RECONNECT_INITIAL = 0.25
RECONNECT_MAX = 32.0

# Scheduling.
STRATEGY = "least_loaded"
WORKER_SLOTS = 1
TASK_PRIORITY = 0
TASK_RETRIES = 0
# A task whose attempts lost this many workers (killed, hung) is poison: it fails.
MAX_LOST_WORKERS = 3

# How long the broker waits for a worker to acknowledge a CANCEL before it stops caring.
TASK_TIMEOUT = None  # seconds; None = no limit

# Results store: batches are flushed after this many seconds or rows, whichever first.
STORE_FLUSH_INTERVAL = 0.2
STORE_FLUSH_ROWS = 5000

# Publish a metrics.system snapshot this often (seconds).
METRICS_INTERVAL = 1.0

# Client request timeout (seconds) before the broker is called unreachable.
CLIENT_TIMEOUT = 5.0
# While waiting for a job, the client re-asks this often so a restarted broker is noticed.
CLIENT_WAIT_POLL = 2.0

# Kept in result payloads: how much of a command's stdout/stderr tail to store.
OUTPUT_TAIL_BYTES = 4096

# Grace between SIGTERM and SIGKILL of a task's process group.
KILL_GRACE = 2.0

# Hostile input limits.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_TASKS_PER_JOB = 100_000
