"""The submitting side of shipping: pack a project, upload what the broker lacks, tag the tasks.

:func:`ship_directory` packs the directory (:func:`dtf_bus.ship.archive.pack`, into a temporary file), asks the
broker whether it holds that hash (``ship_have``) and uploads the archive in chunks only if not,
from where an earlier, interrupted upload stopped. Unchanged code therefore costs one packing
pass and one round trip; its bytes are never sent twice. The ``params.ship`` table it returns is
what every task of the run carries (:func:`attach`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_bus import defaults, protocol
from dtf_bus.client import BrokerUnreachable, Client, ClientError
from dtf_bus.ship import archive as ship
from dtf_bus.ship.archive import ShipError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Shipped:
    """The ``params.ship`` table for the tasks, and what shipping it cost."""

    params: dict[str, Any]
    packed: ship.Packed
    sent_bytes: int
    sent_chunks: int
    pack_s: float
    upload_s: float

    def describe(self) -> str:
        sent = "already on the broker" if not self.sent_bytes else f"uploaded {ship.megabytes(self.sent_bytes)}"
        return (
            f"shipped {self.packed.root} ({self.packed.files} files, {ship.megabytes(self.packed.content_bytes)}, "
            f"{self.packed.code[:19]}…): {sent}"
        )


def upload(client: Client, path: Path, hexdigest: str, size: int) -> tuple[int, int]:
    """Send the archive at ``path`` unless the broker holds it; returns (bytes, chunks) sent.
    Up to SHIP_FETCH_WINDOW chunks are in flight at once; a reply placing the upload elsewhere
    (another client uploading the same code, a resume) restarts the window from there."""
    code = ship.ref(hexdigest)
    state = client.request(protocol.SHIP_HAVE, {"code": code})
    if state["have"]:
        return 0, 0
    offset, sent, chunks = int(state["offset"]), 0, 0
    window: list[tuple[int, int]] = []  # (req, the offset after its chunk), oldest first
    with path.open("rb") as fh:
        while True:
            while len(window) < defaults.SHIP_FETCH_WINDOW and (offset < size or not window):
                fh.seek(offset)
                data = fh.read(defaults.SHIP_CHUNK_BYTES)
                body = {"code": code, "size": size, "offset": offset, "data": data}
                offset += len(data)
                window.append((client.send(protocol.SHIP_PUT, body), offset))
                sent, chunks = sent + len(data), chunks + 1
            req, expected = window.pop(0)
            reply = client.reply(req)
            if reply["stored"]:
                return sent, chunks
            if reply["offset"] != expected:  # placed elsewhere: what is still in flight is moot
                for req, _ in window:
                    client.reply(req)
                window, offset = [], int(reply["offset"])


def _blob(client: Client, text: str) -> str:
    """Upload a small text (a requirements file) as an archive of its own; returns its hex."""
    data = text.encode()
    hexdigest = hashlib.sha256(data).hexdigest()
    with tempfile.NamedTemporaryFile(prefix="dtf-ship-") as fh:
        fh.write(data)
        fh.flush()
        upload(client, Path(fh.name), hexdigest, len(data))
    return hexdigest


def read_requirements(path: str | Path) -> str:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShipError(f"cannot read the requirements file {path}: {exc}") from None
    if len(text.encode()) > defaults.SHIP_REQUIREMENTS_BYTES:
        raise ShipError(f"{path}: a requirements file of at most {defaults.SHIP_REQUIREMENTS_BYTES} bytes, please")
    return text


def ship_directory(
    client: Client,
    directory: str | Path,
    max_bytes: int = defaults.SHIP_MAX_BYTES,
    requirements: str | Path | None = None,
) -> Shipped:
    """Pack ``directory``, make sure the broker holds it, and say what the tasks carry."""
    if max_bytes < 1:
        raise ShipError("the shipping limit must be a positive number of bytes")
    reqs = read_requirements(requirements) if requirements is not None else None
    started = time.monotonic()
    fd, name = tempfile.mkstemp(prefix="dtf-ship-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as out:
            packed = ship.pack(directory, out, max_bytes)
        packed_at = time.monotonic()
        sent, chunks = upload(client, Path(name), packed.hexdigest, packed.size)
    finally:
        os.unlink(name)
    params: dict[str, Any] = {"code": packed.code, "root": str(packed.root)}
    if reqs is not None:
        params["requirements"] = ship.ref(_blob(client, reqs))
    done = time.monotonic()
    return Shipped(params, packed, sent, chunks, packed_at - started, done - packed_at)


def attach(tasks: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Every task that does not name shipped code of its own runs in this one."""
    for task in tasks:
        task_params = task.setdefault("params", {})
        if isinstance(task_params, dict):
            task_params.setdefault("ship", params)


def for_pytest(client: Client, rootdir: str | Path, option: Any) -> Shipped | None:
    """``pytest --dtf --dtf-ship``: the checkout around the rootdir (or the rootdir), shipped.
    Any failure is a ClientError (the plugin's one-line usage error) naming the option."""
    if not getattr(option, "dtf_ship", False):
        if option.dtf_ship_requirements:
            raise ClientError("--dtf-ship-requirements needs --dtf-ship")
        return None
    directory = ship.project_dir(rootdir)
    try:
        return ship_directory(client, directory, option.dtf_ship_max_bytes, option.dtf_ship_requirements)
    except BrokerUnreachable:
        raise
    except (ShipError, ClientError) as exc:  # a usage error, or the broker refused (its store is full)
        raise ClientError(f"--dtf-ship: {exc}") from None


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ship", metavar="DIR", help="pack DIR (its git files) and run the tasks in it on the workers")
    parser.add_argument("--ship-requirements", metavar="FILE", help="with --ship: a venv from FILE runs the tasks")
    parser.add_argument(
        "--ship-max-bytes",
        type=int,
        default=defaults.SHIP_MAX_BYTES,
        metavar="N",
        help="refuse to ship more than N bytes of files (default %(default)s)",
    )


def for_submit(client: Client, tasks: list[dict[str, Any]], args: argparse.Namespace) -> Shipped | None:
    """``dtf submit --ship DIR``: ship DIR and attach it to the tasks (a line on stderr says what
    it cost, so stdout keeps --json's one object)."""
    if args.ship is None:
        if args.ship_requirements:
            raise ShipError("--ship-requirements needs --ship DIR")
        return None
    shipped = ship_directory(client, args.ship, args.ship_max_bytes, args.ship_requirements)
    attach(tasks, shipped.params)
    print(f"dtf submit: {shipped.describe()}", file=sys.stderr)
    return shipped
