"""Logging for every dtf command: one line per record, whatever the record holds.

Log lines carry text that peers chose: job names, worker ids, task names, error messages. A
newline in one would forge a line of its own (``x\\nERROR worker w1 lost``), a terminal escape
would rewrite the operator's screen, and a key pasted into a URL or a header would sit in the
log forever. :class:`SafeFormatter` escapes control characters in the message (so one record is
one physical line) and redacts secrets from everything it writes. It only runs for records
that are emitted, after the level check, so a debug line that is filtered costs nothing.

Every entry point calls :func:`configure` instead of ``logging.basicConfig``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from dtf_bus import defaults

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "***"

# C0 controls, DEL, C1 controls (NEL among them) and the Unicode line and paragraph separators:
# everything a terminal or a log viewer may take for a line break or a command.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# In a traceback the newlines are the formatter's own and stay; every other control is escaped.
_CONTROL_IN_TRACEBACK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# A cheap look before the substitutions: most lines hold none of these words.
_HINT = re.compile(r"dtf_|token|api_key|apikey|bearer|secret-key|password|x-api-key", re.IGNORECASE)
_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys (dtf_bus.security.apikeys): the id names the key in listings and stays; the secret goes.
    (re.compile(r"\b(dtf_[0-9a-f]{8}_)[A-Za-z0-9_\-]+"), rf"\g<1>{REDACTED}"),
    # Credentials in query strings and key=value text.
    (
        re.compile(r"\b((?:access_token|token|api_key|apikey|password)=)[^&\s\"'#]+", re.IGNORECASE),
        rf"\g<1>{REDACTED}",
    ),
    # HTTP credentials: Authorization: Bearer ..., a bare "Bearer ...", X-API-Key: ...
    (re.compile(r"\b(Authorization:\s*\w+\s+)[^\s\"',;]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"\b(Bearer\s+)(?!\*\*\*)[^\s\"',;]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"\b(X-API-Key:\s*)[^\s\"',;]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    # A CURVE secret key (40 characters of Z85) as key files and config write it.
    (
        re.compile(r"""(secret[-_]key\s*[=:]?\s*["']?)[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}""", re.IGNORECASE),
        rf"\g<1>{REDACTED}",
    ),
)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: every control character written as its escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_char, text)


def redact(text: str) -> str:
    """``text`` with API keys, tokens, bearer credentials and CURVE secret keys replaced by ``***``."""
    if _HINT.search(text) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every record is one physical line with no secrets,
    except for the traceback it appends, which keeps its own line breaks (controls escaped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return redact(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return redact(_CONTROL_IN_TRACEBACK.sub(_escape_char, super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return redact(_CONTROL_IN_TRACEBACK.sub(_escape_char, super().formatStack(stack_info)))


def configure(level: str | int = "INFO", fmt: str = FORMAT) -> None:
    """Send the root logger's records to stderr through :class:`SafeFormatter` at ``level``.

    Like ``logging.basicConfig`` (which it uses) it does nothing when the root logger already
    has handlers, so a command run inside a test keeps the test's capture.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])


class RateLimited:
    """Logs a recurring line once per subject and interval, then counts the repeats: a refused
    peer reconnects every 100 ms, a flood of connections or garbage frames repeats at line rate,
    and none of them may flood the log. ``budget`` caps the lines per interval over all subjects,
    so fresh subjects (new keys, new peers) cannot bypass it either."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        interval: float = defaults.SECURITY_LOG_INTERVAL,
        limit: int = 1024,
        budget: int = defaults.SECURITY_LOG_BUDGET,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.limit = limit
        self.budget = budget
        self._last: dict[Any, tuple[float, int]] = {}
        self._window = (-interval, 0)  # (start, lines logged in it)
        self._suppressed = 0

    def __call__(self, subject: Any, message: str, *args: Any) -> None:
        now = time.monotonic()
        last, repeats = self._last.get(subject, (-self.interval, 0))
        if now - last < self.interval:
            self._last[subject] = (last, repeats + 1)
            return
        start, lines = self._window
        if now - start >= self.interval:
            start, lines = now, 0
        if lines >= self.budget:
            self._suppressed += 1
            self._window = (start, lines)
            return
        self._window = (start, lines + 1)
        if len(self._last) >= self.limit:
            self._last.clear()
        self._last[subject] = (now, 0)
        suffix = f" (and {repeats} more time(s) since the last report)" if repeats else ""
        if self._suppressed:
            suffix += f" ({self._suppressed} similar line(s) about others suppressed)"
            self._suppressed = 0
        self.logger.log(self.level, message + suffix, *args)
