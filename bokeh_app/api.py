"""Reading the broker's HTTP API from the dashboard: history at session start, status for endpoints.

Failures are logged and answered with None: a dashboard without history still shows live data.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger("dtf.dashboard")

TIMEOUT = 3.0


def get(base: str | None, path: str, **params: Any) -> Any:
    """``data`` of the API's envelope, or None if the API is not there or refused."""
    if not base:
        return None
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.warning("dashboard: GET %s failed: %s", url, exc)
        return None
    return body.get("data") if body.get("ok") else None
