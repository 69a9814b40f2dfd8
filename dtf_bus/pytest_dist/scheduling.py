"""Which test ids go to the fleet as which tasks, and when: the scheduling side of ``pytest --dtf``.

The controller (:mod:`dtf_bus.pytest_dist.controller`) follows the job and replays reports; this
module owns what it submitted and what it holds back: the planned units (:func:`plan.plan_units`),
the backlog under ``--dtf-max-workers``, the reruns under ``--dtf-reruns``, the task each unit
becomes, and when the job can be closed. Kept apart so the submission policy reads in one place,
as pytest-xdist keeps its schedulers apart from its ``DSession``.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from dtf_bus import defaults
from dtf_bus.pytest_dist.plan import COLLECT_TASK, Unit, plan_units, run_meta

if TYPE_CHECKING:
    from dtf_bus.client import Client
    from dtf_bus.pytest_dist.settings import Settings

log = logging.getLogger(__name__)

PLUGIN_NAME = "pytest-session"


class Scheduler:
    """The run's job on the broker: its units submitted and not yet final, and those to come."""

    def __init__(self, client: Client, settings: Settings, workers: list[dict[str, Any]], rootdir: str) -> None:
        self.client = client
        self.settings = settings
        self.workers = workers
        self.rootdir = rootdir
        self.session_key = uuid.uuid4().hex
        self.job: str | None = None
        self.closed = False
        self.units: dict[str, Unit] = {}  # submitted, not yet final
        self.backlog: list[Unit] = []  # planned, held back by --dtf-max-workers
        self.planned = 0
        self.tasks_submitted = 0
        self.costs: dict[str, float] = {}
        self.reruns: dict[str, int] = {}

    def plan(self, items: list[dict[str, Any]], boost: bool) -> list[Unit]:
        if not items:
            return []
        units = plan_units(items, self.settings.dist, self.costs, self.sessions(), self.settings.requires)
        for unit in units:
            unit.name = f"{self.planned:05d} {unit.label}"[: defaults.PYTEST_TASK_NAME_CHARS]
            unit.first = boost
            self.planned += 1
        return units

    def session_workers(self) -> list[dict[str, Any]]:
        """The live workers that run pytest sessions."""
        return [w for w in self.workers if w.get("state") in ("idle", "busy") and PLUGIN_NAME in w.get("plugins", [])]

    def sessions(self) -> int:
        """Sessions the fleet can run at once (its pytest-session slots), the chunking's divisor."""
        slots = sum(int(w.get("slots") or 1) for w in self.session_workers())
        if self.settings.max_workers:
            slots = min(slots, self.settings.max_workers) if slots else self.settings.max_workers
        return max(1, slots)

    def launch(self, units: list[Unit]) -> None:
        units.sort(key=lambda u: -u.priority)
        if self.settings.max_workers:
            self.backlog = units
            self.submit_backlog()
        else:
            self.submit(units)
        self.maybe_close()

    def submit_backlog(self) -> None:
        room = (self.settings.max_workers or 0) - len(self.units)
        if room > 0 and self.backlog:
            batch, self.backlog = self.backlog[:room], self.backlog[room:]
            self.submit(batch)
            self.maybe_close()

    def maybe_close(self) -> None:
        """The job is closed as soon as nothing more can join it: then it is done once its
        tasks are final, and follow() says so. Reruns keep it open to the end."""
        if not self.closed and not self.backlog and not self.settings.reruns:
            self.close_job()

    def collect_unit(self, index: int = 0) -> Unit:
        """The collection (index 0), or a warm-up one that starts another session meanwhile."""
        name = f"{COLLECT_TASK} {index}" if index else COLLECT_TASK
        return Unit(name=name, nodeids=[], requires=dict(self.settings.requires), cost=0.0, first=True)

    def task(self, unit: Unit) -> dict[str, Any]:
        params: dict[str, Any] = {
            "session": self.session_key,
            "mode": "collect" if unit.name.startswith(COLLECT_TASK) else "run",
            "rootdir": self.rootdir,
            "args": self.settings.args,
            "marker_requires": self.settings.marker_requires,
        }
        if self.settings.python:
            params["python"] = self.settings.python
        if self.settings.ship is not None:
            params["ship"] = self.settings.ship.params
        if params["mode"] == "run":
            params["nodeids"] = unit.nodeids
        if unit.rerun:
            params["rerun"] = True
        task: dict[str, Any] = {
            "name": unit.name,
            "plugin": PLUGIN_NAME,
            "params": params,
            "priority": unit.priority,
            "retries": 0,
        }
        requires = dict(unit.requires)
        resources = requires.pop("resources", None)  # from dtf(resources=...): the task's own field
        if requires:
            task["requires"] = requires
        if resources:
            task["resources"] = resources
        return task

    def submit(self, units: list[Unit], first: bool = False) -> str:
        name = "pytest " + " ".join(self.settings.args)
        step = defaults.PYTEST_SUBMIT_BATCH
        for start in range(0, len(units), step):
            batch = units[start : start + step]
            meta = None if self.job else run_meta(self.rootdir, self.settings.labels)
            self.job = self.client.submit(
                [self.task(u) for u in batch], name=name[:200], job_id=self.job, keep_open=True, meta=meta
            )
            for unit in batch:
                self.units[unit.name] = unit
            self.tasks_submitted += len(batch)
        assert self.job is not None
        return self.job

    def may_rerun(self, nodeid: str) -> bool:
        """Whether a failed test has reruns left (``--dtf-reruns``)."""
        return self.reruns.get(nodeid, 0) < self.settings.reruns

    def rerun(self, unit: Unit, nodeid: str) -> None:
        count = self.reruns[nodeid] = self.reruns.get(nodeid, 0) + 1
        rerun = Unit(
            name=f"{self.planned:05d} rerun {count} {nodeid}"[: defaults.PYTEST_TASK_NAME_CHARS],
            nodeids=[nodeid],
            requires=unit.requires,
            cost=self.costs.get(nodeid, 0.0),
            rerun=count,
            label=nodeid,
            first=True,  # pytest-rerunfailures reruns at once: no waiting behind the whole suite
        )
        self.planned += 1
        self.submit([rerun])

    def close_job(self) -> None:
        if self.job and not self.closed:
            self.closed = True
            try:
                self.client.close_job(self.job)
            except Exception as exc:  # the run's outcome stands; a stale open job only costs memory
                log.warning("dtf: could not close job %s: %s", self.job, exc)

    def cancel(self) -> None:
        if self.job:
            try:
                self.client.cancel(self.job)
            except Exception as exc:
                log.warning("dtf: could not cancel job %s: %s", self.job, exc)
