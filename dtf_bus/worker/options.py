"""The worker's settings: its ``[worker]`` config keys, the flag and the variable behind each.

``dtf-worker`` settles each through :func:`dtf_bus.config.merge` (flag > environment > file >
default), as the broker and ``dtf`` do; a ``[worker]`` key not listed here is refused by name.
The free-form tables (``[capabilities]``, ``[resources]``, ``[plugins]``) are not settings.
"""

from __future__ import annotations

from dtf_bus import defaults
from dtf_bus.config import Option

WORKER_OPTIONS = (
    Option("broker", env=defaults.BROKER_ENV),
    Option("id"),
    Option("slots"),
    Option("plugins", flag="plugin"),
    Option("heartbeat_interval"),
    Option("heartbeat_liveness"),
    Option("curve_secret", env=defaults.CURVE_SECRET_ENV),
    Option("broker_key", env=defaults.BROKER_KEY_ENV),
    Option("alive_file", env=defaults.ALIVE_FILE_ENV),
    Option("ship_cache", env=defaults.SHIP_CACHE_DIR_ENV),
    Option("ship_cache_bytes"),
)
