"""`make hil` against a real board's lab: checked once up front, and a person switches manual power.

Driven as support staff drive it: `make hil BOARD=...` as a subprocess, and
for manual power in a pty (pexpect) where the test plays the person at the
terminal, switching the simulated board (hil-tests/simboard) off and on when
asked. The simulated board's network is built and removed here (as root); a
run that finds it in use fails rather than tear down someone else's.
"""

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[2]
SIMBOARD = [sys.executable, str(ROOT / "hil-tests" / "simboard" / "__main__.py")]
SIM_RUN_DIR = Path("/run/vaxelbox-simboard")
SIM_NAMESPACES = ("edge", "lan", "cloud")
SHORT = 34  # lines: the whole output of a run that stops up front (it was 388 before); one per problem


def make_hil(board: Path | str, results: Path, *settings: str) -> list[str]:
    return ["make", "--no-print-directory", "hil", f"BOARD={board}", f"HIL_RESULTS={results}", *settings]


def environment(**lab: str) -> dict[str, str]:
    """This process's environment without any HIL_* (or an outer make's flags), plus `lab`."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("HIL_") and name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ADDOPTS")
    }
    return {**inherited, **lab}


def run_make(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """`argv` with stdin not a terminal (as in CI): exit status and output lines (stdout + stderr)."""
    done = subprocess.run(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


@pytest.fixture
def serial_server() -> Iterator[int]:
    """A TCP port on loopback that accepts connections, standing in for ser2net (never spoken to)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, not listening, so nobody else takes it)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_unconfigured_lab_gets_one_short_message(tmp_path, closed_port):
    status, lines = run_make(
        make_hil("boards/rpi-4b.yaml", tmp_path),
        environment(HIL_CONSOLE=f"rfc2217://127.0.0.1:{closed_port}"),
    )
    output = "\n".join(lines)
    assert status != 0, output
    assert len(lines) < SHORT, output
    assert output.count("is not ready") == 1, output
    for name in ("HIL_LAN_HOST", "HIL_BOARD_LAN", "HIL_CLOUD", "HIL_WAN_CUT", "HIL_WAN_RESTORE", "HIL_LEDS",
                 "HIL_BUTTON_DOWN", "HIL_BUTTON_UP"):  # fmt: skip
        assert output.count(f"{name} ") == 1, f"{name} should be named once:\n{output}"
    assert "the serial server does not answer" in output, output
    assert "a person switches it" in output, output
    assert "stdin is not a terminal" in output, output
    assert 'SUITES="1 2 3"' in output, output  # what this lab could run once the LAN is described
    assert "Traceback" not in output, output
    assert "AssertionError" not in output, output
    assert "is not ready" in (tmp_path / "report.md").read_text()
    shown = (ROOT / "README.md").read_text().split("## Prove a board works")[1]
    shown_lines = [line for line in shown.splitlines() if line.startswith("- HIL_")]
    assert len(shown_lines) == 6, shown_lines  # the README shows this run's message
    for line in shown_lines:
        assert line in lines, f"README shows {line!r}; the run said:\n{output}"


def test_manual_power_without_a_terminal_fails_once_up_front(tmp_path, serial_server):
    lab = environment(
        HIL_LAN_HOST="127.0.0.1",
        HIL_BOARD_LAN="127.0.0.2",
        HIL_CLOUD="127.0.0.3:5060",
        HIL_WAN_CUT="true",
        HIL_WAN_RESTORE="true",
        HIL_LEDS="echo green=1 amber=0 blue=0 red=0",
        HIL_BUTTON_DOWN="true",
        HIL_BUTTON_UP="true",
        HIL_CONSOLE=f"rfc2217://127.0.0.1:{serial_server}",
    )
    status, lines = run_make(make_hil("boards/rpi-4b.yaml", tmp_path), lab)
    output = "\n".join(lines)
    assert status != 0, output
    assert len(lines) < SHORT, output
    assert output.count("stdin is not a terminal") == 1, output
    assert "HIL_" not in output.split("is not ready", 1)[1].split("- power:")[0], (
        output
    )  # the lab itself is fine
    assert "Turn the target" not in output, output
    assert "reading from stdin" not in output, output


@pytest.fixture
def board_by_hand(tmp_path: Path) -> Iterator[Path]:
    """The simulated board, powered and with its console there, in a board file with manual power."""
    in_use = [name for name in SIM_NAMESPACES if name in subprocess.run(["ip", "netns", "list"],
              capture_output=True, text=True, check=True).stdout.split()]  # fmt: skip
    if SIM_RUN_DIR.exists() or in_use:
        raise AssertionError(
            f"the simulated board is in use ({SIM_RUN_DIR}, namespaces {in_use}): is make hil running?"
        )
    board = tmp_path / "by-hand.yaml"
    board.write_text(
        "name: simboard-by-hand\n"
        "description: the simulated board, power switched by a person\n"
        "arch: any\n"
        f"console: {{device: {SIM_RUN_DIR}/console, baud: 115200, board_tty: pts}}\n"
        "interfaces: {lan: lan0, wan: wan0}\n"
        f"storage: {{data_dir: {SIM_RUN_DIR}/data, log_dir: {SIM_RUN_DIR}/log}}\n"
        "power: {kind: manual}\n"
    )
    subprocess.run([*SIMBOARD, "up"], check=True)
    try:
        subprocess.run([*SIMBOARD, "power", "on"], check=True)
        yield board
    finally:
        subprocess.run([*SIMBOARD, "down"], check=True)


def at_the_terminal(board: Path, results: Path) -> pexpect.spawn:
    """`make hil` for suite 1 in a pty, as a person at a terminal starts it. HIL_LAN_HOST is any address
    of this host: suite 1 (console, login, NICs) never uses it; the board's LAN address is checked."""
    lab = environment(HIL_LAN_HOST="127.0.0.1", HIL_BOARD_LAN="192.0.2.1", PY_COLORS="0")
    argv = make_hil(board, results, "SUITES=1")
    person = pexpect.spawn(
        argv[0], argv[1:], cwd=ROOT, env=lab, encoding="utf-8", timeout=180, dimensions=(50, 200)
    )
    person.logfile_read = io.StringIO()  # everything the terminal showed
    return person


def finish(person: pexpect.spawn) -> str:
    """Wait for the run to end; what the terminal showed."""
    person.expect(pexpect.EOF, timeout=240)
    person.close()
    return person.logfile_read.getvalue()


def switch(person: pexpect.spawn, state: str, power: str | None) -> None:
    """Wait for the prompt to turn the board `state`, do it (power=None: forget to), press Enter."""
    person.expect(f"Turn the target main {state} and press enter")
    if power is not None:
        subprocess.run([*SIMBOARD, "power", power], check=True)
    person.send("\r")


def test_manual_power_prompts_reach_the_person_and_the_run_proceeds(board_by_hand, tmp_path):
    person = at_the_terminal(board_by_hand, tmp_path)
    switch(person, "OFF", "off")
    switch(person, "ON", "on")
    output = finish(person)
    assert person.exitstatus == 0, output
    assert "2 passed, 1 skipped" in output, output  # the watchdog: this board file has none
    assert "reading from stdin" not in output, output
    assert output.count("press enter") == 2, output  # asked once to switch off, once on
    assert "**PASS**" in (tmp_path / "report.md").read_text()


def test_a_board_that_never_comes_up_stops_the_run_after_one_error(board_by_hand, tmp_path):
    person = at_the_terminal(board_by_hand, tmp_path)
    switch(person, "OFF", "off")
    switch(person, "ON", None)  # the person presses Enter but the board stays off: no console
    output = finish(person)
    assert person.exitstatus != 0, output
    assert output.count("ERROR at setup") == 1, output
    assert "nothing else can run" in output, output
