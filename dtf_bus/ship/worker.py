"""The worker's side of shipping: run a task that carries ``params.ship`` in its unpacked tree.

:meth:`Shipping.run` stands between the worker and an executor. A task without ``params.ship``
goes straight through. Otherwise, on the task's thread (never the worker's loop): the tree
``tree-<hex>`` is taken from the cache or fetched (:class:`dtf_bus.ship.fetch.Fetcher`),
verified and unpacked; with requirements, the venv ``venv-<hex>`` is taken or built
(``python -m venv`` and ``pip install -r`` in the tree, so a requirement naming a path inside
the project works); then the executor runs with its params placed in the tree
(:func:`dtf_bus.ship.archive.shipped_params`) and ``ctx.ship_dir``/``ship_root``/``ship_venv`` set.
The result gains ``ship``: the code, the tree, whether it was cached, the bytes fetched.
Any failure to prepare fails the task with one line saying why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dtf_bus import defaults
from dtf_bus.plugins import Executor, TaskContext, TaskFailed, run_process
from dtf_bus.security import curve as security
from dtf_bus.ship import archive as ship
from dtf_bus.ship.archive import ShipError
from dtf_bus.ship.cache import Cache, default_dir
from dtf_bus.ship.fetch import Fetch, Fetcher

log = logging.getLogger("dtf.ship")


class Shipping:
    def __init__(self, cache: Cache, fetch: Fetch) -> None:
        self.cache = cache
        self.fetch = fetch

    @classmethod
    def for_worker(
        cls,
        broker: str,
        worker_id: str,
        curve: security.ClientCurve | None = None,
        cache_dir: str | Path | None = None,
        cache_bytes: int = defaults.SHIP_CACHE_BYTES,
    ) -> Shipping:
        return cls(Cache(cache_dir or default_dir(), cache_bytes), Fetcher(broker, worker_id, curve).fetch)

    def run(self, executor: Executor, ctx: TaskContext, plugin: str) -> dict[str, Any]:
        value = ctx.params.get("ship")
        if value is None:
            return executor.run(ctx)
        try:
            reference = ship.Reference.of(value)
        except ShipError as exc:
            raise TaskFailed(str(exc)) from None
        info: dict[str, Any] = {"code": ship.ref(reference.code), "fetched_bytes": 0}
        with contextlib.ExitStack() as held:  # nobody evicts the tree or venv until the task ends
            try:
                tree, venv = self._prepare(reference, ctx, info, held)
            except ShipError as exc:
                raise TaskFailed(f"shipped code: {exc}", {"ship": info}) from None
            except OSError as exc:  # the cache's disk: full, read-only, gone
                raise TaskFailed(f"shipped code: the ship cache {self.cache.root}: {exc}", {"ship": info}) from None
            return self._run_in(executor, ctx, plugin, reference, tree, venv, info)

    def _prepare(
        self, reference: ship.Reference, ctx: TaskContext, info: dict[str, Any], held: contextlib.ExitStack
    ) -> tuple[Path, Path | None]:
        """The task's tree (and venv), fetched or built unless cached, held in use by ``held``."""
        started = time.monotonic()
        build_tree = lambda d: self._unpack(reference.code, d, ctx, info)  # noqa: E731
        tree, hit = held.enter_context(self.cache.use(f"tree-{reference.code}", build_tree, ctx.cancelled))
        info.update(dir=str(tree), cached=hit)
        venv = None
        if reference.requirements is not None:
            build_venv = lambda d: self._build_venv(reference.requirements, d, tree, ctx)  # noqa: E731
            venv, venv_hit = held.enter_context(
                self.cache.use(f"venv-{reference.requirements}", build_venv, ctx.cancelled)
            )
            info.update(venv=str(venv), venv_cached=venv_hit)
        info["prepare_s"] = round(time.monotonic() - started, 6)
        return tree, venv

    def _run_in(
        self,
        executor: Executor,
        ctx: TaskContext,
        plugin: str,
        reference: ship.Reference,
        tree: Path,
        venv: Path | None,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        ctx.params = ship.shipped_params(plugin, ctx.params, str(tree), reference.root, str(venv) if venv else None)
        ctx.ship_dir, ctx.ship_root = str(tree), reference.root
        ctx.ship_venv = str(venv) if venv else None
        try:
            result = executor.run(ctx)
        except TaskFailed as exc:
            exc.result = {**(exc.result or {}), "ship": info}
            raise
        return {**result, "ship": info} if isinstance(result, dict) else result

    def _unpack(self, hexdigest: str, directory: Path, ctx: TaskContext, info: dict[str, Any]) -> None:
        archive = self.cache.partial / f"{hexdigest}.tar"
        info.update(self.fetch(hexdigest, archive, ctx.cancelled))
        started = time.monotonic()
        try:
            ship.unpack(archive, directory)
        finally:
            archive.unlink(missing_ok=True)  # unpacked, or refused: either way not kept
        info["unpack_s"] = round(time.monotonic() - started, 6)
        log.info("task %s: shipped code %s unpacked into %s", ctx.task_id, ship.short(hexdigest), directory)

    def _build_venv(self, hexdigest: str, venv: Path, tree: Path, ctx: TaskContext) -> None:
        started = time.monotonic()
        requirements = self.cache.partial / f"{hexdigest}.requirements"
        self.fetch(hexdigest, requirements, ctx.cancelled)
        venv.mkdir(parents=True)
        target = venv / "requirements.txt"
        shutil.move(requirements, target)
        python = str(venv / "bin" / "python")
        # The worker's own pip installs into the new venv (--python): no pip bootstrap per venv.
        own_pip = importlib.util.find_spec("pip") is not None
        steps = [[sys.executable, "-m", "venv", *(["--without-pip"] if own_pip else []), str(venv)]]
        pip = [sys.executable, "-m", "pip", "--python", python] if own_pip else [python, "-m", "pip"]
        steps.append([*pip, "install", "--disable-pip-version-check", "-r", str(target)])
        for argv in steps:
            proc = run_process(ctx, argv, cwd=str(tree))  # in the tree: paths in requirements are the project's
            if proc.killed:
                raise ShipError("building the venv was cancelled")
            if proc.returncode != 0:
                last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
                raise ShipError(f"building the venv failed: {argv[2]} exited {proc.returncode}: {last}")
        log.info("task %s: venv %s built in %.1fs", ctx.task_id, venv, time.monotonic() - started)
