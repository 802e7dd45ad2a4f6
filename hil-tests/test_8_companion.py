"""Suite 8, the companion microcontroller: its LEDs follow a WAN cut and its return, its button
opens the enrolment window and, held 10 s, resets the appliance to its factory state, corrupt frames
on its line are survived, and a stopped agent gets the board power-cycled by it after the board
file's heartbeat timeout.

On the simulated board the companion is the real companion code under MicroPython
(hil-tests/simboard/peripherals.py): its LEDs and power pin are read from its output log, its
button is a file, and noise can be put on its line in both directions. On a real board the LEDs
are read by HIL_LEDS, the button is pressed by HIL_BUTTON_DOWN / HIL_BUTTON_UP, noise goes only
from the board to the companion, and the reset is seen in the companion's own counters.

The long press leaves a fresh box, paired again with the same code. The test that stops the agent
runs last: it leaves the board rebooted, agent running again.
"""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tomlkit
from lab import LEDS
from simboard.topology import RUN_DIR
from vaxelbox.hw.board import Board, Companion

pytestmark = pytest.mark.lab_needs(
    "HIL_CLOUD", "HIL_WAN_CUT", "HIL_WAN_RESTORE", "HIL_LEDS", "HIL_BUTTON_DOWN", "HIL_BUTTON_UP"
)

HOLD_DOWN = 5  # s the cloud must answer before failback, for this run (as suite 6)
LOCAL_WITHIN = 10.0  # s from the WAN cut to amber (the cloud is declared down in ~3 s)
SAMPLE = 0.1  # s between two looks at the LEDs
BLINK_WINDOW = 2.5  # s of looking that sees a 1 Hz blink both on and off
LONG_PRESS = 10.0  # s the button is held for a factory reset (firmware/companion/companion.py)
FEEDBACK = 2.0  # s from which the red LED warns that holding on resets
FINE_SAMPLE = 0.03  # s between two looks at a 5 Hz blink
NOISE = b"\x00garbage VX\x12\x01\x40" + bytes(20)  # a bad frame, cut short, then zeros


def ok(result: Any) -> str:
    assert result.returncode == 0, f"vaxelctl failed ({result.returncode}): {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def companion(board: Board) -> Companion:
    if board.companion is None:
        pytest.skip(f"board {board.name} has no companion in its board file")
    return board.companion


def status(lab: Any, installer: Any) -> dict[str, Any]:
    return json.loads(ok(lab.vaxelctl(installer, "status", "--json")))


def looks(lab: Any, seconds: float) -> dict[str, str]:
    """Each LED over `seconds`: "on", "off" or "blinking"."""
    seen: dict[str, set[int]] = {name: set() for name in LEDS}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, level in lab.leds().items():
            seen[name].add(level)
        time.sleep(SAMPLE)
    return {
        name: {frozenset({1}): "on", frozenset({0}): "off"}.get(frozenset(s), "blinking")
        for name, s in seen.items()
    }


def wait_for(check: Callable[[], bool], limit: float, what: str) -> float:
    """Seconds until check() is true; AssertionError after `limit` s saying `what` did not happen."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if check():
            return time.monotonic() - started
        time.sleep(SAMPLE)
    raise AssertionError(f"{what} within {limit} s")


def shows(lab: Any, **wanted: int) -> Callable[[], bool]:
    """A check that the LEDs named in `wanted` are at those levels now."""
    return lambda: all(lab.leds()[name] == level for name, level in wanted.items())


@pytest.fixture
def short_hold_down(lab: Any, installer: Any, tmp_path: Any) -> Iterator[None]:
    """A 5 s hold-down in the board's site for this test, pushed and rolled back as an installer does."""
    site = tmp_path / "site.toml"
    pulled = json.loads(ok(lab.vaxelctl(installer, "site", "pull", "-o", str(site), "--json")))
    text = tomlkit.parse(site.read_text())
    text.setdefault("local", tomlkit.table())["hold_down"] = HOLD_DOWN
    site.write_text(tomlkit.dumps(text))
    ok(lab.vaxelctl(installer, "site", "push", str(site)))
    try:
        yield
    finally:
        ok(lab.vaxelctl(installer, "site", "rollback", str(pulled["version"])))


def test_the_companion_answers_with_its_telemetry(lab, installer, companion):
    state = wait_for(lambda: status(lab, installer)["companion"]["state"] == "ok", 15, "companion not ok")
    assert state is not None
    linked = status(lab, installer)["companion"]
    assert linked["device"] == companion.device
    assert linked["watchdog"] == {
        "heartbeat_timeout": companion.heartbeat_timeout,
        "boot_grace": companion.boot_grace,
        "max_resets": companion.max_resets,
    }
    telemetry = linked["telemetry"]
    assert 3.0 < telemetry["supply_v"] < 6.0, telemetry  # a 5 V feed
    assert -20 < telemetry["temperature_c"] < 90, telemetry
    assert telemetry["safe_state"] is False, telemetry
    assert not [a for a in status(lab, installer)["alarms"] if a.get("kind") == "companion"]


def test_leds_follow_a_wan_cut_and_its_return(lab, installer, companion, short_hold_down, measure):
    assert status(lab, installer)["cloud"] == "up", "the cloud must be up before the cut"
    ok(lab.vaxelctl(installer, "enrol", "close"))  # an earlier suite may have left it open (blue)
    wait_for(lambda: looks(lab, BLINK_WINDOW)["blue"] == "off", 10, "blue off with the window closed")
    wait_for(shows(lab, green=1, amber=0), 10, "green steady before the cut")
    assert looks(lab, BLINK_WINDOW) == {"green": "on", "amber": "off", "blue": "off", "red": "off"}
    lab.cut_wan()
    try:
        seconds = wait_for(shows(lab, green=0, amber=1), LOCAL_WITHIN, "amber (local mode) after the cut")
        measure("WAN cut to amber LED (local mode)", f"{seconds:.1f} s")
        assert looks(lab, BLINK_WINDOW) == {"green": "off", "amber": "on", "blue": "off", "red": "off"}
    finally:
        lab.restore_wan()
    seconds = wait_for(shows(lab, green=1, amber=0), HOLD_DOWN + 20, "green (online) after the return")
    measure("WAN return to green LED (online, hold-down 5 s)", f"{seconds:.1f} s")
    assert looks(lab, BLINK_WINDOW)["green"] == "on"


def test_a_short_press_opens_the_enrolment_window(lab, installer, companion, measure):
    ok(lab.vaxelctl(installer, "enrol", "close"))
    wait_for(shows(lab, blue=0), 5, "blue off with the window closed")
    pressed = time.time()
    lab.press_button(0.3)
    try:
        seconds = wait_for(
            lambda: json.loads(ok(lab.vaxelctl(installer, "enrol", "status", "--json"))).get("open"),
            10,
            "the enrolment window did not open",
        )
        measure("button press to enrolment window open", f"{seconds:.1f} s")
        window = json.loads(ok(lab.vaxelctl(installer, "enrol", "status", "--json")))
        assert 29 * 60 < window["until"] - pressed <= 30 * 60 + 5, window  # 30 minutes, as the CLI's
        assert looks(lab, BLINK_WINDOW)["blue"] == "blinking"
    finally:
        ok(lab.vaxelctl(installer, "enrol", "close"))
    wait_for(shows(lab, blue=0), 5, "blue off after the window closed")


def test_corrupt_frames_are_survived(lab, installer, shell, companion):
    before = status(lab, installer)["companion"]
    # The board's side: garbage written to the companion's UART beside the agent's frames.
    escaped = "".join(f"\\x{byte:02x}" for byte in NOISE)
    _, _, code = shell.run(f"printf '{escaped}' > {companion.device}")
    assert code == 0, "could not write to the companion's UART on the board"
    both_ways = lab.companion_noise(NOISE)  # the companion's side, where the lab can
    time.sleep(3)  # heartbeats go on meanwhile: a second is their interval
    after = status(lab, installer)["companion"]
    assert after["state"] == "ok", after
    assert after["telemetry"]["frames_corrupt"] > before["telemetry"]["frames_corrupt"], after
    assert after["link_errors"]["refused"] > before["link_errors"]["refused"], after  # answered ERROR
    if both_ways:
        assert after["link_errors"]["corrupt"] > before["link_errors"]["corrupt"], after
    assert after["telemetry"]["board_resets"] == before["telemetry"]["board_resets"], after
    assert looks(lab, BLINK_WINDOW)["red"] == "off"


def test_a_long_press_resets_the_appliance_to_factory_state(
    lab, installer, running, board, companion, measure
):
    """Held 10 s: from 2 s the red LED blinks fast (holding on resets), at 10 s it is steady; the
    agent confirms, wipes its state and starts again as a fresh box, so the laptop must pair again
    (with the board's pairing code, which the reset keeps)."""
    red: list[tuple[float, int]] = []
    with lab.button_held():
        pressed = time.monotonic()
        while time.monotonic() - pressed < LONG_PRESS + 0.5:
            red.append((time.monotonic() - pressed, lab.leds()["red"]))
            time.sleep(FINE_SAMPLE)
    warned = {level for at, level in red if FEEDBACK + 0.3 < at < LONG_PRESS - 0.3}
    assert warned == {0, 1}, "the red LED did not blink fast while the button was held"
    assert {level for at, level in red if at > LONG_PRESS + 0.3} == {1}, "red not steady at 10 s"
    refused = wait_for(  # 4: the appliance does not know this laptop any more
        lambda: lab.vaxelctl(installer, "status", "--json").returncode == 4, 20, "pairing kept"
    )
    measure("long press released to pairings wiped (factory reset)", f"{refused:.1f} s")
    lines, _, code = running.shell.run(f"vaxelbox pairing-code --data {board.storage.data_dir}")
    assert code == 0, lines
    paired = wait_for(
        lambda: (
            lab.vaxelctl(
                installer, "pair", lab.board_lan, "--code", lines[-1].strip(), "--name", "hil"
            ).returncode
            == 0
        ),
        30,
        "the fresh box did not take the same pairing code",
    )
    assert paired is not None
    fresh = status(lab, installer)
    assert fresh["site_version"] == 1, fresh  # its --site again, as the first version of a fresh box
    wait_for(
        lambda: status(lab, installer)["companion"]["state"] == "ok", 15, "companion link after the reset"
    )


def test_a_stopped_agent_gets_the_board_power_cycled(lab, installer, running, board, companion, measure):
    before = status(lab, installer)["companion"]["telemetry"]
    power_before = lab.companion_power_events()
    stop = f"kill -TERM $(cat {RUN_DIR}/agent.pid)" if board.name == "simboard" else "systemctl stop vaxelbox"
    _, _, code = running.shell.run(stop)
    assert code == 0, f"could not stop the agent: {stop}"
    stopped = time.time()
    time.sleep(companion.heartbeat_timeout - 2)
    if power_before is not None:
        assert lab.companion_power_events() == power_before, "power cycled before the heartbeat timeout"
    else:
        _, _, code = running.shell.run("true", timeout=5)  # the board still answers
        assert code == 0
    if power_before is not None:
        wait_for(lambda: len(lab.companion_power_events()) > len(power_before), 6, "no power cycle")
        cut_at, level = lab.companion_power_events()[len(power_before)]
        assert level == 0
        measure("agent stopped to power cut by the companion", f"{cut_at - stopped:.1f} s")
        assert companion.heartbeat_timeout - 1.5 <= cut_at - stopped <= companion.heartbeat_timeout + 2
    else:
        time.sleep(4 + 2)  # past the timeout, and the companion's 2 s power cut
    running.reconnect()
    wait_for(lambda: _back(lab, installer), 60, "the agent and its companion link back after the reset")
    after = status(lab, installer)["companion"]["telemetry"]
    assert after["board_resets"] == before["board_resets"] + 1, after
    assert after["last_reset_reason"] == "heartbeat timeout", after
    if board.name == "simboard":  # the clean stop disarmed the board's watchdog ("V"): no reset there
        assert json.loads((RUN_DIR / "watchdog.json").read_text())["resets"] == 0


def _back(lab: Any, installer: Any) -> bool:
    result = lab.vaxelctl(installer, "status", "--json")
    if result.returncode != 0:
        return False
    linked = json.loads(result.stdout).get("companion") or {}
    return linked.get("state") == "ok" and linked.get("telemetry") is not None
