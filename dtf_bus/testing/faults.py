"""Fault injection for tests: a worker that a signal cuts off from its broker and lets back.

The production entry point (``dtf-worker``) installs no such handler: a stray SIGUSR1 must not
partition a real worker. A test cluster started with ``faults=True``
(:class:`dtf_bus.testing.cluster.LocalCluster`) runs its workers through this module instead:
SIGUSR1 closes the worker's socket and keeps it disconnected (process alive, tasks still
running) until SIGUSR2, the way Dask's tests cut a worker off at a chosen moment.
"""

from __future__ import annotations

import signal
import sys
from typing import Protocol

PARTITION = signal.SIGUSR1
HEAL = signal.SIGUSR2


class Partitionable(Protocol):
    def partition(self) -> None: ...

    def heal(self) -> None: ...


def install(worker: Partitionable) -> None:
    """SIGUSR1 partitions ``worker``, SIGUSR2 heals it (flags only: safe in a signal handler)."""
    signal.signal(PARTITION, lambda *_: worker.partition())
    signal.signal(HEAL, lambda *_: worker.heal())


def main(argv: list[str] | None = None) -> int:
    """``dtf-worker`` with the fault signals installed. Imported here, not at the top: the
    cluster that only sends these signals (``dtf up`` too) need not load the worker."""
    from dtf_bus.worker.main import main as worker_main

    return worker_main(argv, prepare=install)


if __name__ == "__main__":
    sys.exit(main())
