"""Handing freed memory back to the operating system.

CPython returns an emptied arena to the OS by itself, but glibc's malloc keeps freed heap
pages (the store thread's JSON documents, large dicts) for reuse: after a job of 100,000
tasks is released the broker's RSS would stay near its peak for its whole life. glibc's
``malloc_trim`` gives them back; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def _load_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_trim()


def trim() -> None:
    """Release free heap pages to the OS where the C library can (a few ms for a large heap)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
