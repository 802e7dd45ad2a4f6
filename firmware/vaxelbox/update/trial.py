"""The trial's two watchers besides the board's boot: systemd giving up on the agent, and the
agent's own clock.

- `trial_failed`: what `vaxelbox fw trial-failed` does when systemd's OnFailure= runs it (the
  agent failed to start more often than the unit's start limit allows). On trial, the trial
  fails (slots.failed) and the back-end carries out the marks and the reboot; outside a trial it
  changes nothing, so a committed slot whose agent fails never reboot-loops the board.
- `watch_deadline`: a service in the agent while its own slot is on trial; once the board file's
  deadline passes without a healthy report, the trial fails (slots.tick) as the simulated
  board's init and the next start of the agent would do, without waiting for either.

Both feed the slot state machine's events through the back-end's `load` / `change`; neither
knows RAUC or directories beyond who restarts: RAUC's back-end reboots the board itself, the
directory slots leave it to the caller (the agent stops and the board's init boots the slot the
selector names).
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from vaxelbox import update
from vaxelbox.hw.board import BoardError, load_board
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots
from vaxelbox.update.rauc import RaucError, RaucSlots
from vaxelbox.update.slots import Failure, Slots, Step

log = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0  # s between the agent's looks at its trial's deadline


def on_trial(state: Slots) -> bool:
    """Whether the slot running now is on trial (booted into it, its one try under way)."""
    trial = state.trial
    return trial is not None and trial.started and state.booted == trial.slot


def trial_failed(store: DirectorySlots | RaucSlots, kind: Failure, detail: str) -> Step:
    """The agent failed for good (`kind`, `detail` in words). On trial: rolled back (MarkBad, and
    a Restart RAUC's back-end carries out by rebooting). Otherwise the state as it is and no
    actions. Raises RaucError or OSError if the slots cannot be read or marked."""
    state = store.load()  # RAUC: the trial is settled for this boot first
    if not on_trial(state):
        return Step(state)
    return store.change(lambda s: slots.failed(s, kind, detail) if on_trial(s) else Step(s))


def systemd_failure(env: Mapping[str, str]) -> tuple[Failure, str]:
    """Why systemd gave up on the agent, from the MONITOR_* variables it passes to an OnFailure=
    unit (systemd.exec(5)): a watchdog timeout is a hang, anything else a crash."""
    result = env.get("MONITOR_SERVICE_RESULT", "")
    code, status = env.get("MONITOR_EXIT_CODE", ""), env.get("MONITOR_EXIT_STATUS", "")
    if result == "watchdog":
        return Failure.HANG, "the agent stopped answering systemd's watchdog"
    if code == "exited" and status:
        last = f"it exited with status {status}"
    elif code in ("killed", "dumped") and status:
        last = f"it was killed by SIG{status}"
    else:
        last = f"systemd's result: {result or 'unknown'}"
    return Failure.CRASH, f"the agent failed at each start until systemd gave up ({last})"


async def watch_deadline(
    store: DirectorySlots | RaucSlots,
    restart: Callable[[str], None],
    interval: float = CHECK_INTERVAL,
    clock: Callable[[], float] = time.time,
) -> None:
    """While this agent's slot is on trial, every `interval` s: past the deadline (in `clock`'s
    seconds, as the trial's deadline was set) the trial is rolled back; on directory slots
    `restart(reason)` then stops this agent (RAUC's back-end reboots the board itself). Returns
    once no trial runs here (committed, rolled back, or none): a trial starts only at a boot.
    Errors reading the slots are logged and the next look tries again."""
    while True:
        try:
            step = await asyncio.to_thread(_look, store, clock())
        except (OSError, RaucError) as exc:
            log.error("cannot check the trial's deadline: %s", exc)
        else:
            if step is None:
                return
            rolled_back = next((a for a in step.actions if isinstance(a, slots.Restart)), None)
            if rolled_back is not None:
                log.warning("trial rolled back: %s", rolled_back.reason)
                if isinstance(store, DirectorySlots):
                    restart(rolled_back.reason)
                return
        await asyncio.sleep(interval)


def _look(store: DirectorySlots | RaucSlots, now: float) -> Step | None:
    """One tick of the trial's clock; None when this slot is not (or no longer) on trial."""
    state = store.load()  # RAUC: ticks with its own clock, and reboots if past the deadline
    if not on_trial(state):
        return None
    return store.change(lambda s: slots.tick(s, now))


def trial_failed_command(board_file: Path, data: Path | None, env: Mapping[str, str]) -> tuple[int, str]:
    """`vaxelbox fw trial-failed`: (exit status, the one line to log). 0 when the trial was rolled
    back or none was running; 1 when the board file or the slots cannot be read or marked."""
    try:
        board = load_board(board_file)
    except BoardError as exc:
        return 1, f"trial-failed: {exc}"
    if board.update is None:
        return 0, f"trial-failed: {board.name} has no update slots; nothing to roll back"
    data_dir = data or board.storage.data_dir
    kind, detail = systemd_failure(env)
    try:
        store = update.open_slots(board.update, data_dir / "firmware")
        step = trial_failed(store, kind, detail)
    except (OSError, RaucError) as exc:
        return 1, f"trial-failed: cannot roll the trial back: {exc}"
    outcome = step.state.outcome
    if not any(isinstance(a, slots.MarkBad) for a in step.actions) or outcome is None:
        running = step.state.booted or step.state.primary
        return 0, f"trial-failed: no update on trial; slot {running} stays (no reboot)"
    return 0, f"trial-failed: {outcome.reason}"
