"""A trial on directory slots ended by systemd giving up on the agent (`vaxelbox fw trial-failed`,
run by the unit's OnFailure=) and by the agent's own deadline check (watch_deadline); outside a
trial both leave the slots alone. The same on RAUC's slots: test_update_rauc.py."""

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from vaxelbox.cli import app
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots
from vaxelbox.update.trial import watch_deadline

BOARDS = Path(__file__).resolve().parents[2] / "boards"
OLD, NEW = "0.1.0", "0.2.0"


def on_trial(tmp_path: Path, now: float = 1000.0, deadline_s: float = 30.0) -> DirectorySlots:
    """Slots in tmp_path/slots: A holds OLD, B holds NEW on trial, booted by the init at `now`."""
    store = DirectorySlots(tmp_path / "slots")
    store.slot_dir("A").mkdir(parents=True)
    store.save(slots.Slots(versions={"A": OLD, "B": None}))
    step = slots.apply(store.load(), slots.Bundle(NEW, ("simboard",)), "simboard", OLD)
    store.save(step.state)
    store.change(lambda s: slots.boot(s, now, deadline_s))
    return store


def board_file(tmp_path: Path) -> Path:
    """The simulated board's file with its slots and data under tmp_path."""
    board = yaml.safe_load((BOARDS / "simboard.yaml").read_text())
    board["storage"] = {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "log")}
    board["update"] = {**board["update"], "root": str(tmp_path / "slots")}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(board))
    return path


def trial_failed(board: Path, **monitor: str):
    """`vaxelbox fw trial-failed --board FILE` as systemd's OnFailure= runs it (MONITOR_* set)."""
    env = {f"MONITOR_{key.upper()}": value for key, value in monitor.items()}
    return CliRunner().invoke(
        app, ["fw", "trial-failed", "--board", str(board)], env={"COLUMNS": "200", **env}
    )


@pytest.mark.parametrize(
    ("monitor", "why"),
    [
        (
            {"service_result": "start-limit-hit", "exit_code": "exited", "exit_status": "3"},
            "(crash): the agent failed at each start until systemd gave up (it exited with status 3)",
        ),
        ({"service_result": "watchdog", "exit_code": "killed", "exit_status": "ABRT"}, "(hang): the agent "
         "stopped answering systemd's watchdog"),
    ],
)  # fmt: skip
def test_trial_failed_during_a_trial_rolls_it_back(tmp_path: Path, monitor: dict[str, str], why: str) -> None:
    """systemd gave up on the agent on trial: slot B is marked bad, A is primary and booted next,
    the outcome says why in systemd's terms (crash, or hang for its watchdog), exit 0."""
    store = on_trial(tmp_path)
    result = trial_failed(board_file(tmp_path), **monitor)
    assert result.exit_code == 0, result.output
    reason = f"{NEW} rolled back {why}; back on slot A"
    assert result.output == f"trial-failed: {reason}\n"
    state = store.load()
    assert (state.trial, state.primary, state.booted, state.bad) == (None, "A", "A", ("B",))
    assert state.outcome == slots.Outcome(slots.Result.UPDATE_FAILED, reason)


def test_trial_failed_outside_a_trial_changes_nothing(tmp_path: Path) -> None:
    """A committed slot whose agent fails: one line, exit 0, the selector untouched (no rollback,
    no restart), so the board does not reboot in a loop; the same with no update ever applied."""
    store = on_trial(tmp_path)
    store.change(lambda s: slots.healthy(s, 1001.0))  # B committed
    before = (tmp_path / "slots" / "selector.json").read_bytes()
    result = trial_failed(
        board_file(tmp_path), service_result="exit-code", exit_code="exited", exit_status="1"
    )
    assert (result.exit_code, result.output) == (
        0,
        "trial-failed: no update on trial; slot B stays (no reboot)\n",
    )
    assert (tmp_path / "slots" / "selector.json").read_bytes() == before
    assert json.loads(before)["primary"] == "B"


def test_trial_failed_names_a_board_file_it_cannot_read(tmp_path: Path) -> None:
    result = trial_failed(tmp_path / "missing.yaml")
    assert result.exit_code == 1
    assert "missing.yaml" in result.output


async def test_the_agent_rolls_its_stuck_trial_back_once_the_deadline_passes(tmp_path: Path) -> None:
    """An agent on trial that never reports healthy: its own check leaves the trial alone until
    the deadline (1030 s on the board's clock), then rolls it back (deadline) and restarts
    itself so the init boots slot A, and stops watching."""
    store = on_trial(tmp_path, now=1000.0, deadline_s=30.0)
    now, restarts = [1029.0], []
    watch = asyncio.create_task(watch_deadline(store, restarts.append, interval=0.02, clock=lambda: now[0]))
    await asyncio.sleep(0.2)  # several looks before the deadline
    assert not watch.done()
    assert store.load().trial is not None
    assert restarts == []
    now[0] = 1030.5
    await asyncio.wait_for(watch, 2)
    reason = f"{NEW} rolled back (deadline): no healthy report within the deadline; back on slot A"
    assert restarts == [reason]
    state = store.load()
    assert (state.trial, state.primary, state.booted, state.bad) == (None, "A", "A", ("B",))
    assert state.outcome == slots.Outcome(slots.Result.UPDATE_FAILED, reason)


async def test_the_deadline_check_ends_at_once_without_a_trial(tmp_path: Path) -> None:
    """Committed (or never updated): the check returns at its first look, changes nothing and
    restarts nothing, however late the clock."""
    store = on_trial(tmp_path)
    store.change(lambda s: slots.healthy(s, 1001.0))
    before = (tmp_path / "slots" / "selector.json").read_bytes()
    restarts: list[str] = []
    await asyncio.wait_for(watch_deadline(store, restarts.append, interval=0.02, clock=lambda: 1e9), 2)
    assert restarts == []
    assert (tmp_path / "slots" / "selector.json").read_bytes() == before
