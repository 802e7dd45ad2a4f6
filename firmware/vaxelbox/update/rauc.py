"""A/B root file systems through RAUC (real boards): the slot back-end the agent drives.

RAUC (Debian `rauc`, its service on the system D-Bus) owns what a bootloader
owns: which slot is primary, which one booted, which ones are bad, and it
writes bundles into the slot that is not running. This back-end only drives
its command line (`rauc install`, `rauc status --detailed --output-format=json`,
`rauc status mark-good` / `mark-bad` / `mark-active`) and maps its view onto
`vaxelbox.update.slots.Slots`; the slots are RAUC's bootnames (A, B).

What RAUC does not know is kept beside it in one JSON file (`state_file`, in
the agent's data directory): the trial in progress, the last outcome, the
versions seen in each slot (RAUC knows only those it installed), and the boot
it was written in (the kernel's boot id). At each look at the slots after
a reboot the agent settles the trial as the simulated board's init does: the
slot on trial booted -> its one try starts (deadline from the board file); the
bootloader came back on the other slot, or a second boot happened during the
trial -> rolled back (interrupted). Errors from rauc are RaucError with RAUC's
own message.
"""

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from vaxelbox import __version__
from vaxelbox.update import slots
from vaxelbox.update.slots import Failure, Outcome, Slots, Step, Trial
from vaxelbox.update.state_file import locked, write_json

log = logging.getLogger(__name__)

RAUC_TIMEOUT = 900.0  # s: installing a root file system on an SD card takes minutes


class RaucError(RuntimeError):
    """rauc failed or answered something we cannot read; the message is RAUC's own where it gave one."""


@dataclass(frozen=True)
class RaucSlot:
    """One slot as `rauc status` shows it: `name` (rootfs.0), `bootname` (A), `state`
    (booted, active, inactive), `boot_status` (good, bad, or None if unknown), `version` of
    the bundle installed in it (None: none installed by RAUC)."""

    name: str
    bootname: str
    state: str
    boot_status: str | None
    version: str | None


@dataclass(frozen=True)
class RaucStatus:
    """`compatible` (the board's name), `booted` and `primary` as bootnames (None if RAUC did
    not say), `slots` by bootname."""

    compatible: str
    booted: str | None
    primary: str | None
    slots: dict[str, RaucSlot]


def parse_status(text: str) -> RaucStatus:
    """`rauc status --detailed --output-format=json` (RAUC 1.8) -> RaucStatus.
    Raises RaucError naming what is missing for anything else."""
    try:
        data = json.loads(text)
        pairs = [(name, fields) for entry in data["slots"] for name, fields in entry.items()]
        found = [_slot(name, fields) for name, fields in pairs if fields["bootname"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RaucError(f"cannot read rauc status output ({type(exc).__name__}: {exc})") from None
    by_name = {slot.name: slot for slot in found}
    by_boot = {slot.bootname: slot for slot in found}
    booted = data.get("booted")
    booted_slot = by_boot.get(booted) or next((s for s in found if s.state == "booted"), None)
    primary = by_name.get(data.get("boot_primary") or "")
    return RaucStatus(
        compatible=str(data.get("compatible") or ""),
        booted=booted_slot.bootname if booted_slot else None,
        primary=primary.bootname if primary else None,
        slots=by_boot,
    )


def _slot(name: str, fields: Mapping[str, object]) -> RaucSlot:
    detail = fields.get("slot_status")
    bundle = detail.get("bundle") if isinstance(detail, dict) else None
    version = bundle.get("version") if isinstance(bundle, dict) else None
    status = fields.get("boot_status")
    return RaucSlot(
        name=name,
        bootname=str(fields["bootname"]),
        state=str(fields.get("state") or ""),
        boot_status=str(status) if status else None,
        version=str(version) if version else None,
    )


def rauc_message(stdout: str, stderr: str, returncode: int) -> str:
    """RAUC's own words for a failure: the installer's `LastError:` line, else stderr's last
    line that is not a log message, else the exit status."""
    for line in stdout.splitlines():
        if line.startswith("LastError: "):
            return line.removeprefix("LastError: ").strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("rauc-Message:")]
    if said:
        return said[-1]
    return lines[-1] if lines else f"rauc exited with status {returncode}"


def current_boot_id() -> str:
    """The kernel's id of this boot: it changes at every reboot, power cut or watchdog reset."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class RaucSlots:
    def __init__(
        self,
        state_file: Path,
        deadline_s: float,
        rauc: Sequence[str] = ("rauc",),
        env: Mapping[str, str] | None = None,
        boot_id: Callable[[], str] = current_boot_id,
        reboot: Sequence[str] = ("systemctl", "reboot"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`state_file`: where the trial and the outcome live (the data directory);
        `deadline_s`: the board file's update.health_deadline; `rauc`: the command (its
        client talks to the service on D-Bus; `env` may point it at another bus);
        `reboot`: the command that restarts the board into the slot RAUC made primary."""
        self.state_file, self.deadline_s = state_file, deadline_s
        self._lock_file = state_file.with_suffix(".lock")
        self._rauc, self._env = list(rauc), dict(env) if env is not None else None
        self._boot_id, self._reboot, self._clock = boot_id, list(reboot), clock

    def status(self) -> RaucStatus:
        """RAUC's view now; raises RaucError."""
        return parse_status(self._run("status", "--detailed", "--output-format=json"))

    def load(self) -> Slots:
        """Both slots as the state machine sees them, the trial settled for this boot first
        (started, rolled back, or past its deadline; the marks that follow are made)."""
        with locked(self._lock_file):
            view = self._view()
            step = self._settle(view)
            if step.state != view or self._read().boot_id != self._boot_id():
                self._write(step.state)
        self._carry_out(step.actions)
        return step.state

    def save(self, state: Slots) -> None:
        """Keep what RAUC does not hold (trial, outcome) with this boot's id."""
        with locked(self._lock_file):
            self._write(state)

    def change(self, event: Callable[[Slots], Step]) -> Step:
        """Feed one event, save its state, then make the marks it asks for in RAUC
        (MarkGood -> mark-good; MarkBad -> mark-bad, and mark-good on the slot we go back to)
        and reboot for a Restart. A running slot that is primary and not on trial is marked
        good as well: U-Boot spends one of its attempts at every boot (boards/rauc/boot.cmd),
        so each healthy start gives them back."""
        with locked(self._lock_file):
            settled = self._settle(self._view())
            step = event(settled.state)
            self._write(step.state)
        state, actions = step.state, [*settled.actions, *step.actions]
        marked = any(isinstance(a, slots.MarkGood | slots.MarkBad) for a in actions)
        if not marked and state.trial is None and state.booted is not None and state.booted == state.primary:
            actions.append(slots.MarkGood(state.booted))
        self._carry_out(actions)
        return Step(state, actions)

    def install(self, slot: str, image: BinaryIO) -> None:
        """`rauc install` the RAUC bundle `image` (a stream) into the inactive `slot`.
        RAUC checks its signature and compatible and picks the slot itself; raises RaucError
        with RAUC's message if it refuses or fails, or if it made another slot primary."""
        bundle = self.state_file.with_name("install.raucb")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        try:
            with bundle.open("wb") as file:
                while chunk := image.read(1 << 20):
                    file.write(chunk)
            self._run("install", str(bundle))
        finally:
            bundle.unlink(missing_ok=True)
        primary = self.status().primary
        if primary != slot:
            raise RaucError(f"RAUC installed the bundle but made slot {primary} primary, not {slot}")

    def restart(self, reason: str) -> None:
        """Reboot the board (in 1 s when called from the agent, after its reply went out)."""
        log.warning("rebooting: %s", reason)
        try:
            asyncio.get_running_loop().call_later(1.0, self._reboot_now)
        except RuntimeError:
            self._reboot_now()

    def _reboot_now(self) -> None:
        subprocess.run(self._reboot, check=False)

    def _view(self) -> Slots:
        """RAUC's slots with our trial and outcome; the running slot's version is ours."""
        status = self.status()
        kept = self._read()
        # RAUC knows the versions it installed; the factory's slot is the one we saw running.
        versions = {
            name: slot.version or kept.versions.get(name) for name, slot in sorted(status.slots.items())
        }
        if status.booted in versions and versions[status.booted] is None:
            versions[status.booted] = __version__
        bad = tuple(name for name, slot in sorted(status.slots.items()) if slot.boot_status == "bad")
        primary = status.primary or status.booted or next(iter(versions), "A")
        return Slots(
            versions=versions,
            primary=primary,
            bad=bad,
            trial=kept.trial,
            outcome=kept.outcome,
            booted=status.booted,
        )

    def _settle(self, state: Slots) -> Step:
        """The trial against this boot: what the simulated board's init does at each boot and tick."""
        trial, now = state.trial, self._clock()
        if trial is None:
            return Step(state)
        if self._read().boot_id == self._boot_id():
            return slots.tick(state, now)
        actually = state.booted
        if not trial.started and actually != trial.slot:
            started = replace(state, trial=replace(trial, started=True))
            detail = f"the board did not start it (the bootloader went back to slot {actually})"
            return slots.failed(started, Failure.INTERRUPTED, detail)
        step = slots.boot(replace(state, booted=actually), now, self.deadline_s)
        back = replace(step.state, booted=actually)
        if back.trial is None and actually != back.primary:  # the bootloader gave the failed slot another go
            reason = back.outcome.reason if back.outcome else "rolled back"
            return Step(back, [*step.actions, slots.Restart(reason)])
        return Step(back, step.actions)

    def _carry_out(self, actions: list[slots.Action]) -> None:
        for action in actions:
            if isinstance(action, slots.MarkGood):
                self._run("status", "mark-good", self._rauc_name(action.slot))
            elif isinstance(action, slots.MarkBad):  # RAUC drops it from the boot order
                self._run("status", "mark-bad", self._rauc_name(action.slot))
                other = next(n for n in slots.SLOT_NAMES if n != action.slot)
                self._run("status", "mark-good", self._rauc_name(other))  # its full boot attempts
            elif isinstance(action, slots.Restart):
                self.restart(action.reason)

    def _rauc_name(self, bootname: str) -> str:
        slot = self.status().slots.get(bootname)
        if slot is None:
            raise RaucError(f"RAUC has no slot with bootname {bootname}")
        return slot.name

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [*self._rauc, *args], capture_output=True, text=True, env=self._env, timeout=RAUC_TIMEOUT
            )
        except FileNotFoundError:
            raise RaucError(f"{self._rauc[0]} is not installed (Debian package rauc)") from None
        except subprocess.TimeoutExpired:
            raise RaucError(f"rauc {args[0]} did not finish within {RAUC_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise RaucError(rauc_message(done.stdout, done.stderr, done.returncode))
        return done.stdout

    def _read(self) -> "_Kept":
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return _Kept()
        except ValueError:
            log.error("unreadable %s: starting without a trial", self.state_file)
            return _Kept()
        trial, outcome = data.get("trial"), data.get("outcome")
        return _Kept(
            trial=Trial(**trial) if isinstance(trial, dict) else None,
            outcome=Outcome(**outcome) if isinstance(outcome, dict) else None,
            boot_id=data.get("boot_id"),
            versions=dict(data.get("versions") or {}),
        )

    def _write(self, state: Slots) -> None:
        data = state.to_dict()
        kept = {
            "trial": data["trial"],
            "outcome": data["outcome"],
            "boot_id": self._boot_id(),
            "versions": data["versions"],
        }
        write_json(self.state_file, kept)


@dataclass(frozen=True)
class _Kept:
    trial: Trial | None = None
    outcome: Outcome | None = None
    boot_id: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
