"""A lab of network namespaces: one per host, each with its own address on a bridge the lab makes.

Every name carries this process's pid and a counter, so parallel runs never collide; every link,
bridge and namespace made is removed by :meth:`NetLab.close`, which the fixture calls even when
the test fails. Addresses come from 198.18.0.0/15, the range set aside for network tests
(RFC 2544); the lab picks a /24 no interface on this machine uses.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field

_counter = itertools.count()


class NetLabError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetLabError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"dtfprobe{os.getpid()}"
    try:
        done = ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the ip command (iproute2) is not installed"
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    made = ip("link", "add", f"dtfpb{os.getpid()}", "type", "bridge", check=False)
    if made.returncode != 0:
        return f"cannot create a bridge: {made.stderr.strip()}"
    ip("link", "del", f"dtfpb{os.getpid()}", check=False)
    return None


def _free_subnet() -> str:
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
    start = os.getpid() % 256
    for i in range(256):
        third = (start + i) % 256
        if f"198.18.{third}." not in used:
            return f"198.18.{third}"
    raise NetLabError("no free /24 in 198.18.0.0/16")


@dataclass
class NetLab:
    tag: str = field(default_factory=lambda: f"{os.getpid()}{next(_counter)}")
    subnet: str = ""
    hosts: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (netns, bridge-side veth, address)
    bridge: str = ""

    def start(self, names: list[str]) -> NetLab:
        self.subnet = _free_subnet()
        self.bridge = f"dbr{self.tag}"
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        # The test itself (the root namespace) is one more host on the bridge, at .254.
        ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        for number, name in enumerate(names, start=1):
            self.add_host(name, number)
        return self

    def add_host(self, name: str, number: int) -> None:
        netns, outside, inside = f"dtf{self.tag}-{name}", f"dv{self.tag}{number}", f"dp{self.tag}{number}"
        address = f"{self.subnet}.{number}"
        self.hosts[name] = (netns, outside, address)
        ip("netns", "add", netns)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", netns)
        ip("link", "set", outside, "master", self.bridge, "up")
        ip("-n", netns, "link", "set", inside, "name", "eth0")
        ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")

    def address(self, name: str) -> str:
        return self.hosts[name][2]

    def prefix(self, name: str) -> list[str]:
        """argv prefix that runs a command on host ``name`` (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.hosts[name][0]]

    def link(self, name: str, up: bool) -> None:
        """Cut or restore the host's cable: its bridge port goes down, its eth0 loses carrier."""
        ip("link", "set", self.hosts[name][1], "up" if up else "down")

    def close(self) -> None:
        """Remove everything made; the processes inside must be stopped first (by pid)."""
        errors = []
        for netns, outside, _ in self.hosts.values():
            for args in (("link", "del", outside), ("netns", "del", netns)):
                done = ip(*args, check=False)
                if done.returncode != 0 and "Cannot find" not in done.stderr and "No such" not in done.stderr:
                    errors.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
        if self.bridge:
            ip("link", "del", self.bridge, check=False)
        self.hosts.clear()
        if errors:
            raise NetLabError("; ".join(errors))

    def leftovers(self) -> list[str]:
        """Links and namespaces of this lab still on the machine (empty after close)."""
        links = ip("-o", "link", "show").stdout
        spaces = ip("netns", "list").stdout
        return [line for line in (links + spaces).splitlines() if self.tag in line]
