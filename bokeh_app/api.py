"""Reading the broker's HTTP API from the dashboard: history at session start, status for endpoints.

Failures are logged and answered with None: a dashboard without history still shows live data.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dtf_bus import defaults

log = logging.getLogger("dtf.dashboard")

TIMEOUT = 3.0
KEY: str | None = None  # the API key (main sets it from --api-key-file); else $DTF_API_KEY


def load_key(path: str) -> None:
    global KEY
    try:
        KEY = Path(path).read_text().strip() or None
    except OSError as exc:
        log.error("dashboard: cannot read the API key file %s: %s", path, exc.strerror)


def _headers() -> dict[str, str]:
    key = KEY or os.environ.get(defaults.API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def get(base: str | None, path: str, **params: Any) -> Any:
    """``data`` of the API's envelope, or None if the API is not there or refused."""
    return call(base, path, **params)[0]


def call(base: str | None, path: str, **params: Any) -> tuple[Any, str | None]:
    """``(data, None)``, or ``(None, why)``: the API's own message for a refusal (an unknown job
    is a 404 that says so), else what went wrong. A list value repeats its parameter."""
    if not base:
        return None, "no --http: the broker's API is needed for history"
    query = {k: v for k, v in params.items() if v is not None}
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_headers()), timeout=TIMEOUT) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read())["error"]["message"]
        except (OSError, ValueError, KeyError, TypeError):
            why = f"HTTP {exc.code}"
        if exc.code >= 500 or exc.code in (401, 403):
            log.warning("dashboard: GET %s failed: %s", path, why)
        return None, why
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.warning("dashboard: GET %s failed: %s", path, exc)
        return None, f"the broker's API did not answer: {exc}"
    if not body.get("ok"):
        return None, str((body.get("error") or {}).get("message") or "refused")
    return body.get("data"), None
