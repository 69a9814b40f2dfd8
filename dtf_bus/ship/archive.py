"""Shipping a project to the workers: the pure parts (docs/shipping.md).

A project directory becomes one content-addressed archive: a tar of its files in sorted order
with every header fixed (mtime, owner, mode bits but the executable one), so the same tree
always packs to the same bytes and so to the same ``sha256:<hex>`` name. That name is all a
task carries (``params.ship``); the broker stores each archive once (:mod:`dtf_bus.ship.store`),
a client uploads only what the broker lacks (:mod:`dtf_bus.ship.client`), and a worker fetches,
verifies and unpacks it once into its cache (:mod:`dtf_bus.ship.cache`,
:mod:`dtf_bus.ship.fetch`, :mod:`dtf_bus.ship.worker`).

Which files: in a git checkout the files git shows (tracked, and untracked ones not ignored by
``.gitignore``: what a local run sees); elsewhere every file but :data:`defaults.SHIP_IGNORE`.
Unpacking refuses any member that could land outside its directory (absolute names, ``..``,
links leading out, devices) before tarfile's own ``data`` filter runs as a second guard.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dtf_bus import defaults

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
# Every member's mtime: fixed so the hash depends on content only, and after 1980 so that tools
# building zips (wheels from a shipped package) accept the unpacked files.
MTIME = 946684800  # 2000-01-01
# Plugins that take a ``cwd`` (run where the tree is unless told otherwise) and a ``python``.
CWD_PLUGINS = frozenset(("shell", "python", "pytest"))
PYTHON_PLUGINS = frozenset(("python", "pytest", "pytest-session"))


class ShipError(ValueError):
    """Shipping cannot go on; the message is one line that names the problem."""


def ref(hexdigest: str) -> str:
    return PREFIX + hexdigest


def parse(code: Any, what: str = "code") -> str:
    """``sha256:<64 hex>`` -> the hex digest; anything else (a path, a name) is refused: the
    broker and workers name archives by their hash alone."""
    if isinstance(code, str) and code.startswith(PREFIX) and _HEX.fullmatch(code[len(PREFIX) :]):
        return code[len(PREFIX) :]
    return _refuse(f"{what} must be 'sha256:' and 64 lowercase hex digits, got {str(code)[:80]!r}")


def _refuse(why: str) -> Any:
    raise ShipError(why)


def short(hexdigest: str) -> str:
    return f"{PREFIX}{hexdigest[:12]}"


def megabytes(n: int) -> str:
    """A size for people: ``1.5 MB``, ``12.3 kB``."""
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


@dataclass(frozen=True, slots=True)
class Reference:
    """What ``params.ship`` of a task holds, checked: the archive, the directory it was packed
    from on the submitting machine (absolute paths under it map into the tree) and the
    requirements blob of its venv, if any."""

    code: str  # hex
    root: str | None
    requirements: str | None  # hex

    @classmethod
    def of(cls, value: Any) -> Reference:
        if not isinstance(value, dict):
            raise ShipError("params.ship must be a table {code = 'sha256:...', root = '/dir', requirements = ...}")
        unknown = sorted(set(value) - {"code", "root", "requirements"})
        if unknown:
            raise ShipError(f"params.ship: unknown field {unknown[0]!r} (known: code, root, requirements)")
        root = value.get("root")
        if root is not None and not (isinstance(root, str) and root.startswith("/") and len(root) <= 4096):
            raise ShipError("params.ship.root must be an absolute path")
        reqs = value.get("requirements")
        return cls(
            parse(value.get("code"), "params.ship.code"),
            root,
            parse(reqs, "params.ship.requirements") if reqs is not None else None,
        )


# ---------------------------------------------------------------- packing


@dataclass(frozen=True, slots=True)
class Entry:
    """One file to ship: its archive name (POSIX, relative) and where it is."""

    name: str
    path: Path
    size: int
    link: str | None = None  # a symlink's target (relative, inside the project)
    executable: bool = False


def project_dir(path: str | Path) -> Path:
    """The project around ``path``: its git checkout's top level, else ``path`` itself."""
    path = Path(path).resolve()
    top = _git(path, "rev-parse", "--show-toplevel")
    return Path(top.decode().strip()).resolve() if top is not None else path


def _git(directory: Path, *args: str) -> bytes | None:
    """git's stdout, or None where git is missing or ``directory`` is no checkout."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, stdin=subprocess.DEVNULL)
    return proc.stdout if proc.returncode == 0 else None


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _walk(root: Path, under: str, patterns: tuple[str, ...]) -> list[str]:
    """Relative names of the files below ``root/under``, pruning ignored names."""
    found: list[str] = []
    for top, dirs, files in os.walk(root / under if under else root):
        rel = os.path.relpath(top, root)
        rel = "" if rel == "." else rel + "/"
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]  # shipped as links, not walked
        dirs[:] = sorted(d for d in dirs if d not in links and not _ignored(d, patterns))
        found += [rel + f for f in [*files, *links] if not _ignored(f, patterns)]
    return found


def list_files(root: Path, patterns: tuple[str, ...] = defaults.SHIP_IGNORE) -> tuple[list[str], str]:
    """The names to ship below ``root`` and how they were chosen (``git`` or ``walk``)."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None:
        return sorted(_walk(root, "", patterns)), "walk"
    names: set[str] = set()
    for raw in listed.split(b"\0"):
        if not raw:
            continue
        name = os.fsdecode(raw)
        path = root / name
        if path.is_dir() and not path.is_symlink():  # a submodule: git lists it as one entry
            names.update(_walk(root, name, patterns))
        else:
            names.add(name)
    return sorted(names), "git"


def collect(root: str | Path, max_bytes: int = defaults.SHIP_MAX_BYTES) -> tuple[Path, list[Entry], str]:
    """What :func:`pack` would write for ``root``, checked: the size limit, links that stay inside.
    Files git lists but the working tree lacks (deleted, not committed) are left out."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ShipError(f"{root}: not a directory")
    names, how = list_files(root)
    entries: list[Entry] = []
    total = 0
    for name in names:
        path = root / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            inside = os.path.normpath(os.path.join(os.path.dirname(name), target))
            if os.path.isabs(target) or inside == ".." or inside.startswith("../"):
                raise ShipError(f"{root}: symlink {name} points outside the project ({target}); it cannot be shipped")
            entries.append(Entry(name, path, 0, link=target))
        elif stat.S_ISREG(st.st_mode):
            entries.append(Entry(name, path, st.st_size, executable=bool(st.st_mode & 0o111)))
            total += st.st_size
    if total > max_bytes:
        largest = max(entries, key=lambda e: e.size)
        raise ShipError(
            f"{root}: {megabytes(total)} in {len(entries)} files is over the shipping limit of {megabytes(max_bytes)} "
            f"(largest: {largest.name}, {megabytes(largest.size)}); ship fewer files (.gitignore) or raise the limit "
            "(--ship-max-bytes)"
        )
    return root, sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogateescape")), how


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)


@dataclass(frozen=True, slots=True)
class Packed:
    hexdigest: str
    size: int  # of the archive
    files: int
    content_bytes: int  # the files' own bytes
    root: Path
    how: str  # git or walk

    @property
    def code(self) -> str:
        return ref(self.hexdigest)


def pack(root: str | Path, out: BinaryIO, max_bytes: int = defaults.SHIP_MAX_BYTES) -> Packed:
    """Write ``root``'s archive to ``out`` (a stream: tar's ``w|`` mode) and name it."""
    root, entries, how = collect(root, max_bytes)
    sink = _Hashing(out)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
            if entry.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
                continue
            info.size, info.mode = entry.size, 0o755 if entry.executable else 0o644
            try:
                with entry.path.open("rb") as fh:
                    tar.addfile(info, fh)
            except OSError as exc:  # shrank, vanished or unreadable while we packed
                raise ShipError(f"{root}: cannot pack {entry.name}: {exc}") from None
    content = sum(e.size for e in entries)
    return Packed(sink.sha.hexdigest(), sink.size, len(entries), content, root, how)


# ---------------------------------------------------------------- unpacking


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = name.split("/")
    if not name or name.startswith("/") or os.path.isabs(name) or ".." in parts:
        return "would land outside the work dir"
    if member.issym():
        target = member.linkname
        inside = os.path.normpath(os.path.join(os.path.dirname(name), target))
        if os.path.isabs(target) or inside == ".." or inside.startswith("../"):
            return f"is a link leading outside the work dir ({target})"
        return None
    if not (member.isreg() or member.isdir()):
        return "is not a plain file, directory or symlink"
    return None


def unpack(archive: Path, dest: Path) -> int:
    """Extract ``archive`` into ``dest`` (created), refusing members that could escape it;
    returns the bytes of its files."""
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _member_problem(member)
                if problem is not None:
                    raise ShipError(f"archive member {member.name!r} {problem}; refusing to unpack it")
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: tarfile's own guard as well
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - older 3.11 releases; every member was checked above
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as exc:
        raise ShipError(f"cannot unpack the shipped archive: {exc}") from None
    return sum(m.size for m in members if m.isreg())


# ---------------------------------------------------------------- tasks


def _map(path: str, root: str | None, tree: str) -> str:
    """A task's path in the tree: relative paths are the tree's; absolute ones under the
    directory the project was packed from move with it; others stay (the worker's own)."""
    if not os.path.isabs(path):
        return os.path.normpath(os.path.join(tree, path))
    if root is not None:
        base = root.rstrip("/") or "/"
        if path == base:
            return tree
        if path.startswith(base.rstrip("/") + "/"):
            return tree + path[len(base.rstrip("/")) :]
    return path


def shipped_params(
    plugin: str, params: dict[str, Any], tree: str, root: str | None, venv: str | None
) -> dict[str, Any]:
    """``params`` for running in the unpacked ``tree``: ``ship`` gone (an executor such as the
    cpu benchmark passes every param on as an argument), ``cwd`` (default: the tree),
    ``rootdir``, ``path`` and an absolute ``python`` placed in it, and ``python`` the venv's
    where the task ships requirements and names no interpreter."""
    out = {k: v for k, v in params.items() if k != "ship"}
    if isinstance(out.get("cwd"), str):
        out["cwd"] = _map(out["cwd"], root, tree)
    elif plugin in CWD_PLUGINS and out.get("cwd") is None:
        out["cwd"] = tree
    if isinstance(out.get("rootdir"), str):
        out["rootdir"] = _map(out["rootdir"], root, tree)
    path = out.get("path")
    if isinstance(path, str):
        out["path"] = _map(path, root, tree)
    elif isinstance(path, list):
        out["path"] = [_map(p, root, tree) if isinstance(p, str) else p for p in path]
    python = out.get("python")
    if isinstance(python, str) and os.path.isabs(python):
        out["python"] = _map(python, root, tree)
    elif python is None and venv is not None and plugin in PYTHON_PLUGINS:
        out["python"] = os.path.join(venv, "bin", "python")
    return out
