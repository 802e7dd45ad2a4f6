"""`python -m simboard up | down | power on | power off | status` (run from hil-tests/, as root).

`up` builds the network and the board's files and starts the peripherals that outlive the
board's power (the companion microcontroller and the watchdog stand-in, simboard.peripherals);
`down` removes everything. `power on` switches the lab's power on, and the board process starts
in the background (console and agent) when the companion's load switch is on too (simboard.power);
`power off` stops it. labgrid's ExternalPowerDriver calls the power commands; the companion calls
`companion-power on|off` when its power pin changes.
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

from simboard import power, slots, topology
from simboard.topology import RUN_DIR

PERIPHERALS_PID = RUN_DIR / "peripherals.pid"
PERIPHERALS_WITHIN = 40.0  # s for the companion (MicroPython in Node) and the watchdog to be there


def up() -> None:
    down()
    RUN_DIR.mkdir(mode=0o700, parents=True)
    for sub in ("data", "log", "leds"):
        (RUN_DIR / sub).mkdir()
    (RUN_DIR / "site.toml").write_text(demo_site_text())
    slots.install_first()
    power.SWITCHES["lab"].write_text("off")
    topology.create()
    start_peripherals()


def down() -> None:
    power_off()
    stop_peripherals()
    topology.destroy()
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def start_peripherals() -> None:
    """The companion and the watchdog stand-in (simboard.peripherals), running before `up` returns."""
    log = (RUN_DIR / "peripherals.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "simboard.peripherals"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PERIPHERALS_PID.write_text(str(process.pid))
    deadline = time.monotonic() + PERIPHERALS_WITHIN
    while not (RUN_DIR / "peripherals.ready").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the simulated board's companion did not start; see {log.name}")
        time.sleep(0.1)


def stop_peripherals() -> None:
    try:
        pid = int(PERIPHERALS_PID.read_text())
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def power_on() -> None:
    power.set_switch("lab", True)


def power_off() -> None:
    if RUN_DIR.exists():
        power.set_switch("lab", False)


def board_pid() -> int | None:
    return power.board_pid()


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
        case ["companion-power", ("on" | "off") as state]:  # the simulated companion's power pin
            if RUN_DIR.exists():
                power.set_switch("companion", state == "on")
        case ["status"]:
            print(f"namespaces: {topology.existing()}, board: {'on' if board_pid() else 'off'}")
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
