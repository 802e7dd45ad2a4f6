"""Suite 1, the board: console, login, versions, both NICs up with their addresses, the watchdog
device there and petted."""

import re
import time

import pytest
from simboard.topology import LAN, WAN


def test_console_login_and_versions(shell):
    lines, _, code = shell.run("uname -r && vaxelbox --version")
    assert code == 0, lines
    assert re.fullmatch(r"\d+\.\d+\S*", lines[0]), lines
    assert lines[1].startswith("vaxelbox "), lines


def test_both_interfaces_up_with_addresses(shell, board, lab):
    expected = {board.interfaces.lan: lab.board_lan}
    if board.name == "simboard":
        expected = {LAN.board_side: LAN.board_address, WAN.board_side: WAN.board_address}
    for interface, address in expected.items():
        lines, _, code = shell.run(f"ip -br -4 addr show dev {interface}")
        assert code == 0, f"{interface}: {lines}"
        _name, state, *addresses = lines[0].split()
        assert state in ("UP", "UNKNOWN"), f"{interface} is {state}"
        assert any(a.split("/")[0] == address for a in addresses), f"{interface}: {addresses}, want {address}"
    wan = board.wan_interface
    lines, _, code = shell.run(f"ip -br link show dev {wan}")
    assert code == 0, f"WAN {wan}: {lines}"
    assert " UP " in f" {lines[0]} ", f"WAN {wan} is not up: {lines}"


def test_watchdog_device_present_and_petted(shell, board, lab):
    if board.watchdog is None:
        pytest.skip(f"board {board.name} has no watchdog in its board file")
    _, _, code = shell.run(f"test -c {board.watchdog.device}")
    assert code == 0, f"{board.watchdog.device} is not a character device on the board"
    # Someone pets it: the agent (it says so in its log) or systemd, which then holds it open.
    opened = lab.agent_events(shell, "watchdog open") or lab.agent_events(shell, "watchdog left to systemd")
    assert opened, f"the agent neither opened {board.watchdog.device} nor left it to systemd"
    pets = lab.watchdog_pets()
    if pets is not None:  # the simulated board's stand-in counts them: one every third of the timeout
        time.sleep(board.watchdog.timeout / 3 + 1)
        assert lab.watchdog_pets() > pets, f"{board.watchdog.device} was not petted"
