"""Shipping's pure parts: deterministic packing, safe unpacking, the broker's store, the worker's
LRU cache, resumable chunk bookkeeping and params placed in the tree. Real files in tmp dirs,
no sockets (the fetch loop's transport is a function here)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from dtf_bus import protocol
from dtf_bus.security import roles
from dtf_bus.ship import archive as ship
from dtf_bus.ship.archive import ShipError
from dtf_bus.ship.cache import Cache
from dtf_bus.ship.fetch import Download
from dtf_bus.ship.store import ShipStore

pytestmark = pytest.mark.unit


def make_tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "data.txt").write_text("data\n")
    (root / "pkg" / "link.py").symlink_to("mod.py")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"junk")
    return root


def packed(root: Path, max_bytes: int = ship.defaults.SHIP_MAX_BYTES) -> tuple[ship.Packed, bytes]:
    out = io.BytesIO()
    result = ship.pack(root, out, max_bytes)
    return result, out.getvalue()


def test_the_same_tree_packs_to_the_same_bytes_wherever_and_whenever_it_is(tmp_path):
    first, data = packed(make_tree(tmp_path / "a"))
    second_root = make_tree(tmp_path / "elsewhere" / "b")
    os.utime(second_root / "data.txt", (1, 1))  # other mtimes, other place: same archive
    (second_root / "data.txt").chmod(0o600)
    second, data2 = packed(second_root)
    assert data == data2 and first.hexdigest == second.hexdigest == hashlib.sha256(data).hexdigest()
    assert first.code == "sha256:" + first.hexdigest and first.size == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["data.txt", "pkg/link.py", "pkg/mod.py", "run.sh"]  # sorted, no __pycache__
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(ship.MTIME, 0, 0, "")}
    modes = {m.name: m.mode for m in members}
    assert modes["run.sh"] == 0o755 and modes["data.txt"] == 0o644
    assert members[1].issym() and members[1].linkname == "mod.py"
    (second_root / "data.txt").write_text("changed\n")
    assert packed(second_root)[0].hexdigest != first.hexdigest


def test_a_git_checkout_ships_what_git_shows_and_not_what_it_ignores(tmp_path):
    root = make_tree(tmp_path / "repo")
    (root / ".gitignore").write_text("*.log\n__pycache__/\n")
    (root / "debug.log").write_text("noise")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "pkg", ".gitignore"], check=True)
    names, how = ship.list_files(root)
    assert how == "git"
    # Tracked, and untracked but not ignored (a new test file a local run would collect too).
    assert names == [".gitignore", "data.txt", "pkg/link.py", "pkg/mod.py", "run.sh"]
    assert ship.project_dir(root / "pkg") == root.resolve()
    (root / "pkg" / "mod.py").unlink()  # deleted in the working tree: not shipped
    assert [e.name for e in ship.collect(root)[1]] == [".gitignore", "data.txt", "pkg/link.py", "run.sh"]


def test_too_large_a_project_is_refused_in_one_line_naming_its_size_and_largest_file(tmp_path):
    root = make_tree(tmp_path / "big")
    (root / "blob.bin").write_bytes(b"\0" * 5000)
    with pytest.raises(ShipError) as err:
        packed(root, max_bytes=4000)
    message = str(err.value)
    assert "\n" not in message and "over the shipping limit of 4.0 kB" in message
    assert "largest: blob.bin" in message and "--ship-max-bytes" in message


def test_a_symlink_leading_out_of_the_project_is_refused(tmp_path):
    root = make_tree(tmp_path / "p")
    (root / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(ShipError, match="symlink escape points outside the project"):
        packed(root)


def crafted(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "link", "why"),
    [
        ("../evil", tarfile.REGTYPE, "", "would land outside the work dir"),
        ("a/../../evil", tarfile.REGTYPE, "", "would land outside the work dir"),
        ("/etc/evil", tarfile.REGTYPE, "", "would land outside the work dir"),
        ("link", tarfile.SYMTYPE, "/etc/passwd", "is a link leading outside the work dir"),
        ("a/link", tarfile.SYMTYPE, "../../x", "is a link leading outside the work dir"),
        ("hard", tarfile.LNKTYPE, "x", "is not a plain file, directory or symlink"),
        ("dev", tarfile.CHRTYPE, "", "is not a plain file, directory or symlink"),
    ],
)
def test_unpacking_refuses_members_that_could_escape_the_work_dir(tmp_path, name, kind, link, why):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    dest = tmp_path / "dest"
    with pytest.raises(ShipError, match=re.escape(f"archive member '{name}' {why}")) as err:
        ship.unpack(crafted(tmp_path, member, b"x"), dest)
    assert str(err.value).endswith("; refusing to unpack it")
    assert not (tmp_path / "evil").exists() and not dest.exists()


def test_unpacking_a_packed_tree_gives_it_back(tmp_path):
    info, data = packed(make_tree(tmp_path / "src"))
    archive = tmp_path / "a.tar"
    archive.write_bytes(data)
    assert ship.unpack(archive, tmp_path / "out") == info.content_bytes
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "VALUE = 1\n"
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)
    assert os.readlink(tmp_path / "out" / "pkg" / "link.py") == "mod.py"


def test_archive_names_are_hashes_only():
    digest = "ab" * 32
    assert ship.parse("sha256:" + digest) == digest
    for bad in ("../../etc/passwd", "sha256:" + "AB" * 32, "sha256:../x", "md5:" + digest, None, 3):
        with pytest.raises(ShipError, match="must be 'sha256:' and 64 lowercase hex digits"):
            ship.parse(bad)
    with pytest.raises(ShipError, match=r"params\.ship\.root must be an absolute path"):
        ship.Reference.of({"code": "sha256:" + digest, "root": "relative"})


def test_workers_fetch_and_clients_upload_under_curve_roles():
    assert roles.refusal(roles.WORKER, "w", protocol.SHIP_GET) is None
    assert roles.refusal(roles.CLIENT, "c", protocol.SHIP_PUT) is None
    assert roles.refusal(roles.CLIENT, "c", protocol.SHIP_HAVE) is None
    assert "needs admin or worker" in roles.refusal(roles.CLIENT, "c", protocol.SHIP_GET)
    assert "needs admin or client" in roles.refusal(roles.WORKER, "w", protocol.SHIP_PUT)


# ---------------------------------------------------------------- the broker's store


def upload(store: ShipStore, data: bytes, chunk: int = 4) -> list[dict]:
    code = "sha256:" + hashlib.sha256(data).hexdigest()
    replies, offset = [], 0
    while True:
        reply = store.put({"code": code, "size": len(data), "offset": offset, "data": data[offset : offset + chunk]})
        replies.append(reply)
        if reply["stored"]:
            return replies
        offset = reply["offset"]


def test_the_store_keeps_an_upload_once_and_serves_it_in_chunks(tmp_path):
    store = ShipStore(tmp_path / "db.ship")
    data = b"0123456789" * 3
    code = "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.have({"code": code}) == {"have": False, "offset": 0}
    upload(store, data[:8])  # another archive, to check names do not mix
    replies = upload(store, data)
    assert replies[-1] == {"offset": 30, "stored": True} and len(replies) == 8
    assert (tmp_path / "db.ship" / code[7:]).read_bytes() == data  # named by its hash, written whole
    assert store.have({"code": code}) == {"have": True, "offset": 30}
    before = store.stats()["received_bytes"]
    assert upload(store, data) == [{"offset": 30, "stored": True}]  # stored: the data is not taken again
    assert store.stats()["received_bytes"] == before
    got = store.get({"code": code, "offset": 0, "worker_id": "w1"})
    assert got == {"data": data, "size": 30}
    assert store.stats()["fetched_by"] == {"w1": 30}
    # Kept across a restart; a partial upload is not.
    assert ShipStore(tmp_path / "db.ship").have({"code": code})["have"]


def test_an_upload_resumes_where_it_stands_and_a_wrong_hash_is_dropped(tmp_path):
    store = ShipStore(tmp_path / "db.ship")
    data = b"abcdefghij"
    code = "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.put({"code": code, "size": 10, "offset": 0, "data": data[:4]}) == {"offset": 4, "stored": False}
    assert store.have({"code": code}) == {"have": False, "offset": 4}  # a client resumes here
    assert store.put({"code": code, "size": 10, "offset": 0, "data": data[:4]}) == {"offset": 4, "stored": False}
    assert store.put({"code": code, "size": 10, "offset": 4, "data": data[4:]})["stored"]
    bad = "sha256:" + "0" * 64
    store.put({"code": bad, "size": 3, "offset": 0, "data": b"ab"})
    with pytest.raises(ShipError, match="the bytes received hash to sha256:"):
        store.put({"code": bad, "size": 3, "offset": 2, "data": b"c"})
    assert not store.have({"code": bad})["have"] and not (tmp_path / "db.ship" / ("0" * 64)).exists()


def test_a_bogus_first_chunk_reserves_nothing_and_uploads_at_once_are_capped(tmp_path, monkeypatch):
    store = ShipStore(tmp_path / "db.ship")
    for i in range(50):  # empty chunks announcing 10 MB each held a file and the size for 10 minutes
        with pytest.raises(ShipError, match="do not fit"):
            store.put({"code": "sha256:" + f"{i:064x}", "size": 10_000_000, "offset": 0, "data": b""})
    assert store.uploads == {}
    monkeypatch.setattr("dtf_bus.defaults.SHIP_UPLOADS_AT_ONCE", 2)
    for i in range(2):
        store.put({"code": "sha256:" + f"{i:064x}", "size": 4, "offset": 0, "data": b"ab"})
    with pytest.raises(ShipError, match="2 uploads are in progress already"):
        store.put({"code": "sha256:" + f"{9:064x}", "size": 4, "offset": 0, "data": b"ab"})


def test_the_store_is_bounded_evicting_idle_archives_and_refusing_when_all_are_in_use(tmp_path):
    store = ShipStore(tmp_path / "s", max_bytes=25, min_idle=3600)
    upload(store, b"a" * 10)
    upload(store, b"b" * 10)
    with pytest.raises(ShipError, match="the broker's code store is full: "):
        upload(store, b"c" * 10)  # both used within the hour: nothing may go
    oldest = hashlib.sha256(b"a" * 10).hexdigest()
    store.archives[oldest][1] -= 7200  # unused for two hours
    upload(store, b"c" * 10)
    assert oldest not in store.archives and store.stats()["evicted"] == 1 and store.stats()["archives"] == 2
    with pytest.raises(ShipError, match="is not stored on this broker"):
        store.get({"code": "sha256:" + oldest, "offset": 0})
    spec = {"name": "t", "params": {"ship": {"code": "sha256:" + oldest}}}
    assert "shipped code sha256:" in store.missing([spec]) and "upload it first" in store.missing([spec])


# ---------------------------------------------------------------- the worker's cache


def test_the_cache_builds_once_and_evicts_least_recently_used_entries_not_in_use(tmp_path):
    cache = Cache(tmp_path / "cache", max_bytes=250, min_idle=0)
    built: list[str] = []

    def build(size: int):
        def make(directory: Path) -> None:
            built.append(directory.name)
            directory.mkdir()
            (directory / "f").write_bytes(b"x" * size)

        return make

    with cache.use("a", build(100)) as (path_a, hit):
        assert not hit and (path_a / "f").exists()
    with cache.use("a", build(100)) as (_, hit):
        assert hit
    with cache.use("b", build(100)):
        pass
    os.utime(cache.entries / "b.json", (1, 1))  # b is now the least recently used
    with cache.use("c", build(100)):
        pass
    assert built == ["a", "b", "c"]
    assert sorted(name for name, _, _ in cache.listing()) == ["a", "c"] and not (cache.entries / "b").exists()
    # An entry in use is never evicted, even when it is the oldest.
    with cache.use("a", build(100)):
        os.utime(cache.entries / "a.json", (1, 1))
        with cache.use("d", build(100)):
            pass
        assert (cache.entries / "a" / "f").exists()
    assert sorted(name for name, _, _ in cache.listing()) == ["a", "d"]
    # Nothing used within min_idle goes (a pytest session may still idle in it): over the bound, kept.
    cache.min_idle = 3600
    with cache.use("e", build(100)):
        pass
    assert sorted(name for name, _, _ in cache.listing()) == ["a", "d", "e"]


def test_a_failed_build_leaves_nothing_and_a_second_task_waits_for_the_first(tmp_path):
    cache = Cache(tmp_path / "cache")

    def broken(directory: Path) -> None:
        directory.mkdir()
        raise ShipError("no")

    with pytest.raises(ShipError), cache.use("x", broken):
        pass
    assert not cache.ready("x") and not cache.path("x").exists()
    started, release, builds = threading.Event(), threading.Event(), []

    def slow(directory: Path) -> None:
        builds.append(1)
        started.set()
        release.wait(10)
        directory.mkdir()

    hits = []

    def task():
        with cache.use("v", slow) as (_, hit):
            hits.append(hit)

    first = threading.Thread(target=task)
    first.start()
    started.wait(10)
    second = threading.Thread(target=task)
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert builds == [1] and sorted(hits) == [False, True]  # built once; the other found it ready


# ---------------------------------------------------------------- resumable fetch bookkeeping


def test_a_download_asks_for_each_chunk_once_and_resumes_from_disk_after_a_lost_connection(tmp_path):
    source = bytes(range(256)) * 4  # 1024 bytes, chunks of 100
    part = tmp_path / "x.part"
    asked: list[int] = []
    download = Download(part, chunk=100)
    assert download.wanted(4) == [0]  # the size is unknown until the first answer
    download.in_flight.add(0)
    asked.append(0)
    assert download.received(0, source[:100], len(source))
    lost_after = 3
    while not download.done:
        offsets = download.wanted(4)
        assert len(download.in_flight) + len(offsets) <= 4
        download.in_flight.update(offsets)
        asked += offsets
        for offset in offsets:
            if lost_after == 0:  # the connection drops: these requests are never answered
                download.lost_connection()
                lost_after = -1
                break
            lost_after -= 1
            download.received(offset, source[offset : offset + 100], len(source))
    assert part.read_bytes() == source and download.sha.hexdigest() == hashlib.sha256(source).hexdigest()
    assert sorted(set(asked)) == list(range(0, 1024, 100))
    written = [o for o in asked if asked.count(o) > 1]
    assert written and all(o >= 400 for o in written)  # only what was in flight is asked again
    # A new download of the same file (a worker restarted mid-fetch) starts from what is on disk.
    part.write_bytes(source[:500])
    resumed = Download(part, chunk=100)
    assert resumed.offset == 500 and resumed.wanted(4) == [500]
    assert resumed.received(500, source[500:600], len(source)) and resumed.wanted(2) == [600, 700]
    assert resumed.sha.hexdigest() == hashlib.sha256(source[:600]).hexdigest()


def test_a_download_ignores_stale_answers_and_refuses_a_changing_size(tmp_path):
    download = Download(tmp_path / "p", chunk=4)
    assert not download.received(4, b"late", 8)  # not the next chunk: dropped
    assert download.received(0, b"abcd", 8) and download.offset == 4
    with pytest.raises(ShipError, match="changed size"):
        download.received(4, b"efgh", 9)


# ---------------------------------------------------------------- params in the tree


def test_params_are_placed_in_the_unpacked_tree():
    tree, root, venv = "/cache/tree-1", "/home/me/proj", "/cache/venv-2"
    params = {"ship": {}, "cmd": "make", "cwd": "sub", "env": {"A": "1"}}
    assert ship.shipped_params("shell", params, tree, root, None) == {
        "cmd": "make",
        "cwd": "/cache/tree-1/sub",
        "env": {"A": "1"},
    }
    assert ship.shipped_params("shell", {"cmd": "x"}, tree, root, venv)["cwd"] == tree  # default: the tree
    assert "cwd" not in ship.shipped_params("cpu", {"ship": {}, "size": 3}, tree, root, None)  # kwargs stay as sent
    session = {"rootdir": "/home/me/proj/tests", "args": ["/home/me/proj/tests/a.py"], "session": "s"}
    placed = ship.shipped_params("pytest-session", session, tree, root, venv)
    assert placed["rootdir"] == "/cache/tree-1/tests" and placed["python"] == "/cache/venv-2/bin/python"
    assert ship.shipped_params(
        "python", {"python": "/usr/bin/python3", "path": ["lib", "/opt/x"]}, tree, root, venv
    ) == {
        "python": "/usr/bin/python3",  # named by the task: kept (outside the project)
        "path": ["/cache/tree-1/lib", "/opt/x"],
        "cwd": tree,
    }
    assert ship.shipped_params("shell", {"cwd": "/home/me/proj"}, tree, root, None)["cwd"] == tree
    assert ship.shipped_params("shell", {"cwd": "/home/me/project2"}, tree, root, None)["cwd"] == "/home/me/project2"
