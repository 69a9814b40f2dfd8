"""How every ``dtf`` command answers a script: its exit codes, ``--json`` objects and tables.

Exit codes are a contract for scripts: 0 everything succeeded, 1 some task failed, 2 a usage,
spec or request error, 3 the broker is unreachable, 4 ``--wait --timeout`` ran out (the job keeps
running), 130 interrupted. They and the printers live apart from the commands so that each group
of subcommands (:mod:`dtf_bus.cli.jobs`, :mod:`~dtf_bus.cli.results`, :mod:`~dtf_bus.cli.fleet`,
:mod:`~dtf_bus.cli.up`) speaks the same way without importing another.
"""

from __future__ import annotations

import json
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


class CommandFailed(Exception):
    """A command's end other than success, with its exit code and what ``--json`` adds."""

    def __init__(self, code: int, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
