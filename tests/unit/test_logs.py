"""The log formatter every dtf command uses: one record, one physical line, no secrets."""

import logging
import sys

import pytest

from dtf_bus import logs

pytestmark = pytest.mark.unit


def format_record(msg: str, *args: object, exc_info: bool = False) -> str:
    record = logging.LogRecord("dtf.test", logging.WARNING, __file__, 1, msg, args, None)
    if exc_info:
        try:
            raise RuntimeError("boom \x1b[2J\nnext")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    return logs.SafeFormatter(logs.FORMAT).format(record)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x\nFAKE ERROR line", "x\\nFAKE ERROR line"),
        ("w\x1b[31m", "w\\x1b[31m"),
        ("a\rb\tc\x00d\x7fe\x85f", "a\\rb\\tc\\x00d\\x7fe\\x85f"),
        ("l\u2028m", "l\\u2028m"),
    ],
)
def test_control_characters_in_args_and_messages_are_escaped(value, shown):
    line = format_record("job %s queued", value)
    assert line.endswith(f"job {shown} queued") and "\n" not in line
    assert format_record(value).endswith(shown)


def test_a_traceback_keeps_its_lines_but_not_its_escapes():
    text = format_record("failed", exc_info=True)
    assert text.count("\n") >= 3 and text.splitlines()[1] == "Traceback (most recent call last):"
    assert "\x1b" not in text and "boom \\x1b[2J" in text


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("key dtf_0a1b2c3d_Zk9vT3Jx-_abc", "key dtf_0a1b2c3d_***"),
        ("GET /api/jobs?token=abc123&limit=5 401", "GET /api/jobs?token=***&limit=5 401"),
        ("GET /ws?api_key=dtf_0a1b2c3d_xyz", "GET /ws?api_key=***"),
        ("Authorization: Bearer eyJ0eXAi.abc", "Authorization: Bearer ***"),
        ("sent bearer abc.def", "sent bearer ***"),
        ('secret-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"', 'secret-key = "***"'),
    ],
)
def test_secrets_are_redacted(secret, shown):
    assert format_record("%s", secret).endswith(shown)


def test_ordinary_lines_pass_unchanged():
    assert format_record("job %s (%s): %d task(s) queued", "abc", "nightly", 3).endswith(
        "job abc (nightly): 3 task(s) queued"
    )


def test_configure_leaves_existing_handlers_alone():
    root = logging.getLogger()
    before = list(root.handlers)
    if not before:
        pytest.skip("the root logger has no handler to keep in this run")
    logs.configure("DEBUG")
    assert root.handlers == before
