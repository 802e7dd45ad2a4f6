"""`python -m simboard up | down | power on | power off | status` (run from hil-tests/, as root).

`up` builds the network and the board's files, `down` removes everything;
`power on` starts the board process in the background (console and agent),
`power off` stops it. labgrid's ExternalPowerDriver calls the power commands.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaxelbox.site import demo_site_text

from simboard import topology
from simboard.topology import RUN_DIR

PID_FILE = RUN_DIR / "board.pid"


def up() -> None:
    down()
    RUN_DIR.mkdir(mode=0o700, parents=True)
    for sub in ("data", "log", "leds"):
        (RUN_DIR / sub).mkdir()
    (RUN_DIR / "site.toml").write_text(demo_site_text())
    topology.create()


def down() -> None:
    power_off()
    topology.destroy()
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def power_on() -> None:
    if board_pid() is not None:
        return
    log = (RUN_DIR / "board.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "simboard.board"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PID_FILE.write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while not (RUN_DIR / "console").exists():  # powered once the console is there
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the simulated board did not come up; see {RUN_DIR / 'board.log'}")
        time.sleep(0.05)


def power_off() -> None:
    pid = board_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while board_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if board_pid() is not None:
        os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)


def board_pid() -> int | None:
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


def main(argv: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("the simulated board needs root (network namespaces)")
    match argv:
        case ["up"]:
            up()
        case ["down"]:
            down()
        case ["power", "on"]:
            power_on()
        case ["power", "off"]:
            power_off()
        case ["status"]:
            print(f"namespaces: {topology.existing()}, board: {'on' if board_pid() else 'off'}")
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
