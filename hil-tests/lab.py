"""The board's surroundings, as the suites use them: where phones and the installer's laptop sit
(the LAN), where the cloud PBX is, how to cut the WAN, where the logs are.

The simulated board's lab is built here (namespaces `lan` and `cloud`,
Kamailio in `cloud`) and torn down afterwards, even when a test fails. A real
board's lab is described by environment variables: HIL_LAN_HOST (this host's
address on the board's LAN), HIL_BOARD_LAN (the board's), and for the relay
and WAN suites HIL_CLOUD (host:port of a Kamailio the board reaches) and
HIL_WAN_CUT / HIL_WAN_RESTORE (shell commands that pull and replug the WAN); for the companion
suite HIL_LEDS (prints its LEDs) and HIL_BUTTON_DOWN / HIL_BUTTON_UP (press, release its button).
The simulated board's companion is read and pressed through its files (simboard.peripherals).

`lab_problems` checks all of that once, before anything runs, so a lab that
is not ready gets one message naming every missing piece.
"""

import datetime
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from simboard import topology
from simboard.topology import LAN, PHONE_ADDRESSES, RUN_DIR, WAN
from vaxelbox.hw.board import Board, BoardError, load_board

ROOT = Path(__file__).resolve().parents[1]
SIMULATED = "simboard"  # the board the suite builds itself
# Every real lab needs these; suites ask for more with @pytest.mark.lab_needs("HIL_...").
ALWAYS_NEEDED = ("HIL_LAN_HOST", "HIL_BOARD_LAN")
# What the variables are, for the message of a lab that is not ready; a pair set together shares a line.
VARIABLES: dict[tuple[str, ...], str] = {
    ("HIL_LAN_HOST",): "this machine's address on the board's LAN, e.g. HIL_LAN_HOST=192.168.50.10",
    ("HIL_BOARD_LAN",): "the board's LAN address, e.g. HIL_BOARD_LAN=192.168.50.2",
    ("HIL_CLOUD",): "a Kamailio the board's site points at, e.g. HIL_CLOUD=192.168.60.5:5060",
    ("HIL_WAN_CUT", "HIL_WAN_RESTORE"): "shell commands that pull and replug the board's WAN "
    "(e.g. a managed switch's port down, up)",
    ("HIL_LEDS",): "a shell command that prints the companion's LEDs as green=1 amber=0 blue=0 red=0 "
    "(e.g. a GPIO board reading the LED lines)",
    ("HIL_BUTTON_DOWN", "HIL_BUTTON_UP"): "shell commands that press and release the companion's "
    "button (e.g. a relay across it)",
}
LEDS = ("green", "amber", "blue", "red")  # the companion's, as its pins are named
CONSOLE_CONNECT_TIMEOUT = 3.0  # seconds, for a serial server (HIL_CONSOLE)


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
    companion_dir: Path | None = None  # the simulated companion's pins (simboard.peripherals)
    leds_command: list[str] = field(default_factory=list)
    button_down: list[str] = field(default_factory=list)
    button_up: list[str] = field(default_factory=list)

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

    def leds(self) -> dict[str, int]:
        """The companion's LEDs now, 0 or 1 each (LEDS): the simulated companion's last output
        levels, or what HIL_LEDS prints. Raises AssertionError when this lab cannot see them."""
        if self.companion_dir is not None:
            levels = dict.fromkeys(LEDS, 0)
            for line in (self.companion_dir / "events").read_text().splitlines():
                _at, name, level = line.split()
                if name in levels:
                    levels[name] = int(level)
            return levels
        if not self.leds_command:
            raise AssertionError("this lab cannot see the companion's LEDs: set HIL_LEDS (a shell command)")
        printed = subprocess.run(self.leds_command, check=True, capture_output=True, text=True, timeout=10)
        levels = dict(item.split("=", 1) for item in printed.stdout.split())
        return {name: int(levels[name]) for name in LEDS}

    def press_button(self, seconds: float) -> None:
        """Hold the companion's button down for `seconds`."""
        with self.button_held():
            time.sleep(seconds)

    @contextmanager
    def button_held(self) -> Iterator[None]:
        """The companion's button is down inside the block, up again after it (whatever happens)."""
        if self.companion_dir is not None:
            (self.companion_dir / "button").touch()
            try:
                yield
            finally:
                (self.companion_dir / "button").unlink()
            return
        self._command(self.button_down, "HIL_BUTTON_DOWN")
        try:
            yield
        finally:
            self._command(self.button_up, "HIL_BUTTON_UP")

    def companion_noise(self, data: bytes) -> bool:
        """Make the companion's line to the board carry `data` (line noise) once; False where this
        lab cannot (a real companion's UART is not ours to write to)."""
        if self.companion_dir is None:
            return False
        (self.companion_dir / "noise").write_bytes(data)
        return True

    def companion_power_events(self) -> list[tuple[float, int]] | None:
        """(epoch seconds, level) of each change of the companion's power pin; None where this lab
        cannot see it (a real board: its console shows the boot instead)."""
        if self.companion_dir is None:
            return None
        found = []
        for line in (self.companion_dir / "events").read_text().splitlines():
            at, name, level = line.split()
            if name == "power":
                found.append((int(at) / 1000, int(level)))
        return found

    def watchdog_pets(self) -> int | None:
        """How often the board has petted its watchdog; None where this lab cannot count (a real
        board's watchdog is in its SoC). The simulated board's stand-in counts them."""
        if self.companion_dir is None:
            return None
        return int(json.loads((RUN_DIR / "watchdog.json").read_text())["pets"])

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

    def agent_events(self, shell: Any, name: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The agent's log events called `name`, logged at or after `since` (epoch seconds), oldest
        first; each with "at", the board's timestamp in epoch seconds. Lines that are not JSON (a
        journal's prefix is skipped) are left out."""
        found = []
        for line in self.agent_log(shell).splitlines():
            if f'"{name}"' not in line:
                continue
            try:
                event = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            if event.get("event") != name or "timestamp" not in event:
                continue
            at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                found.append({**event, "at": at})
        return found

    def forget_registrations(self) -> bool:
        """Make the cloud forget every registration, as a cloud PBX that restarted does: the simulated
        cloud restarts. False where this lab cannot (a real lab's cloud is not ours to restart)."""
        if self.kamailio is None:
            return False
        self.kamailio.stop()
        self.kamailio.start()
        return True

    def cloud_user_agents(self) -> dict[str, list[str]] | None:
        """AoR user part -> the User-Agent of each contact the cloud holds, from Kamailio's own
        location table (kamcmd ul.dump); None where this lab cannot look (a real lab's cloud)."""
        if self.kamailio is None:
            return None
        from peers import tool

        socket_path = self.kamailio.workdir / "kamailio_ctl"
        dump = subprocess.run(
            [tool("kamcmd"), "-s", f"unix:{socket_path}", "ul.dump"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return {
            block.split()[0].split("@")[0]: re.findall(r"User-Agent: (.*)", block)
            for block in dump.split("AoR: ")[1:]
        }

    def cloud_subscriptions(self, resource: str) -> set[str] | None:
        """The Call-IDs of the Event: dialog subscriptions to `resource` (a SIP URI) that the cloud's
        presence server holds now (its active_watchers, unexpired); None where this lab cannot look
        (a real lab's cloud). Raises RuntimeError when the cloud cannot answer the query."""
        if self.kamailio is None:
            return None
        output = self.kamailio.rpc(
            "db_text.query", "select callid,presentity_uri,event,expires from active_watchers"
        )
        if "returned 0 rows" in output:
            return set()
        if not output.startswith("callid("):
            raise RuntimeError(f"kamcmd db_text.query: {output.strip()}")
        held = set()
        for line in output.splitlines()[1:]:
            row = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", line.strip())]
            if len(row) == 4 and row[1:3] == [resource, "dialog"] and int(row[3]) > time.time():
                held.add(row[0])
        return held

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
        # A presence server too (Event: dialog), so the board's upstream subscriptions work there.
        kamailio = Kamailio(WAN.far_address, 5060, workdir, netns=WAN.far_namespace, presence=True).start()
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
            companion_dir=RUN_DIR / "companion",
        )
    finally:
        if kamailio is not None:
            kamailio.stop()
        subprocess.run([*simboard, "down"], check=False)


def real_lab(board: Board) -> Lab:
    """A real board's lab from the HIL_* variables (`lab_problems` has checked them)."""
    cloud = os.environ.get("HIL_CLOUD")
    host, _, port = cloud.partition(":") if cloud else ("", "", "")
    return Lab(
        board_lan=os.environ["HIL_BOARD_LAN"],
        phone_addresses=[os.environ["HIL_LAN_HOST"]],
        lan_namespace=None,
        cloud=(host, int(port or 5060)) if cloud else None,
        log_file=None,
        console_file=None,
        wan_cut=_shell_command("HIL_WAN_CUT"),
        wan_restore=_shell_command("HIL_WAN_RESTORE"),
        leds_command=_shell_command("HIL_LEDS"),
        button_down=_shell_command("HIL_BUTTON_DOWN"),
        button_up=_shell_command("HIL_BUTTON_UP"),
    )


def _shell_command(name: str) -> list[str]:
    """The argv that runs variable `name`'s shell command, or [] when it is not set."""
    value = os.environ.get(name, "").strip()
    return ["sh", "-c", value] if value else []


def lab_problems(
    board_file: Path, needs: dict[str, list[str]], environ: dict[str, str], stdin_is_terminal: bool
) -> list[str]:
    """Everything that stops the suite from running against this board, one line each ([] = ready).

    `needs` maps each HIL_* variable the selected suites ask for to those suites' names. The lab is
    never touched beyond reading files and opening a TCP connection to a serial server.
    """
    try:
        board = load_board(board_file)
    except BoardError as exc:
        return [f"board file {exc}"]
    if board.name == SIMULATED:  # the suite builds its lab; only namespaces need root
        return [] if os.geteuid() == 0 else ["the simulated board needs root (network namespaces)"]
    problems = _variable_problems({**{name: [] for name in ALWAYS_NEEDED}, **needs}, environ)
    problems += _console_problems(board, environ)
    if board.power.kind == "manual" and not stdin_is_terminal:
        problems.append(
            f"power: {board.name} has manual power, so a person switches it when the suite asks, but "
            "stdin is not a terminal (CI?); run make hil from a terminal, or give the board file "
            "power commands (power: {kind: command, on: ..., off: ...})"
        )
    return problems


def _variable_problems(needs: dict[str, list[str]], environ: dict[str, str]) -> list[str]:
    groups = [group for group in VARIABLES if any(name in needs for name in group)]
    groups += [(name,) for name in needs if not any(name in group for group in VARIABLES)]
    problems = []
    for group in groups:
        wanted = [name for name in group if name in needs]
        missing = [name for name in wanted if not environ.get(name, "").strip()]
        suites = sorted({suite for name in wanted for suite in needs[name]})
        if missing:
            why = f", needed by {' and '.join(suites)}" if suites else ""
            verb = "is" if len(missing) == 1 else "are"
            meaning = VARIABLES.get(group, "see the README")
            problems.append(f"{' and '.join(missing)} {verb} not set{why}: {meaning}")
        for name in wanted:
            value = environ.get(name, "").strip()
            if value and (bad := _bad_value(name, value)) is not None:
                problems.append(f"{name}={value}: {bad}")
    return problems


def _bad_value(name: str, value: str) -> str | None:
    """Why a set variable cannot be right, or None."""
    if name == "HIL_LAN_HOST":
        family = socket.AF_INET6 if ":" in value else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((value, 0))  # phones and the laptop are played from this address
        except (OSError, UnicodeError) as exc:
            return f"not an address of this machine ({exc.strerror or exc})"
    if name == "HIL_BOARD_LAN" and not _is_address(value):
        return "not an IP address"
    if name == "HIL_CLOUD":
        host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
        if not host or (port and not port.isdigit()):
            return "want host or host:port, e.g. 192.168.60.5:5060"
    return None


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _console_problems(board: Board, environ: dict[str, str]) -> list[str]:
    """The console must be there before the board is powered: an adapter or a serial server."""
    served = environ.get("HIL_CONSOLE", "").strip()
    if served:
        url = urlparse(served)
        if url.scheme != "rfc2217" or not url.hostname or not url.port:
            return [f"HIL_CONSOLE={served}: want rfc2217://HOST:PORT (a serial server such as ser2net)"]
        try:
            socket.create_connection((url.hostname, url.port), timeout=CONSOLE_CONNECT_TIMEOUT).close()
        except OSError as exc:
            return [f"HIL_CONSOLE={served}: the serial server does not answer ({exc.strerror or exc})"]
        return []
    device = board.console.device
    adapter = "plug in the board's USB-serial adapter, or set HIL_CONSOLE=rfc2217://HOST:PORT"
    try:
        mode = os.stat(device).st_mode
    except OSError:
        return [f"console {device} does not exist: {adapter}"]
    if not stat.S_ISCHR(mode):
        return [f"console {device} is not a serial device: {adapter}"]
    if not os.access(device, os.R_OK | os.W_OK):
        return [f"console {device} is not readable and writable by this user (add it to group dialout)"]
    return []


__all__ = ["Lab", "lab_problems", "real_lab", "simulated_lab", "topology"]
