"""Network namespaces a test creates (as root) and always removes: a small LAN of its own.

Addresses come from the documentation ranges (RFC 5737), so nothing here can
reach a real network: the namespaces have no route out of themselves.
"""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Namespace:
    name: str
    interface: str
    address: str  # without prefix length

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


@contextmanager
def lan_pair(
    left: tuple[str, str], right: tuple[str, str], prefix: str = "192.0.2"
) -> Iterator[tuple[Namespace, Namespace]]:
    """Two namespaces joined by a veth pair on `prefix`.0/24, multicast routed on the link.
    `left`/`right` are (role, host number), e.g. ("edge", "1"), ("phone", "50")."""
    if os.geteuid() != 0:
        raise AssertionError("network namespace tests need root (run make test as root)")
    tag = f"{os.getpid() % 100000}"
    spaces = [
        Namespace(f"vx-{role}-{tag}", f"vx{role[:4]}{tag}"[:15], f"{prefix}.{host}")
        for role, host in (left, right)
    ]
    created: list[str] = []
    try:
        for space in spaces:
            ip("netns", "add", space.name)
            created.append(space.name)
        a, b = spaces
        ip(
            "link",
            "add",
            a.interface,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b.interface,
            "netns",
            b.name,
        )
        for space in spaces:
            run = ["netns", "exec", space.name, "ip"]
            ip(*run, "link", "set", "lo", "up")
            ip(*run, "addr", "add", f"{space.address}/24", "dev", space.interface)
            ip(*run, "link", "set", space.interface, "up", "multicast", "on")
            ip(*run, "route", "add", "224.0.0.0/4", "dev", space.interface)
        yield a, b
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
