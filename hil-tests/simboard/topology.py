"""The simulated board's network: three namespaces and two links, documentation addresses only.

lan (phones)  eth0 192.0.2.10/24  ---  lan0 192.0.2.1/24   edge (the board)
cloud (PBX)   eth0 198.51.100.1/24 --- wan0 198.51.100.2/24 edge
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = Path("/run/vaxelbox-simboard")


@dataclass(frozen=True)
class Link:
    board_side: str  # interface in `edge`
    far_namespace: str
    far_side: str
    board_address: str
    far_address: str


LAN = Link("lan0", "lan", "eth0", "192.0.2.1", "192.0.2.10")
WAN = Link("wan0", "cloud", "eth0", "198.51.100.2", "198.51.100.1")
BOARD_NAMESPACE = "edge"
NAMESPACES = (BOARD_NAMESPACE, LAN.far_namespace, WAN.far_namespace)
PHONE_ADDRESSES = [f"192.0.2.{host}" for host in range(10, 20)]  # several phones in `lan`


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def existing() -> list[str]:
    listed = ip("netns", "list").stdout.split()
    return [name for name in NAMESPACES if name in listed]


def create() -> None:
    """Build the topology; leftovers of an earlier run are removed first."""
    destroy()
    for name in NAMESPACES:
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
    for link in (LAN, WAN):
        ip("link", "add", link.board_side, "netns", BOARD_NAMESPACE, "type", "veth",
           "peer", "name", link.far_side, "netns", link.far_namespace)  # fmt: skip
        ip("-n", BOARD_NAMESPACE, "addr", "add", f"{link.board_address}/24", "dev", link.board_side)
        ip("-n", link.far_namespace, "addr", "add", f"{link.far_address}/24", "dev", link.far_side)
        ip("-n", BOARD_NAMESPACE, "link", "set", link.board_side, "up", "multicast", "on")
        ip("-n", link.far_namespace, "link", "set", link.far_side, "up", "multicast", "on")
    for address in PHONE_ADDRESSES[1:]:
        ip("-n", LAN.far_namespace, "addr", "add", f"{address}/24", "dev", LAN.far_side)
    for name, dev in ((BOARD_NAMESPACE, LAN.board_side), (LAN.far_namespace, LAN.far_side)):
        ip("-n", name, "route", "add", "224.0.0.0/4", "dev", dev)  # multicast (mDNS, SIP PnP) on the LAN


def destroy() -> None:
    for name in existing():
        ip("netns", "delete", name, check=False)


def cut_wan() -> None:
    """Pull the WAN cable, on the far side: the board sees its link stay up and the cloud go quiet."""
    ip("-n", WAN.far_namespace, "link", "set", WAN.far_side, "down")


def restore_wan() -> None:
    ip("-n", WAN.far_namespace, "link", "set", WAN.far_side, "up")


def in_namespace(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]
