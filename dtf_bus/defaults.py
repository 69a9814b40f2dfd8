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

# Heartbeats (the zguide's Paranoid Pirate numbers). A worker silent for
# HEARTBEAT_LIVENESS intervals is "missing": its tasks are requeued, but it may come back.
# Silent for DEAD_LIVENESS intervals it is "dead" and removed; it must re-register.
# A closed TCP connection is seen at once through the ROUTER's socket monitor instead.
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_LIVENESS = 3
DEAD_LIVENESS = 10
# The broker takes at most this many heartbeats per second in all: past
# HEARTBEAT_BUDGET * HEARTBEAT_INTERVAL workers, the interval grows with the fleet
# (2,000 workers -> 4 s), like Dask's scheduler does.
HEARTBEAT_BUDGET = 500

# Worker reconnect back-off when the broker is gone: starts small, doubles, capped.
RECONNECT_INITIAL = 0.25
RECONNECT_MAX = 32.0

# Scheduling.
STRATEGY = "least_loaded"
WORKER_SLOTS = 1
TASK_PRIORITY = 0
# Anti-starvation: a waiting task gains one priority level per PRIORITY_AGING seconds.
PRIORITY_AGING = 10.0
TASK_RETRIES = 0
# A failed attempt is retried after RETRY_BACKOFF * 2**(n-1) seconds (n = retries used so
# far), capped at RETRY_BACKOFF_MAX, times a random jitter in [0.5, 1.5).
RETRY_BACKOFF = 1.0
RETRY_BACKOFF_MAX = 60.0
# Bounds on a spec's numbers (spec.py): far past any real use, and narrow enough that every value
# fits its column (BIGINT, DOUBLE) and the arithmetic done with it (priority aging, back-off):
# `priority = 2**31` is a spec error, not a row the store cannot hold.
MAX_PRIORITY = 1_000_000  # priority lies within -MAX_PRIORITY..MAX_PRIORITY
MAX_RETRIES = 100
MAX_TASK_TIMEOUT = 30 * 24 * 3600.0  # seconds: a month
MAX_RETRY_BACKOFF = 24 * 3600.0  # seconds (each wait is capped at RETRY_BACKOFF_MAX anyway)
MAX_MIN_MEMORY_GB = 1_000_000  # requires.min_memory_gb: a petabyte
MAX_RESOURCE_KINDS = 16  # resource names one worker declares or one task asks for
MAX_RESOURCE_COUNT = 1024  # the most of one resource a worker has or a task asks for
# Params size, packed as msgpack: per task, and per job with repeats counted (each copy is a dict
# of its own in the broker's memory, so a 70-byte spec with repeat = 100000 cannot pin gigabytes).
# 100,000 tasks of ~670 bytes of params each still fit in one job.
MAX_TASK_PARAMS_BYTES = 1024 * 1024
MAX_JOB_PARAMS_BYTES = 64 * 1024 * 1024
# Task durations (dtf_bus/durations.py): one moving mean and variance per (worker, kind), read by
# placement, prefetch, anomaly detection and the monitor. 0.3 weighs the newest run so that a
# worker whose speed changed is believed within ~3 runs (placement and prefetch need that; it
# was placement's weight before the models were one). Anomaly detection used 0.1, a steadier
# spread; at 0.3 its z-test still needs ANOMALY_MIN_SAMPLES runs, ANOMALY_SLOW_MIN seconds
# and the ANOMALY_MIN_SPREAD floor, so jitter is not reported, and a lasting slowdown becomes
# the new normal sooner instead of being reported for tens of runs.
DURATION_ALPHA = 0.3
DEFAULT_TASK_ESTIMATE = 1.0  # seconds: the guess for a kind of task never seen anywhere
# Tasks a worker may hold beyond its slots (queued on the worker, not started): hides the
# round trip between tasks; work stealing moves them to idle workers when that is faster.
# None ("auto", the default) sizes it per worker from its recent task durations: enough queued
# work to cover PREFETCH_COVER seconds, from 1 up to PREFETCH_MAX, so a stream of short tasks
# never waits for a round trip and long tasks are not hoarded by one worker.
PREFETCH: int | None = None
PREFETCH_COVER = 0.01
PREFETCH_MAX = 32
STEAL_INTERVAL = 0.1  # seconds between looks for work to steal
# Bounds on one look for steals and one placement round, so that neither blocks the broker's
# loop (and the heartbeats it reads) however large the fleet: placement is O(workers) per task.
STEAL_MAX_MOVES = 64
STEAL_MAX_HOLDERS = 32  # the holders with the longest backlogs are the ones looked at
PLACE_BATCH = 256
# Strategies that allow it (``sampled = True``) choose among this many random free workers when
# more are free: the power of d choices, O(1) per placement however large the fleet.
PLACE_SAMPLE = 16
# Assignment efficiency compares a task's duration with the best learned for its kind among the
# workers that could run it; that best (a scan of the fleet) is refreshed this often (seconds).
EFFICIENCY_REFRESH = 1.0
# A task whose attempts this many workers died running (process or connection gone) is poison: it fails.
# A worker that went silent and came back, drained or only held the task prefetched is no evidence.
MAX_LOST_WORKERS = 3

# Results store: batches are flushed after this many seconds or rows, whichever first.
STORE_FLUSH_INTERVAL = 0.2
STORE_FLUSH_ROWS = 5000
# DuckDB's buffer pool in the broker (DuckDB's own default is 80 % of RAM, so a long-lived broker
# beside the workers on one box could take most of it for cache); the writer's batches need a
# few MB, the rest serves queries from the API and `dtf results`. Past it DuckDB spills to disk.
STORE_MEMORY_LIMIT = "512MB"

# Publish a metrics.system snapshot this often (seconds).
METRICS_INTERVAL = 1.0

# The broker moves what it holds long (queued tasks, their history) out of the garbage
# collector's view this often (gc.freeze), and back in every GC_THAW_INTERVAL so that cyclic
# garbage frozen meanwhile is still reclaimed: a full collection walking 100,000 queued tasks
# paused the loop ~250 ms each time the heap grew by a quarter (bench/queue_depth.py).
GC_FREEZE_INTERVAL = 1.0
GC_THAW_INTERVAL = 300.0

# Monitoring (monitor.py, anomaly.py, api.py, bokeh_app/). Rates and waits are taken over a
# sliding window; metric and anomaly history older than the retention is deleted from DuckDB.
METRICS_WINDOW = 10.0  # seconds behind throughput, queue wait and success rate
METRICS_RETENTION = 24 * 3600.0  # seconds of history kept in the metrics_* and anomalies tables
METRICS_RETENTION_SWEEP = 60.0  # seconds between deletions of expired history
WORKER_METRICS_STORE_INTERVAL = 5.0  # per-worker rows are stored this often (the PUB gets every tick)
BLOCKED_REPORT_AFTER = 5.0  # seconds unplaceable work waits before a wait or the dashboard reports it
BLOCKED_SHOWN = 20  # requirement keys of unplaceable work sent with each metrics snapshot
MONITOR_RECENT_TASKS = 10_000  # tasks the HTTP API serves live; older ones come from DuckDB
GPU_SAMPLE_INTERVAL = 5.0  # seconds between nvidia-smi samples on a worker (a thread, never the loop)
# Anomalies: durations are judged against the duration model's mean and spread per (worker,
# task kind) (DURATION_ALPHA). Queue waits are not task durations: they keep a series of their
# own, weighted for a steadier baseline (a burst of submissions should not become the norm).
ANOMALY_QUEUE_WAIT_ALPHA = 0.1
ANOMALY_MIN_SAMPLES = 5  # samples of a series before it is judged
ANOMALY_Z = 3.0  # standard deviations above the mean that make a duration or wait anomalous
ANOMALY_Z_CRITICAL = 6.0
ANOMALY_MIN_SPREAD = 0.05  # relative floor on the spread, so near-constant series do not fire on jitter
ANOMALY_SLOW_MIN = 0.1  # seconds over its usual time a task must take to be slow (below: scheduling jitter)
ANOMALY_QUEUE_WAIT_MIN = 2.0  # seconds: a queue wait shorter than this is never an anomaly
ANOMALY_SUCCESS_WINDOW = 10  # recent outcomes compared with the ones before them
ANOMALY_SUCCESS_DROP = 0.3  # a fall in success rate this large is anomalous
ANOMALY_STALL_FACTOR = 5.0  # running this many times its kind's usual duration (+ z spreads) = stalled
ANOMALY_STALL_MIN = 5.0  # seconds: never call a task stalled sooner
ANOMALY_STALL_NO_HISTORY = 300.0  # seconds, for a kind never seen finishing and with no timeout
ANOMALY_OVERLOAD_PERCENT = 95.0  # cpu, memory or gpu utilisation ...
ANOMALY_OVERLOAD_SECONDS = 15.0  # ... for this long without a break
ANOMALY_COOLDOWN = 30.0  # seconds before the same anomaly of the same subject is raised again
ANOMALY_KEEP = 500  # anomalies kept in memory for the API and dashboard
# HTTP API and dashboard.
HTTP_HOST = "127.0.0.1"
HTTP_PORT = 8585
# Connections the kernel queues for the HTTP server before it accepts them (tornado's default is
# 128): a burst beyond it has its SYNs dropped and retried for up to a minute, so a burst of
# idle connections would reach the connection cap, and be refused, only that much later.
HTTP_LISTEN_BACKLOG = 1024
HTTP_READERS = 4  # threads reading DuckDB for the HTTP API, off its IOLoop
DASHBOARD_PORT = 5006
# The periodic refresh: per-worker metrics and the history pages' timers. Events do not wait for it:
# news refreshes a session DASHBOARD_NEWS_SETTLE_MS after it arrives (bokeh_app/pacer.py).
DASHBOARD_REFRESH_MS = 200
DASHBOARD_REFRESH_ENV = "DTF_DASHBOARD_REFRESH_MS"  # where the launcher cannot pass --refresh-ms
# A burst of news (a job submitted, assigned, run and done within milliseconds) becomes one refresh:
# news waits this long for the rest of its burst. What news may cost a session is a token bucket,
# RATE refreshes a second on average and BURST at once, so a busy run is bounded while an event
# after a quiet spell never waits for a gap.
DASHBOARD_NEWS_SETTLE_MS = 10
DASHBOARD_NEWS_RATE = 10.0
DASHBOARD_NEWS_BURST = 3
DASHBOARD_ROLLOVER = 900  # points kept per time-series plot
DASHBOARD_TASK_STREAM = 5000  # bars kept in the task stream
DASHBOARD_EVENT_BUFFER = 50_000  # PUB events buffered between two dashboard refreshes
WEBSOCKET_QUEUE = 10_000  # messages buffered for WebSocket clients between two loop turns
# A WebSocket client whose unsent messages pass this many bytes is cut off (close 1008): a reader that
# stalls (or only answers pings) must not grow the broker's memory; a live dashboard stays far below.
WEBSOCKET_MAX_PENDING_BYTES = 4 * 1024 * 1024
WEBSOCKET_MAX_CLIENTS = 256  # WebSockets open at once per API (each holds a buffer of up to the above)
# The HTTP server (dtf_bus/http/server.py): slowloris clients are timed out and capped so that the
# process keeps the file descriptors its bus sockets need (512 leaves half of `ulimit -n 1024`).
HTTP_MAX_CONNECTIONS = 512
HTTP_IDLE_TIMEOUT = 60.0  # seconds a connection may sit without a complete request header
HTTP_BODY_TIMEOUT = 60.0  # seconds to send a request body (bodies are at most 16 MiB)
HTTP_MAX_HEADER_BYTES = 64 * 1024
HTTP_ACCEPT_PAUSE = 0.1  # seconds without accepting after an accept error (EMFILE), instead of spinning
API_MAX_PAGE = 10_000  # `limit` of a listing at most; `offset` at most API_MAX_OFFSET
API_MAX_OFFSET = 1_000_000_000
# The API token (dtf_bus/http/auth.py) lives beside the DuckDB file: <db> + this suffix, mode 0600.
API_TOKEN_SUFFIX = ".api-token"

# Client request timeout (seconds) before the broker is called unreachable.
CLIENT_TIMEOUT = 5.0
# While waiting for a job, the client re-asks this often so a restarted broker is noticed,
# and keeps waiting through a broker outage of up to CLIENT_RECONNECT_PATIENCE seconds.
CLIENT_WAIT_POLL = 2.0
CLIENT_RECONNECT_PATIENCE = 60.0
# Client.follow: the longest a broker holds a follow request open before answering "nothing new".
FOLLOW_MAX_WAIT = 5.0

# A worker reports a task as started only once it has run this long (seconds): a shorter
# task is reported by its result alone.
STARTED_REPORT_DELAY = 0.05
# Results a worker packs into one TASK_RESULT at most (a backlog after an outage is split up).
RESULTS_PER_MESSAGE = 64
# A running task's progress (ctx.report_progress: a finished test's reports) travels in messages
# of at most this many bytes; a larger single update is dropped, its task's result has it anyway.
PROGRESS_MESSAGE_BYTES = 1024 * 1024
# Progress the broker keeps per job for followers (oldest dropped first; results hold it all).
PROGRESS_KEEP = 20_000

# Kept in result payloads: how much of a command's stdout/stderr tail to store.
OUTPUT_TAIL_BYTES = 4096

# Grace between SIGTERM and SIGKILL of a task's process group.
KILL_GRACE = 2.0
# Variables a task's commands never inherit from their worker: its CURVE key paths and any
# credential (a task is code someone else submitted). Besides these names, any inherited DTF_*
# name containing SECRET, KEY, TOKEN or PASSWORD is dropped too; DTF_BROKER and the DTF_TASK_ID,
# DTF_ATTEMPT, DTF_WORKER_ID the worker sets are kept.
TASK_ENV_SECRETS = ("DTF_CURVE_SECRET", "DTF_BROKER_KEY", "DTF_API_KEY", "DTF_API_KEYS", "DTF_API_TOKEN")

# msgpack unpack limits (protocol.decode), per container: msgpack refuses a longer declared length
# before building anything, so one frame holding a million-key map costs microseconds, not a
# second of the loop. A SUBMIT carries up to MAX_TASKS_PER_JOB tasks in one array; no params,
# result or capability table comes near the map limit; strings and bytes up to one task's result.
MSGPACK_MAX_ARRAY_LEN = 100_000
MSGPACK_MAX_MAP_LEN = 65_536
MSGPACK_MAX_STR_LEN = 8 * 1024 * 1024
MSGPACK_MAX_BIN_LEN = 8 * 1024 * 1024

# Hostile input limits.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES // 2  # one task's result, packed; a larger one fails the task
MAX_TASKS_PER_JOB = 100_000
MAX_NESTING_DEPTH = 64  # containers within containers in a message (JSON encoding recurses per level)
MAX_ID_CHARS = 256  # worker, job and task ids
MAX_WORKER_SLOTS = 65_536
# Tasks not yet final that the broker holds at once, and per submitter (a key's name with CURVE):
# one client cannot exhaust the broker's memory for everyone. Both admit a 100,000-task job.
MAX_LIVE_TASKS = 1_000_000
SUBMITTER_QUOTA = 250_000
# A finished job stays in the broker's memory this long (seconds; late results of its lost
# attempts are then still recorded as stale), then it is served from DuckDB alone.
FINISHED_JOB_TTL = 60.0
JOB_SUMMARIES_KEPT = 10_000  # released jobs whose status stays in memory (~1 KB each)
# Requests about jobs not in memory wait for the archive thread's DuckDB reads; past this many
# waiting, one more is refused ("busy"), so a flood of unknown job ids cannot queue without bound.
ARCHIVE_PENDING_MAX = 1000
# Releasing at least this many tasks at once also hands freed heap back to the OS (malloc_trim):
# the allocator would otherwise keep a large job's pages for the broker's life.
TRIM_AFTER_TASKS = 10_000
# The loop reads frames for at most this long (seconds) before it runs its timers, so a burst
# of large messages cannot hold back heartbeats; while frames wait unread, missing-worker
# verdicts are postponed (their heartbeats may be among them) for at most DEAD_LIVENESS intervals.
LOOP_BATCH_BUDGET = 0.05

# Security (security.py, apikeys.py). CURVE keys for workers and clients come from flags, config or these.
CURVE_SECRET_ENV = "DTF_CURVE_SECRET"
BROKER_KEY_ENV = "DTF_BROKER_KEY"
KEYS_RELOAD_INTERVAL = 1.0  # seconds between looks at the authorized-keys directory (or after SIGHUP)
SECURITY_LOG_INTERVAL = 60.0  # a refused peer is logged once per this many seconds (repeats counted)
SECURITY_LOG_BUDGET = 20  # refusal lines per interval over all peers: a flood of fresh keys cannot flood the log
REBIND_ATTEMPTS = 100  # 10 ms apart: rebinding PUB after a revocation waits for the old listener to close
API_KEYS_ENV = "DTF_API_KEYS"  # the API-key file for `dtf keys api-key` (hashes only) ...
API_KEYS_FILE = "./dtf-api-keys.json"  # ... when the variable is unset; the broker needs --api-keys FILE
API_KEY_ENV = "DTF_API_KEY"  # a key for HTTP clients (the dashboard) to send

# Hardware detection: each probe (nvidia-smi, rocm-smi, a browser's --version) gets this many
# seconds, so a wedged driver never keeps a worker from starting. Importing torch to ask it
# about GPUs is slower, so its probe gets longer and only runs where a GPU is likely.
DETECT_TIMEOUT = 5.0
TORCH_PROBE_TIMEOUT = 30.0
# Browser binaries looked up on PATH (in this order) to advertise `browser = "chromium"`.
BROWSER_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Test results: how much of a failing test's report (its whole longrepr, in practice) each test_results row keeps;
# bounded so a test printing megabytes into its failure cannot swell a result past MAX_RESULT_BYTES.
TEST_DETAILS_CHARS = 65_536
# pytest-session executor (plugins/pytest_session.py): a live pytest session with no task for this
# long (seconds) is shut down; a job's tasks keep reusing it meanwhile, so one import and one
# collection per worker slot serve the whole job, and a finished job frees its memory soon after.
PYTEST_SESSION_IDLE = 30.0
# How often (seconds) a task waiting on its session looks at cancel/timeout and the session's
# liveness; data wakes it at once, so this bounds only how fast a cancel kills the session.
PYTEST_SESSION_POLL = 0.05
# Finished tests' reports of a running batch are sent as progress at most this often (seconds),
# and as soon as the session is quiet for a poll interval: fast tests coalesce, slow ones show.
PYTEST_PROGRESS_INTERVAL = 0.05
# Seconds an idle session gets to tear down its fixtures when shut down (idle, worker exit)
# before its process group is killed.
PYTEST_SESSION_SHUTDOWN_GRACE = 5.0
# Where this worker holds suites that live elsewhere on the submitting machine:
# "/ci/src=/home/me/src;/a=/b", applied to a task's rootdir (and paths under it) by prefix.
ROOTDIR_MAP_ENV = "DTF_ROOTDIR_MAP"

# browser executor (plugins/browser.py): the Chromium it drives (else the first BROWSER_BINARIES on
# PATH), and extra command-line flags for it (shell words), both read when the worker starts.
BROWSER_EXECUTABLE_ENV = "DTF_BROWSER_EXECUTABLE"
BROWSER_ARGS_ENV = "DTF_BROWSER_ARGS"
# Flags every browser gets: headless hygiene (no updates, sync or first-run work), and WebGPU
# and WebNN exposed, so a page reports a real adapter, or Chromium's software one, instead of none.
BROWSER_ARGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-webgpu",
    "--ignore-gpu-blocklist",
    "--enable-features=Vulkan,WebMachineLearningNeuralNetwork",
)
# Seconds a browser task's page may take to load and its script to finish (param `timeout`).
BROWSER_TIMEOUT = 30.0
# Seconds Chromium gets to start; a worker's one browser serves every browser task it runs and is
# closed after this long without one (the next task starts it again, about a second).
BROWSER_LAUNCH_TIMEOUT = 30.0
BROWSER_IDLE = 120.0
# Seconds the page's WebGPU and WebNN probes may take (requestAdapter can wait on a wedged driver).
BROWSER_PROBE_TIMEOUT = 5.0
# Console errors and page errors a result keeps (the rest are counted), each cut to this length.
BROWSER_MAX_MESSAGES = 50
BROWSER_MESSAGE_CHARS = 2000
# Seconds the closing of a task's browser context may take after it ends, is cancelled or times out.
BROWSER_CLOSE_GRACE = 5.0

# Benchmarks (cpu, cuda plugins): untimed warm-up runs, then timed iterations.
BENCH_WARMUP = 3
BENCH_ITERATIONS = 20

# pytest --dtf (dtf_bus/pytest_dist/plugin.py, plan in dtf_bus/pytest_dist/plan.py).
# A `load` run is cut into chunks of about (work left) / (this x sessions) seconds: large chunks
# first, smaller ones as the run drains, so every session stays busy to the end without paying a
# task round trip per test (guided self-scheduling).
PYTEST_CHUNKS_PER_SESSION = 4
# ... but never under this much estimated work, where the round trip (a few ms) would dominate,
PYTEST_MIN_CHUNK_SECONDS = 0.05
# ... nor over this many tests, so one task's reports stay far below MAX_RESULT_BYTES.
PYTEST_MAX_CHUNK_TESTS = 128
# A test DuckDB has never timed counts as the median of the run's timed ones, else this.
PYTEST_UNKNOWN_TEST_SECONDS = 0.05
# --dtf-placement-timeout: seconds a test may wait for a live worker able to run it, while the
# fleet has none at all (it may be starting); a fleet that has workers but none that match
# answers at once.
PYTEST_PLACEMENT_TIMEOUT = 60.0
# Client.follow's long poll (seconds): the controller wakes at least this often to check
# placement and Ctrl-C, and asks for the job's status (O(tasks) on the broker) at most this often.
PYTEST_FOLLOW_WAIT = 1.0
# Task names carry the file (or scope) they run, cut to this length.
PYTEST_TASK_NAME_CHARS = 200
# Tasks per SUBMIT, so a suite of 100,000 tests never makes one message near MAX_MESSAGE_BYTES.
PYTEST_SUBMIT_BATCH = 500
# pytest --dtf starts up to this many worker sessions collecting at once (one per session slot of
# the fleet), as xdist's workers all collect at start; the first to finish plans the run.
PYTEST_PARALLEL_COLLECTS = 64

# Health checks for deployments (ping_cli.py, liveness.py, queue_gauges.py). `dtf ping` waits this
# long (seconds) for the broker. A worker given --alive-file touches it from its main loop at least
# every ALIVE_FILE_INTERVAL seconds, so a loop that waits out a long reconnect back-off still shows
# it turns; `dtf ping --alive-file` calls a file older than ALIVE_FILE_MAX_AGE a wedged worker.
PING_TIMEOUT = 5.0
ALIVE_FILE_ENV = "DTF_ALIVE_FILE"
ALIVE_FILE_INTERVAL = 5.0
ALIVE_FILE_MAX_AGE = 60.0
# /metrics: dtf_queued_tasks gets one series per distinct set of requirements, at most this many;
# the rest are summed into requirement="other", so a spec with a fresh requirement per task cannot
# blow up the scraper's series count.
QUEUE_GAUGE_MAX_SERIES = 100
# Code shipped to workers (docs/shipping.md: dtf_bus/ship/archive.py, ship_store.py, ship_client.py, ship_cache.py).
# A project packed for shipping (the files' bytes, before tar headers) may be at most this large
# (dtf submit --ship-max-bytes, pytest --dtf-ship-max-bytes): a checkout that grew a data set or a
# build tree fails at once with its size, instead of filling the broker and every worker.
SHIP_MAX_BYTES = 256 * 1024 * 1024
# Without git, these names (any path component, fnmatch patterns) are never shipped.
SHIP_IGNORE = (".git", ".hg", ".svn", "__pycache__", "*.pyc", ".venv", "venv", ".tox", ".nox", ".pytest_cache")
SHIP_IGNORE += (".mypy_cache", ".ruff_cache", "node_modules", "*.egg-info", ".dtf-up", "*.duckdb", "*.duckdb.wal")
# One upload or fetch message carries at most this many bytes of an archive: far below
# MSGPACK_MAX_BIN_LEN and MAX_MESSAGE_BYTES, and small enough that reading one from disk (the
# broker answers fetches on its loop) costs about a millisecond.
SHIP_CHUNK_BYTES = 2 * 1024 * 1024
# Fetch requests a worker keeps in flight at once (a window, as the zguide's file transfer does):
# one round trip per window instead of per chunk.
SHIP_FETCH_WINDOW = 4
# The broker's archives (<db>.ship/) in all. Past it, archives unused for SHIP_STORE_MIN_IDLE
# seconds are evicted, least recently used first; when that is not enough the upload is refused.
SHIP_STORE_BYTES = 4 * 1024 * 1024 * 1024
SHIP_STORE_MIN_IDLE = 3600.0
# An upload nobody continued for this long is dropped (its partial file deleted).
SHIP_UPLOAD_IDLE = 600.0
# Uploads in progress at once (each holds an open file and its announced size reserved).
SHIP_UPLOADS_AT_ONCE = 16
# Seconds between a worker's tries to send what its full connection could not take yet (it keeps
# those messages in order rather than drop them).
WORKER_OUTBOX_RETRY = 0.01
# A worker's cache of unpacked trees and venvs (dtf-worker --ship-cache, --ship-cache-bytes):
# least recently used entries no task is using are deleted once it holds more.
SHIP_CACHE_DIR_ENV = "DTF_SHIP_CACHE"
SHIP_CACHE_BYTES = 8 * 1024 * 1024 * 1024
# ... and none used within this many seconds: longer than a pytest session idles in its tree.
SHIP_CACHE_MIN_IDLE = 2 * PYTEST_SESSION_IDLE
# A fetch request unanswered this long reconnects and continues from the chunks already on disk;
# a fetch that makes no progress for SHIP_FETCH_PATIENCE seconds fails its task.
SHIP_FETCH_TIMEOUT = 10.0
SHIP_FETCH_PATIENCE = 60.0
# Seconds a task may take to build its --ship-requirements venv (python -m venv, pip install).
SHIP_VENV_TIMEOUT = 900.0
# Requirements text travels in the task's params: at most this many bytes.
SHIP_REQUIREMENTS_BYTES = 64 * 1024
# Run history (dtf_bus/runmeta.py, dtf_bus/analysis/): what a job records of where it came from,
# and how `dtf compare` / `dtf flaky` judge runs against their history.
GIT_TIMEOUT = 2.0  # seconds each `git` call gets at submit; a slow or absent git means no metadata
MAX_JOB_LABELS = 32  # --label K=V pairs per job
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_BRANCH_CHARS = 256
# A test is "slower" when its new duration passes its median over its last HISTORY_RUNS passing
# runs (up to the base run) by more than the largest of SLOWER_SPREADS robust standard deviations
# (1.4826 x MAD), SLOWER_RELATIVE of that median and SLOWER_ABSOLUTE_S seconds.
HISTORY_RUNS = 20
SLOWER_SPREADS = 3.0
SLOWER_RELATIVE = 0.25
SLOWER_ABSOLUTE_S = 0.1
# A benchmark regressed when it got worse by more than the larger of BENCH_REGRESSION_RELATIVE
# and BENCH_REGRESSION_SPREADS times its relative spread (stored runs and the repeats of each run).
BENCH_REGRESSION_RELATIVE = 0.05
BENCH_REGRESSION_SPREADS = 3.0
# Listings: `dtf jobs` shows this many jobs by default; `dtf history` this many runs of a test;
# `dtf flaky` looks this far back (seconds) unless --since says otherwise. A query answers at most
# HISTORY_MAX_ROWS rows of any list.
JOBS_LIMIT = 20
TEST_HISTORY_LIMIT = 50
FLAKY_SINCE = 30 * 86400.0
HISTORY_MAX_ROWS = 10_000
# The dashboard's history pages re-read the API this often (seconds) while open, and at once
# (within one refresh) after a job's events.
DASHBOARD_HISTORY_REFRESH = 5.0
DASHBOARD_NEWS_INTERVAL = 2.0  # news (a job's events) re-reads a history page at most this often
# A history query (dtf jobs|compare|flaky|history) may scan the whole store: the client waits this long.
QUERY_TIMEOUT = 60.0
