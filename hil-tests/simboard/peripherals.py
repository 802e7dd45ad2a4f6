"""The simulated board's peripherals that outlive its power: the companion and the watchdog.

`python -m simboard.peripherals` (started by `simboard up`, stopped by `simboard down`) runs:

- the companion microcontroller: the real companion code (`make companion`'s file set for
  boards/simboard.yaml) under real MicroPython in Node (firmware/tests/mcu/sim.mjs), its UART a
  pty whose board end is RUN_DIR/companion-uart (the board file's companion.device). Its pins are
  files in RUN_DIR/companion (sim.mjs: `button`, `noise`, `events`); its power pin switches the
  board's power through `simboard companion-power on|off` (simboard.power).
- a stand-in for the board's watchdog device: RUN_DIR/watchdog is a pty's board end, a character
  device as /dev/watchdog is. The agent opens it and pets it as the kernel's (any byte pets, "V"
  disarms, as a magic close does); no pet for the board file's timeout and the board is reset.
  Pets and resets are counted in RUN_DIR/watchdog.json. A power cut disarms it, as it does a
  SoC's watchdog. The stand-in cannot take WDIOC_SETTIMEOUT (a pty), so the agent logs that the
  timeout was not set and pets every third of the board file's timeout anyway.
"""

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

from vaxelbox.hw.board import Board, load_board
from vaxelbox.hw.companion_build import lay_out

from simboard import power
from simboard.topology import RUN_DIR

ROOT = Path(__file__).resolve().parents[2]
BOARD_FILE = ROOT / "boards" / "simboard.yaml"
SIM = ROOT / "firmware" / "tests" / "mcu" / "sim.mjs"
COMPANION_DIR = RUN_DIR / "companion"
WATCHDOG_STATE = RUN_DIR / "watchdog.json"
BOOT_WITHIN = 30.0  # s for MicroPython (WebAssembly) to start the companion


def open_line(link: Path) -> tuple[int, int]:
    """A raw pty whose board end `link` points at: (master, slave). The slave stays open here, so
    the master never reads EIO while the board has it closed (powered off)."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # a UART (or a device node) neither echoes nor translates
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    return master, slave


def start_companion(board: Board) -> subprocess.Popen[bytes]:
    """The companion under MicroPython, booted (its `events` say so). Raises SystemExit if not."""
    assert board.companion is not None
    lay_out(board.companion, COMPANION_DIR)
    command = COMPANION_DIR / "power.cmd"  # sim.mjs runs it with on/off when the power pin changes
    main = Path(__file__).with_name("__main__.py")
    command.write_text(f'#!/bin/sh\nexec {sys.executable} {main} companion-power "$1"\n')
    command.chmod(0o755)
    master, _slave = open_line(Path(board.companion.device))
    os.set_blocking(master, False)
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is missing: make setup installs Debian's nodejs")
    process = subprocess.Popen(
        [node, str(SIM), "--dir", str(COMPANION_DIR), "--uart-fd", str(master)],
        pass_fds=[master],
        stdout=subprocess.DEVNULL,
        stderr=(RUN_DIR / "companion.log").open("ab"),
    )
    deadline = time.monotonic() + BOOT_WITHIN
    events = COMPANION_DIR / "events"
    while not events.exists() or "companion boot" not in events.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the simulated companion did not boot; see {RUN_DIR / 'companion.log'}")
        time.sleep(0.1)
    return process


class Watchdog:
    """The watchdog stand-in: armed by a pet, disarmed by "V" or a power cut."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.armed_for: int | None = None  # the board process (one power-on) that armed it
        self.last_pet = 0.0
        self.pets = 0
        self.resets = 0

    def feed(self, data: bytes) -> None:
        for byte in data:
            if byte == ord("V"):
                self.armed_for = None
            else:
                self.pets += 1
                self.armed_for, self.last_pet = power.board_pid(), time.monotonic()
        self.save()

    def check(self) -> None:
        """Reset the board if it armed the watchdog and stopped petting it."""
        if self.armed_for is None:
            return
        if power.board_pid() != self.armed_for:  # the board lost power since: the watchdog too
            self.armed_for = None
            return
        if time.monotonic() - self.last_pet > self.timeout:
            self.armed_for = None
            self.resets += 1
            self.save()
            power.reset()

    def save(self) -> None:
        WATCHDOG_STATE.write_text(json.dumps({"pets": self.pets, "resets": self.resets}))


def serve_watchdog(board: Board, companion: subprocess.Popen[bytes]) -> None:
    """Read the watchdog line for ever (until SIGTERM); the companion must stay alive."""
    assert board.watchdog is not None
    master, _slave = open_line(Path(board.watchdog.device))
    watchdog = Watchdog(board.watchdog.timeout)
    watchdog.save()
    while companion.poll() is None:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            watchdog.feed(os.read(master, 1024))
        watchdog.check()
    raise SystemExit(f"the simulated companion stopped; see {RUN_DIR / 'companion.log'}")


def main() -> None:
    board = load_board(BOARD_FILE)
    companion = start_companion(board)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    (RUN_DIR / "peripherals.ready").touch()
    try:
        serve_watchdog(board, companion)
    finally:
        companion.terminate()
        companion.wait(10)


if __name__ == "__main__":
    main()
