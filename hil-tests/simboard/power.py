"""The simulated board's power: the lab's switch and the companion's load switch, in series.

The board runs while both are on, as on a real board whose 5 V feed passes through the
companion's load switch: the lab's switch (`python -m simboard power on|off`, labgrid's power
driver) and the companion's power pin (`companion-power on|off`, run by the simulated companion
when the pin changes). Each is a file in RUN_DIR saying "on" or "off" (no file: on). Every change
is made under one lock, so the two switches and a watchdog reset never race.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simboard.topology import RUN_DIR

PID_FILE = RUN_DIR / "board.pid"
SWITCHES = {"lab": RUN_DIR / "power.lab", "companion": RUN_DIR / "power.companion"}
HIL = Path(__file__).resolve().parents[1]
CONSOLE_WITHIN = 10.0  # s for the board's console to appear once it has power
STOP_WITHIN = 15.0  # s for the board to stop (its agent stops cleanly) before it is killed


@contextmanager
def _locked() -> Iterator[None]:
    with (RUN_DIR / "power.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def switch_on(name: str) -> bool:
    """Whether switch `name` ("lab" or "companion") is on; a switch never set is on."""
    try:
        return SWITCHES[name].read_text().strip() != "off"
    except FileNotFoundError:
        return True


def set_switch(name: str, on: bool) -> None:
    """Turn switch `name` on or off; the board starts or stops when both switches say so.
    When the lab turns the power on, waits for the board's console, also through a power cycle the
    companion is making just then (SystemExit if it does not come within CONSOLE_WITHIN s)."""
    with _locked():
        SWITCHES[name].write_text("on" if on else "off")
        if all(switch_on(n) for n in SWITCHES):
            _start()
        else:
            _stop()
    if name == "lab" and on:
        _wait_for_console()


def reset() -> None:
    """A reset (the watchdog's): the board stops and starts again, if it has power now."""
    with _locked():
        if board_pid() is None:
            return
        _stop()
        _start()


def _start() -> None:
    if board_pid() is not None:
        return
    log = (RUN_DIR / "board.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "simboard.board"],
        cwd=HIL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PID_FILE.write_text(str(process.pid))


def _wait_for_console() -> None:
    deadline = time.monotonic() + CONSOLE_WITHIN
    while not (RUN_DIR / "console").exists():  # powered once the console is there
        if time.monotonic() > deadline:
            raise SystemExit(f"the simulated board did not come up; see {RUN_DIR / 'board.log'}")
        time.sleep(0.05)


def _stop() -> None:
    pid = board_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WITHIN
    while board_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if board_pid() is not None:
        os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)


def board_pid() -> int | None:
    """The running board process, or None when the board is off."""
    try:
        pid = int(PID_FILE.read_text())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split()[2] == "Z":
                os.waitpid(pid, os.WNOHANG)
                return None
        return pid
    except (OSError, ValueError, ChildProcessError):
        return None
