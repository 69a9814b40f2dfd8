"""The broker's store of shipped archives: each stored once, by hash, beside the DuckDB file.

Archives live as plain files in ``<db>.ship/<hex>`` rather than in DuckDB: the broker answers
a worker's chunk request on its loop with one ``pread`` of at most SHIP_CHUNK_BYTES (about a
millisecond), where a DuckDB read would have to go through the archive thread, and blobs of
tens of megabytes would swell the database and its WAL for rows nobody queries. An upload
arrives in chunks at increasing offsets into ``partial/<hex>``, hashed as it comes; the last
chunk's hash must be the name, then the file is synced and renamed into place (atomic: a reader
sees a whole archive or none). Names are hashes only, never a client's path.

The store is bounded (``--ship-store-bytes``): an upload that does not fit evicts archives
unused (not uploaded, asked for, fetched or named by a submitted task) for SHIP_STORE_MIN_IDLE
seconds, least recently used first, and is refused with the reason when that is not enough.
The counters (:meth:`ShipStore.stats`, in the PING reply) show what crossed the wire: a second
submit of unchanged code adds nothing to ``received_bytes``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_bus import defaults, protocol
from dtf_bus.ship import archive as ship
from dtf_bus.ship.archive import ShipError

log = logging.getLogger("dtf.ship")

_FETCHERS_KEPT = 1024  # workers whose fetched bytes are counted one by one (then the oldest is dropped)

Send = Callable[[bytes, str, dict[str, Any]], Any]  # the broker's _send(peer, kind, body)


@dataclass(slots=True)
class _Upload:
    size: int
    path: Path
    fh: Any
    offset: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.monotonic)


class ShipStore:
    def __init__(
        self,
        directory: str | Path | None,
        max_bytes: int = defaults.SHIP_STORE_BYTES,
        min_idle: float = defaults.SHIP_STORE_MIN_IDLE,
    ) -> None:
        """``directory`` None (an in-memory database): a temporary one, removed on close."""
        self._temporary = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="dtf-ship-")) if directory is None else Path(directory)
        self.max_bytes = max_bytes
        self.min_idle = min_idle
        self._partial = self.directory / "partial"
        shutil.rmtree(self._partial, ignore_errors=True)  # uploads cut short by a restart start over
        self._partial.mkdir(parents=True, exist_ok=True)
        self.archives: dict[str, list[float]] = {}  # hex -> [size, last used (epoch)]
        for path in self.directory.iterdir():
            if path.is_file() and ship._HEX.fullmatch(path.name):
                st = path.stat()
                self.archives[path.name] = [st.st_size, st.st_mtime]
        self.uploads: dict[str, _Upload] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.fetched_by: collections.OrderedDict[str, int] = collections.OrderedDict()

    @staticmethod
    def beside(db: str | Path) -> Path | None:
        """Where the archives of the database ``db`` live (None for ``:memory:``)."""
        return None if str(db) == ":memory:" else Path(f"{db}.ship")

    def close(self) -> None:
        for upload in self.uploads.values():
            upload.fh.close()
        self.uploads.clear()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def handlers(self, send: Send) -> dict[str, Callable[[bytes, dict[str, Any]], None]]:
        """The broker's handlers for the shipping messages: a REPLY, or an ERROR of one line."""

        def handler(method: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[bytes, dict[str, Any]], None]:
            def handle(peer: bytes, body: dict[str, Any]) -> None:
                try:
                    send(peer, protocol.REPLY, {"req": body["req"], "data": method(body)})
                except ShipError as exc:
                    send(peer, protocol.ERROR, {"req": body["req"], "error": str(exc)})

            return handle

        kinds = {protocol.SHIP_HAVE: self.have, protocol.SHIP_PUT: self.put, protocol.SHIP_GET: self.get}
        return {kind: handler(method) for kind, method in kinds.items()}

    # ------------------------------------------------------------- requests

    def have(self, body: dict[str, Any]) -> dict[str, Any]:
        """Whether the archive is stored, and where an upload of it stands (to resume)."""
        hexdigest = ship.parse(body["code"])
        self._expire_uploads()
        if hexdigest in self.archives:
            self._touch(hexdigest)
            return {"have": True, "offset": int(self.archives[hexdigest][0])}
        upload = self.uploads.get(hexdigest)
        return {"have": False, "offset": upload.offset if upload is not None else 0}

    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chunk of an upload. A chunk at another offset than the upload's is ignored and
        the reply says where to go on (two clients uploading the same code, or a resume)."""
        hexdigest, size, offset, data = ship.parse(body["code"]), body["size"], body["offset"], body["data"]
        if hexdigest in self.archives:
            self._touch(hexdigest)
            return {"offset": int(self.archives[hexdigest][0]), "stored": True}
        if len(data) > defaults.SHIP_CHUNK_BYTES:
            raise ShipError(f"a chunk of {len(data)} bytes is over the {defaults.SHIP_CHUNK_BYTES} allowed")
        self._expire_uploads()
        upload = self.uploads.get(hexdigest)
        if upload is None:
            if offset != 0:
                return {"offset": 0, "stored": False}
            # Checked before anything is reserved or opened: an empty or oversized first chunk
            # must not hold a file and its announced size for SHIP_UPLOAD_IDLE.
            if len(data) > size or (not data and size > 0):
                raise ShipError(f"upload of {ship.short(hexdigest)}: {len(data)} bytes at 0 do not fit {size}")
            if len(self.uploads) >= defaults.SHIP_UPLOADS_AT_ONCE:
                raise ShipError(f"{len(self.uploads)} uploads are in progress already; try again shortly")
            upload = self._begin(hexdigest, size)
        if size != upload.size:
            raise ShipError(f"upload of {ship.short(hexdigest)} announced {upload.size} bytes, now {size}")
        upload.touched = time.monotonic()
        if offset != upload.offset:
            return {"offset": upload.offset, "stored": False}
        if offset + len(data) > size or (not data and offset < size):
            raise ShipError(f"upload of {ship.short(hexdigest)}: {len(data)} bytes at {offset} do not fit {size}")
        upload.fh.write(data)
        upload.sha.update(data)
        upload.offset += len(data)
        self.counters["received_bytes"] += len(data)
        self.counters["received_chunks"] += 1
        if upload.offset < size:
            return {"offset": upload.offset, "stored": False}
        self._finish(hexdigest, upload)
        return {"offset": size, "stored": True}

    def get(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chunk of a stored archive, read from its file (cheap enough for the loop)."""
        hexdigest, offset = ship.parse(body["code"]), body["offset"]
        entry = self.archives.get(hexdigest)
        if entry is None:
            raise ShipError(
                f"{ship.short(hexdigest)} is not stored on this broker (never uploaded, or evicted); submit it again"
            )
        size = int(entry[0])
        if offset > size:
            raise ShipError(f"offset {offset} is past the end of {ship.short(hexdigest)} ({size} bytes)")
        length = min(defaults.SHIP_CHUNK_BYTES, size - offset)
        fd = os.open(self.directory / hexdigest, os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        self._touch(hexdigest, persist=False)
        self.counters["sent_bytes"] += len(data)
        self.counters["sent_chunks"] += 1
        worker = str(body.get("worker_id") or "?")
        self.fetched_by[worker] = self.fetched_by.pop(worker, 0) + len(data)
        if len(self.fetched_by) > _FETCHERS_KEPT:
            self.fetched_by.popitem(last=False)
        return {"data": data, "size": size}

    def missing(self, specs: list[dict[str, Any]]) -> str | None:
        """Why these tasks cannot be queued (a malformed ``params.ship``, or code this broker
        does not hold), or None; the archives they name count as used now."""
        seen: set[str] = set()
        touched: set[str] = set()
        for task in specs:
            value = task["params"].get("ship")
            # Decoded apart for every task, but most tasks of a job name the same code: checked once.
            key = json.dumps(value, sort_keys=True, default=str)
            if value is None or key in seen:
                continue
            seen.add(key)
            try:
                reference = ship.Reference.of(value)
            except ShipError as exc:
                return f"task {task['name']!r}: {exc}"
            for hexdigest in filter(None, (reference.code, reference.requirements)):
                if hexdigest not in self.archives:
                    return (
                        f"task {task['name']!r}: shipped code {ship.short(hexdigest)} is not stored on this broker; "
                        "upload it first (dtf submit --ship, pytest --dtf-ship)"
                    )
                touched.add(hexdigest)
        for hexdigest in touched:  # one touch (a file's mtime) per archive, not per task
            self._touch(hexdigest)
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "archives": len(self.archives),
            "stored_bytes": int(sum(size for size, _ in self.archives.values())),
            "max_bytes": self.max_bytes,
            "uploads_in_progress": len(self.uploads),
            "uploads": self.counters["uploads"],
            "received_bytes": self.counters["received_bytes"],
            "received_chunks": self.counters["received_chunks"],
            "sent_bytes": self.counters["sent_bytes"],
            "sent_chunks": self.counters["sent_chunks"],
            "evicted": self.counters["evicted"],
            "fetched_by": dict(self.fetched_by),
        }

    # ------------------------------------------------------------- internals

    def _touch(self, hexdigest: str, persist: bool = True) -> None:
        """Used now: the LRU order, kept across restarts through the file's mtime."""
        self.archives[hexdigest][1] = time.time()
        if persist:
            try:
                os.utime(self.directory / hexdigest)
            except OSError:
                log.warning("ship store: cannot touch %s", hexdigest)

    def _held(self) -> int:
        return int(sum(size for size, _ in self.archives.values())) + sum(u.size for u in self.uploads.values())

    def _begin(self, hexdigest: str, size: int) -> _Upload:
        if size > self.max_bytes:
            raise ShipError(
                f"{ship.short(hexdigest)} is {ship.megabytes(size)}, over the broker's whole code store "
                f"({ship.megabytes(self.max_bytes)}, dtf-broker --ship-store-bytes)"
            )
        self._make_room(size)
        path = self._partial / hexdigest
        upload = _Upload(size, path, path.open("wb"))
        self.uploads[hexdigest] = upload
        return upload

    def _make_room(self, size: int) -> None:
        held = self._held()
        if held + size <= self.max_bytes:
            return
        cutoff = time.time() - self.min_idle
        for hexdigest, (stored, used) in sorted(self.archives.items(), key=lambda item: item[1][1]):
            if used > cutoff or held + size <= self.max_bytes:
                break
            (self.directory / hexdigest).unlink(missing_ok=True)
            del self.archives[hexdigest]
            held -= int(stored)
            self.counters["evicted"] += 1
            log.info("ship store: evicted %s (%s, unused since %s)", hexdigest, ship.megabytes(int(stored)), used)
        if held + size > self.max_bytes:
            raise ShipError(
                f"the broker's code store is full: {ship.megabytes(held)} held of {ship.megabytes(self.max_bytes)} "
                f"(dtf-broker --ship-store-bytes) and nothing was unused for {self.min_idle:g}s; "
                f"{ship.megabytes(size)} more do not fit, try later or raise the limit"
            )

    def _finish(self, hexdigest: str, upload: _Upload) -> None:
        del self.uploads[hexdigest]
        got = upload.sha.hexdigest()
        if got != hexdigest:
            upload.fh.close()
            upload.path.unlink(missing_ok=True)
            raise ShipError(f"upload of {ship.short(hexdigest)}: the bytes received hash to {ship.short(got)}, dropped")
        upload.fh.flush()
        os.fsync(upload.fh.fileno())
        upload.fh.close()
        os.replace(upload.path, self.directory / hexdigest)
        self.archives[hexdigest] = [upload.size, time.time()]
        self.counters["uploads"] += 1
        log.info("ship store: stored %s (%s)", hexdigest, ship.megabytes(upload.size))

    def _expire_uploads(self) -> None:
        if not self.uploads:
            return
        cutoff = time.monotonic() - defaults.SHIP_UPLOAD_IDLE
        for hexdigest in [h for h, u in self.uploads.items() if u.touched < cutoff]:
            upload = self.uploads.pop(hexdigest)
            upload.fh.close()
            upload.path.unlink(missing_ok=True)
            log.info("ship store: dropped an upload of %s at %d of %d bytes", hexdigest, upload.offset, upload.size)
