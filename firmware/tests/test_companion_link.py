"""The agent and the companion over a serial line: the real `vaxelbox run` and the real companion
code under real MicroPython (WebAssembly, in Node: firmware/tests/mcu/sim.mjs) on a pty pair.

The pty stands in for the board's UART (no microcontroller is here); the companion's pins are
files and an event log (sim.mjs). The agent runs on a board file naming lo and the pty.
"""

import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from agent_process import AgentProcess
from peers import free_port
from test_companion_mcu import MCU, node_bench
from vaxelbox.hw.board import load_board
from vaxelbox.hw.companion_build import lay_out
from vaxelbox.store import Store

BOARDS = Path(__file__).resolve().parents[2] / "boards"
HEARTBEAT_TIMEOUT = 4  # s, the test board's


@dataclass
class SimCompanion:
    directory: Path
    process: subprocess.Popen[bytes]
    uart: str  # the pty's board end

    def events(self, name: str) -> list[tuple[float, str]]:
        """(epoch seconds, level) of each change of output `name` (an LED, power)."""
        found = []
        for line in (self.directory / "events").read_text().splitlines():
            at, which, level = line.split()
            if which == name:
                found.append((int(at) / 1000, level))
        return found

    def level(self, name: str) -> str | None:
        events = self.events(name)
        return events[-1][1] if events else None

    def press(self, seconds: float) -> None:
        (self.directory / "button").touch()
        time.sleep(seconds)
        (self.directory / "button").unlink()


def board_file(tmp_path: Path, uart: str) -> Path:
    """The simulated board's file on this host: lo for both sides, a companion wired as on the
    Raspberry Pi 4B but on `uart`, no /dev/watchdog, state and firmware slots in tmp_path."""
    board = yaml.safe_load((BOARDS / "simboard.yaml").read_text())
    board["interfaces"] = {"lan": "lo", "wan": "lo"}
    companion = yaml.safe_load((BOARDS / "rpi-4b.yaml").read_text())["companion"]  # its wiring
    board["companion"] = {**companion, "device": uart, "heartbeat_timeout": HEARTBEAT_TIMEOUT}
    board.pop("watchdog", None)
    board["storage"] = {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "log")}
    board["update"] = {**board["update"], "root": str(tmp_path / "slots")}  # not the simboard's /run
    board["leds"]["sysfs"] = str(tmp_path / "leds")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(board))
    return path


@pytest.fixture
def companion(tmp_path: Path) -> Iterator[SimCompanion]:
    with simulated_companion(tmp_path) as running:
        yield running


@contextmanager
def simulated_companion(tmp_path: Path, *options: str) -> Iterator[SimCompanion]:
    """The companion under sim.mjs (with its `options`, e.g. --long-press-ms), booted, wired to the
    board file board_file() writes in `tmp_path`; stopped on leaving."""
    master, slave = os.openpty()
    tty.setraw(slave)  # a UART neither echoes nor translates
    os.set_blocking(master, False)
    uart = os.ttyname(slave)
    directory = tmp_path / "companion"
    board = load_board(board_file(tmp_path, uart))
    assert board.companion is not None
    lay_out(board.companion, directory)
    sim = [*node_bench()[:1], str(MCU / "sim.mjs"), "--dir", str(directory), "--uart-fd", str(master)]
    process = subprocess.Popen(
        [*sim, *options],
        pass_fds=[master],
        stderr=(tmp_path / "sim.err").open("wb"),
    )
    os.close(master)
    try:
        deadline = time.monotonic() + 20
        while not (directory / "events").exists() or "boot" not in (directory / "events").read_text():
            assert process.poll() is None, (tmp_path / "sim.err").read_text()
            assert time.monotonic() < deadline, "the simulated companion did not boot"
            time.sleep(0.1)
        yield SimCompanion(directory, process, uart)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        os.close(slave)


def wait_for(check, timeout: float, what: str) -> float:
    """Seconds until check() is true; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


def test_leds_show_the_agents_mode_and_the_link_survives_corrupt_frames(tmp_path, companion):
    agent = AgentProcess(tmp_path, "--board", str(tmp_path / "board.yaml"))
    try:
        agent.wait_notification("READY", "1", timeout=30)
        agent.wait_event("companion hello", timeout=10)
        # The demo site's cloud does not answer here: local mode within seconds, amber steady.
        wait_for(lambda: companion.level("amber") == "1", 15, "amber (local mode) not lit")
        assert companion.level("green") == "0"
        noise = b"\x00garbage VX\x12\x01\x40" + bytes(20)
        (companion.directory / "noise").write_bytes(noise)  # the companion's way to the agent
        wait_for(lambda: agent.events("companion sent corrupt frames"), 5, "noise not counted")
        with open(companion.uart, "wb", buffering=0) as line:  # the agent's way to the companion
            line.write(noise)
        wait_for(lambda: agent.events("companion refused a frame"), 5, "the companion did not answer noise")
        time.sleep(HEARTBEAT_TIMEOUT)  # heartbeats and answers go on after it
        agent.signal(signal.SIGTERM)  # not a crash: nothing else of the agent
        assert agent.stop() == 0
    finally:
        agent.close()
    assert not [e for e in agent.events("service crashed") if e.get("service") == "companion"]
    assert not agent.events("companion fault") or agent.events("companion ok")
    assert companion.level("power") == "1", "the board was reset while the agent ran"


def test_a_short_press_opens_the_enrolment_window(tmp_path, companion):
    agent = AgentProcess(tmp_path, "--board", str(tmp_path / "board.yaml"))
    try:
        agent.wait_event("companion hello", timeout=30)
        companion.press(0.3)
        agent.wait_event("companion button", timeout=5)
        audit = [e for e in agent.events("audit") if e.get("action") == "enrol-open"]
        assert audit, agent.events("audit")
        assert audit[0]["installer_name"] == "button"
        window = Store(tmp_path / "data").devices.enrolment()
        assert window is not None
        assert 29 * 60 < window.until - time.time() <= 30 * 60
        wait_for(lambda: len(companion.events("blue")) >= 3, 5, "blue does not blink")
    finally:
        agent.stop()


def test_a_stopped_agent_gets_the_board_power_cycled(tmp_path, companion):
    agent = AgentProcess(tmp_path, "--board", str(tmp_path / "board.yaml"))
    try:
        agent.wait_event("companion hello", timeout=30)
        wait_for(lambda: agent.events("companion ok"), 5, "the link never became ok")
    finally:
        agent.process.send_signal(signal.SIGKILL)  # a hang looks the same to the companion: silence
        agent.close()
    stopped = time.time()
    wait_for(lambda: companion.level("power") == "0", HEARTBEAT_TIMEOUT + 3, "no power cycle")
    off_at = companion.events("power")[-1][0]
    assert HEARTBEAT_TIMEOUT - 1.5 <= off_at - stopped <= HEARTBEAT_TIMEOUT + 1.5
    wait_for(lambda: companion.level("power") == "1", 4, "power not back after the cycle")


def test_a_missing_companion_is_a_fault_not_a_crash(tmp_path):
    board = board_file(tmp_path, str(tmp_path / "nothing-here"))
    agent = AgentProcess(tmp_path, "--board", str(board))
    try:
        agent.wait_notification("READY", "1", timeout=30)
        fault = agent.wait_event("companion fault", timeout=10)
        assert "missing" in fault["fault"]
    finally:
        assert agent.stop() == 0


def vaxelctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """vaxelctl as an installer runs it, in an 80-column terminal."""
    code = "from vaxelctl.cli import main; main()"
    env = {**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env
    )


def paired(tmp_path: Path, port: int) -> Path:
    """A laptop paired with the agent on 127.0.0.1:`port`: its vaxelctl config directory."""
    code = subprocess.run(
        [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(tmp_path / "data")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    config = tmp_path / "laptop"
    result = vaxelctl(config, "pair", f"127.0.0.1:{port}", "--code", code, "--name", "Lisa")
    assert result.returncode == 0, result.stderr
    return config


def test_status_shows_the_companions_telemetry_in_80_columns(tmp_path, companion):
    port = free_port("127.0.0.1")
    agent = AgentProcess(tmp_path, "--board", str(tmp_path / "board.yaml"), "--coap-port", str(port))
    try:
        agent.wait_event("companion ok", timeout=30)
        result = vaxelctl(paired(tmp_path, port), "status")
    finally:
        agent.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]  # the headline is wrapped by the terminal, as before
    assert all(len(line) <= 80 for line in lines), result.stdout
    shown = " ".join(line.strip() for line in lines)
    assert "companion ok: supply 4.99 V, 27.6 °C, 0 board resets, 0 bad frames" in shown, result.stdout


def test_status_names_a_missing_companion_in_80_columns(tmp_path):
    port = free_port("127.0.0.1")
    device = "/dev/ttyVXB-unplugged"  # a board's UART that is not there (short: a tmp path is 80 wide)
    assert not Path(device).exists()
    agent = AgentProcess(tmp_path, "--board", str(board_file(tmp_path, device)), "--coap-port", str(port))
    try:
        agent.wait_event("companion fault", timeout=30)
        result = vaxelctl(paired(tmp_path, port), "status")
    finally:
        agent.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]  # the headline is wrapped by the terminal, as before
    assert all(len(line) <= 80 for line in lines), result.stdout
    shown = " ".join(line.strip() for line in lines)
    assert f"alarm: companion on {device} since " in shown, result.stdout
    assert ": missing: cannot open" in shown, result.stdout
    assert "{" not in result.stdout, result.stdout  # no raw dict
    assert "companion fault: no telemetry yet" in shown, result.stdout


def test_labgrid_and_the_agent_share_one_serial_package():
    """pyserial (the agent's) and labgrid's fork pyserial-labgrid install the same `serial`
    package; make setup lets the fork own it (pyserial 3.5 plus labgrid's RFC 2217 fixes), so the
    HIL suite's serial servers work and the agent's link (the tests above) too."""
    import base64
    import hashlib
    from importlib.metadata import distribution

    import serial
    from labgrid.driver.serialdriver import SerialDriver

    fork = distribution("pyserial-labgrid")
    assert distribution("pyserial").version.startswith("3.5")
    recorded = dict(line.split(",")[:2] for line in (fork.read_text("RECORD") or "").splitlines())
    on_disk = Path(serial.__file__).with_name("rfc2217.py").read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(on_disk).digest()).rstrip(b"=").decode()
    assert recorded["serial/rfc2217.py"] == f"sha256={digest}", "pyserial overwrote labgrid's fork"
    assert SerialDriver.__name__ == "SerialDriver"
