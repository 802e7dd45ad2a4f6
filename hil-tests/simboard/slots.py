"""The simulated board's A/B slots and the part of its init that boots and watches them.

Slots are directories under RUN_DIR/slots (vaxelbox.update.directories): `up` installs this
tree's agent into A. At each start of the agent the init asks the slot state machine which slot
to boot (a trial gets its one try, a trial cut by a reset is rolled back) and runs
`python -m vaxelbox` from it (PYTHONPATH = the slot). While a trial runs the init watches it:
the agent exiting is a crash, the board file's health deadline passing is a hang; either rolls
back and boots the previous slot. An agent that exits outside a trial is left stopped, as before,
unless it had just rolled its own trial back (the agent checks the deadline too): then the init
boots the slot it went back to.
"""

import time
from pathlib import Path

from vaxelbox import __version__
from vaxelbox.hw.board import load_board
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots, install_tree

ROOT = Path(__file__).resolve().parents[2]
BOARD = load_board(ROOT / "boards" / "simboard.yaml")
assert BOARD.update is not None, "boards/simboard.yaml needs its update section"
STORE = DirectorySlots(BOARD.update.root)
DEADLINE = float(BOARD.update.health_deadline)
_running: str | None = None  # the slot the agent was last started from


def install_first() -> None:
    """The factory image: this tree's agent in slot A, slot B empty."""
    install_tree(ROOT / "firmware" / "vaxelbox", __version__, STORE.slot_dir("A"))
    STORE.save(slots.Slots(versions={"A": __version__, "B": None}, primary="A"))


def boot() -> Path:
    """The slot directory to run the agent from, now."""
    global _running
    step = STORE.change(lambda state: slots.boot(state, time.time(), DEADLINE))
    assert step.state.booted is not None
    _running = step.state.booted
    return STORE.slot_dir(step.state.booted)


def after_exit(status: int) -> bool:
    """The agent exited with `status`: whether the init starts it again (a trial's start or end)."""
    state = STORE.load()
    if state.trial is None:  # the agent may have rolled its own trial back (its deadline check)
        return state.primary != _running
    if state.trial.started and state.booted == state.trial.slot:
        STORE.change(lambda s: slots.failed(s, slots.Failure.CRASH, f"the agent exited with status {status}"))
    return True


def past_deadline() -> bool:
    """Tick the trial's clock: whether it was just rolled back (the init restarts the agent)."""
    return any(
        isinstance(a, slots.Restart) for a in STORE.change(lambda s: slots.tick(s, time.time())).actions
    )
