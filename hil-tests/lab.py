"""The board's surroundings, as the suites use them: where phones and the installer's laptop sit
(the LAN), where the cloud PBX is, how to cut the WAN, where the logs are.

The simulated board's lab is built here (namespaces `lan` and `cloud`,
Kamailio in `cloud`) and torn down afterwards, even when a test fails. A real
board's lab is described by environment variables: HIL_LAN_HOST (this host's
address on the board's LAN), HIL_BOARD_LAN (the board's), and for the relay
and WAN suites HIL_CLOUD (host:port of a Kamailio the board reaches) and
HIL_WAN_CUT / HIL_WAN_RESTORE (shell commands that pull and replug the WAN).
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simboard import topology
from simboard.topology import LAN, PHONE_ADDRESSES, RUN_DIR, WAN
from vaxelbox.hw.board import Board

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Lab:
    board_lan: str  # the board's LAN address, as phones reach it
    phone_addresses: list[str]  # where phones (sipp, curl) and the laptop run
    lan_namespace: str | None  # None: on this host itself
    cloud: tuple[str, int] | None  # the cloud PBX the board relays to
    log_file: Path | None  # the agent log, when this host can read it directly
    console_file: Path | None
    wan_cut: list[str] = field(default_factory=list)
    wan_restore: list[str] = field(default_factory=list)
    kamailio: Any = None

    def on_lan(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.lan_namespace, *argv] if self.lan_namespace else list(argv)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.on_lan(*argv), capture_output=True, text=True, timeout=timeout)

    def vaxelctl(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        code = "from vaxelctl.cli import main; main()"
        return subprocess.run(
            self.on_lan(sys.executable, "-c", code, *args),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "200"},
        )

    def cut_wan(self) -> None:
        self._command(self.wan_cut, "HIL_WAN_CUT")

    def restore_wan(self) -> None:
        self._command(self.wan_restore, "HIL_WAN_RESTORE")

    def _command(self, argv: list[str], name: str) -> None:
        if not argv:
            raise AssertionError(f"this lab cannot do that: set {name} (a shell command)")
        subprocess.run(argv, check=True, capture_output=True)

    def console_tail(self, lines: int) -> str:
        if self.console_file and self.console_file.exists():
            text = self.console_file.read_bytes().decode(errors="replace").replace("\r", "")
            return "\n".join(text.splitlines()[-lines:])
        return "(console log: see labgrid's --lg-log directory)"

    def agent_log_tail(self, lines: int, shell: Any = None) -> str:
        if self.log_file and self.log_file.exists():
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        if shell is not None:
            output, _, _ = shell.run(f"journalctl -u vaxelbox -n {lines} --no-pager 2>/dev/null")
            return "\n".join(output)
        return "(agent log not reachable from here)"

    def agent_log(self, shell: Any) -> str:
        """The whole agent log, from the file or the board's journal."""
        if self.log_file and self.log_file.exists():
            return self.log_file.read_text(errors="replace")
        output, _, _ = shell.run(
            "journalctl -u vaxelbox --no-pager 2>/dev/null || cat /var/log/vaxelbox/*.log"
        )
        return "\n".join(output)


@contextmanager
def simulated_lab(workdir: Path) -> Iterator[Lab]:
    sys.path.insert(0, str(ROOT / "firmware" / "tests"))
    from peers import Kamailio

    simboard = [sys.executable, str(Path(__file__).with_name("simboard") / "__main__.py")]
    subprocess.run([*simboard, "up"], check=True)
    kamailio = None
    try:
        kamailio = Kamailio(WAN.far_address, 5060, workdir, netns=WAN.far_namespace).start()
        yield Lab(
            board_lan=LAN.board_address,
            phone_addresses=PHONE_ADDRESSES,
            lan_namespace=LAN.far_namespace,
            cloud=(WAN.far_address, 5060),
            log_file=RUN_DIR / "log" / "agent.log",
            console_file=RUN_DIR / "console.log",
            wan_cut=["ip", "-n", WAN.far_namespace, "link", "set", WAN.far_side, "down"],
            wan_restore=["ip", "-n", WAN.far_namespace, "link", "set", WAN.far_side, "up"],
            kamailio=kamailio,
        )
    finally:
        if kamailio is not None:
            kamailio.stop()
        subprocess.run([*simboard, "down"], check=False)


def real_lab(board: Board) -> Lab:
    missing = [name for name in ("HIL_LAN_HOST", "HIL_BOARD_LAN") if name not in os.environ]
    if missing:
        raise AssertionError(f"board {board.name}: describe its lab with {', '.join(missing)} (see README)")
    cloud = os.environ.get("HIL_CLOUD")
    host, _, port = cloud.partition(":") if cloud else ("", "", "")
    return Lab(
        board_lan=os.environ["HIL_BOARD_LAN"],
        phone_addresses=[os.environ["HIL_LAN_HOST"]],
        lan_namespace=None,
        cloud=(host, int(port or 5060)) if cloud else None,
        log_file=None,
        console_file=None,
        wan_cut=os.environ.get("HIL_WAN_CUT", "").split() and ["sh", "-c", os.environ["HIL_WAN_CUT"]],
        wan_restore=os.environ.get("HIL_WAN_RESTORE", "").split()
        and ["sh", "-c", os.environ["HIL_WAN_RESTORE"]],
    )


__all__ = ["Lab", "real_lab", "simulated_lab", "topology"]
