"""Shipping a project to a worker: a generated tree of --mb megabytes, beside a plain copy.

Each round changes one file (new code: a new hash) and times, on a real broker and worker:
``ship`` (pack into a tar and hash it, ask the broker, upload in chunks) and then a no-op shell
task's whole submit-to-result, whose worker fetches the archive by hash, verifies it and unpacks
it. The baseline is ``shutil.copytree`` of the same tree on the same disk, what a shared
filesystem or a manual checkout would at best cost. Then the same code is submitted again: the
broker has it and the worker has it unpacked, so only packing (to learn the hash) and one round
trip remain; the broker's counters prove nothing was sent. Rounds alternate with the baseline;
medians are reported.

    python bench/ship.py [--mb 50] [--files 500] [--rounds 3] [--json]
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import benchlib

from dtf_bus.ship import client as ship_client


def make_tree(root: Path, megabytes: float, files: int, seed: int = 1) -> int:
    """Source-like text and some binary data, in nested directories; returns the bytes written."""
    rng = random.Random(seed)
    size = max(int(megabytes * 1e6 / files), 1)
    total = 0
    words = [f"name_{i}" for i in range(500)]
    for index in range(files):
        path = root / f"pkg{index % 10}" / f"sub{index % 7}" / f"file{index}.{'py' if index % 4 else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if index % 4:
            line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
            data = (line * (size // len(line) + 1))[:size].encode()
        else:
            data = rng.randbytes(size)
        path.write_bytes(data)
        total += len(data)
    return total


def one_round(cluster, tree: Path, tag: int) -> dict[str, float]:
    (tree / "changed.py").write_text(f"ROUND = {tag}\n")  # new code every round: a new hash
    task = {"name": "noop", "plugin": "shell", "params": {"cmd": "test -f changed.py"}, "retries": 0}
    with cluster.client(timeout=60) as client:
        started = time.monotonic()
        shipped = ship_client.ship_directory(client, tree)
        job = client.submit([{**task, "params": {**task["params"], "ship": shipped.params}}])
        status = client.wait(job, timeout=300)
        first = time.monotonic() - started
        assert status["succeeded"] == 1, client.results(job)
        info = client.results(job)[0]["result"]["ship"]
        before = client.ping()["ship"]
        started = time.monotonic()
        again = ship_client.ship_directory(client, tree)
        job = client.submit([{**task, "params": {**task["params"], "ship": again.params}}])
        assert client.wait(job, timeout=300)["succeeded"] == 1
        cached = time.monotonic() - started
        after = client.ping()["ship"]
        cached_info = client.results(job)[0]["result"]["ship"]
    assert again.sent_bytes == 0 and cached_info["cached"] and cached_info["fetched_bytes"] == 0
    assert after["received_bytes"] == before["received_bytes"] and after["sent_bytes"] == before["sent_bytes"]
    return {
        "first_submit_s": first,
        "pack_s": shipped.pack_s,
        "upload_s": shipped.upload_s,
        "fetch_s": info["fetch_s"],
        "unpack_s": info["unpack_s"],
        "cached_submit_s": cached,
        "cached_pack_s": again.pack_s,
        "archive_bytes": shipped.packed.size,
        "sent_bytes": shipped.sent_bytes,
        "fetched_bytes": info["fetched_bytes"],
    }


def copy_round(tree: Path, scratch: Path, tag: int) -> float:
    target = scratch / f"copy{tag}"
    started = time.monotonic()
    shutil.copytree(tree, target, symlinks=True)
    elapsed = time.monotonic() - started
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=50.0, help="size of the generated tree (default 50)")
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--rounds", type=int, default=benchlib.DEFAULT_ROUNDS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dtf-bench-ship-") as tmp:
        tree, scratch = Path(tmp) / "project", Path(tmp) / "scratch"
        scratch.mkdir()
        written = make_tree(tree, args.mb, args.files)
        with benchlib.cluster() as cluster:
            cluster.start_broker()
            cluster.start_worker("w1", extra_args=["--ship-cache", os.path.join(tmp, "cache")])
            cluster.wait_for_workers(["w1"])
            rounds, copies = [], []
            for tag in range(args.rounds):  # interleaved: dtf, then the baseline
                rounds.append(one_round(cluster, tree, tag))
                copies.append(copy_round(tree, scratch, tag))
    med = {key: benchlib.median([r[key] for r in rounds]) for key in rounds[0]}
    copy_s = benchlib.median(copies)
    summary = {
        "bench": "ship",
        "tree_mb": round(written / 1e6, 1),
        "files": args.files + 1,
        "rounds": args.rounds,
        "copytree_s": round(copy_s, 4),
        "first_submit_s": round(med["first_submit_s"], 4),
        "pack_s": round(med["pack_s"], 4),
        "upload_s": round(med["upload_s"], 4),
        "fetch_s": round(med["fetch_s"], 4),
        "unpack_s": round(med["unpack_s"], 4),
        "cached_submit_s": round(med["cached_submit_s"], 4),
        "cached_pack_s": round(med["cached_pack_s"], 4),
        "first_vs_copytree": round(med["first_submit_s"] / copy_s, 2) if copy_s else 0.0,
        "upload_mb_per_s": round(med["sent_bytes"] / 1e6 / med["upload_s"], 1) if med["upload_s"] else 0.0,
        "fetch_mb_per_s": round(med["fetched_bytes"] / 1e6 / med["fetch_s"], 1) if med["fetch_s"] else 0.0,
        "archive_mb": round(med["archive_bytes"] / 1e6, 1),
        "cached_sent_bytes": 0,  # asserted each round: the second submit sends and fetches nothing
        "machine": benchlib.machine(),
    }
    rows = [
        ("tree", f"{summary['tree_mb']} MB, {summary['files']} files"),
        ("shutil.copytree", f"{copy_s:.3f} s"),
        ("first submit, end to end", f"{med['first_submit_s']:.3f} s"),
        ("  pack + hash", f"{med['pack_s']:.3f} s"),
        ("  upload", f"{med['upload_s']:.3f} s ({summary['upload_mb_per_s']} MB/s)"),
        ("  worker fetch + verify", f"{med['fetch_s']:.3f} s ({summary['fetch_mb_per_s']} MB/s)"),
        ("  worker unpack", f"{med['unpack_s']:.3f} s"),
        ("first submit / copytree", f"{summary['first_vs_copytree']}x"),
        ("same code again, end to end", f"{med['cached_submit_s']:.3f} s (0 bytes sent or fetched)"),
        ("  of which packing", f"{med['cached_pack_s']:.3f} s"),
    ]
    benchlib.emit("ship: a project to a worker", rows, summary, args.json)


if __name__ == "__main__":
    main()
