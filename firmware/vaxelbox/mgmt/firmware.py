"""Firmware update with the state semantics of LwM2M Object 5 (Firmware Update).

Blocks arrive in order and go straight to disk (staging/bundle.part); the
bundle is verified while it streams (vaxelbox.bundle) and renamed to
staging/bundle when intact. Applying it (`update`) drives the A/B slots
(vaxelbox.update.slots) on a board whose file has an `update` section: checked
(board, version) before anything is written, the image unpacked into the
inactive slot, the selector saved, and the agent restarted into the trial; the
new agent commits itself once ready (`healthy`), and the board's init rolls it
back otherwise. The state survives a restart: an interrupted
download resumes where the file ends, but only with the same bundle: the
sender names its bundle by the image's SHA-256 from the signed header, and a
block of any other bundle is refused (BundleMismatch), so two bundles are
never spliced. The signing key is read from its file whenever a download
starts, so a key installed while the agent runs counts at once."""

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaxelbox import __version__
from vaxelbox.bundle import BundleError, BundleVerifier, image_offset, load_public_key, read_header
from vaxelbox.mgmt.security import write_private
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots
from vaxelbox.update.lwm2m import Result, State
from vaxelbox.update.rauc import RaucError

if TYPE_CHECKING:  # cryptography loads when a download starts (bundle.load_public_key): issue 12
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["Result", "State"]  # re-exported: callers import them from here too

log = logging.getLogger("vaxelbox.mgmt.firmware")


class UpdateRefused(ValueError):
    """The request does not fit the current state; the message says what would."""

    def __init__(self, message: str, resume_at: int | None = None) -> None:
        super().__init__(message)
        self.resume_at = resume_at  # set when a block came out of order: where to continue


class BundleMismatch(UpdateRefused):
    """A block continues a different bundle than the one on the appliance: start afresh."""


@dataclass
class Status:
    state: int = State.IDLE
    result: int = Result.INITIAL
    received: int = 0  # bytes of the bundle on disk
    version: str | None = None  # the staged (or downloading) bundle's, once its header verified
    size: int | None = None  # its image size
    reason: str = ""
    sha256: str | None = None  # its image's SHA-256 (hex) from the signed header: the bundle's identity
    total: int | None = None  # the whole bundle's length in bytes (header and image), once known


def restart_soon(reason: str) -> None:
    """Stop this agent cleanly in 1 s (after the reply went out); the board's init boots the trial."""
    asyncio.get_running_loop().call_later(1.0, os.kill, os.getpid(), signal.SIGTERM)


class FirmwareUpdate:
    def __init__(
        self,
        directory: Path,
        key: "Path | Ed25519PublicKey | None",
        slot_store: DirectorySlots | None = None,
        board: str | None = None,
        restart: Callable[[str], None] = restart_soon,
    ) -> None:
        """`key`: the signing key, or the file to read it from when a download starts (PEM);
        `slot_store`, `board`: the board's A/B slots and its name (None: applying is refused);
        `restart(reason)`: stops this agent so the init boots the slot on trial."""
        self.slot_store, self._board, self._restart = slot_store, board, restart
        self._directory = directory
        self._directory.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._part = directory / "bundle.part"
        self._staged = directory / "bundle"
        self._state_file = directory / "state.json"
        self.status = self._load()
        self._verifier: BundleVerifier | None = None
        self._take_outcome()

    def write(self, offset: int, data: bytes, last: bool, bundle: str | None = None) -> Status:
        """One block at `offset`. Offset 0 starts a new download; others must continue the file,
        and, if the sender names its `bundle` (its image's SHA-256 in hex, or a prefix of it), the
        same bundle. Raises UpdateRefused (BundleMismatch for another bundle) or BundleError."""
        if offset == 0:
            self._start()
        elif self.status.state != State.DOWNLOADING or offset != self.status.received:
            resume = self._resume_offset()
            raise UpdateRefused(f"expected the block at offset {resume}, got {offset}", resume_at=resume)
        elif not self._same_bundle(bundle):
            raise self._mismatch()
        verifier = self._verifier or self._reverify()
        try:
            verifier.feed(data)
            with self._part.open("ab") as file:
                file.write(data)
                if last:
                    file.flush()
                    os.fsync(file.fileno())
            self.status.received += len(data)
            learnt = verifier.header is not None and self.status.sha256 is None
            self._take_header(verifier)
            if not self._same_bundle(bundle):  # its header arrived just now, and it is another's
                mismatch = self._mismatch()
                self._fail(Result.INITIAL, str(mismatch))
                raise mismatch
            if last:
                verifier.finish()
                os.replace(self._part, self._staged)
                self._become(State.DOWNLOADED, Result.INITIAL, "verified and staged")
        except BundleError as exc:
            self._fail(Result.UNSUPPORTED_PACKAGE if exc.unsupported else Result.INTEGRITY_FAILURE, str(exc))
            raise
        except OSError as exc:
            self._fail(Result.NOT_ENOUGH_SPACE, f"cannot store the bundle: {exc.strerror}")
            raise UpdateRefused(self.status.reason) from None
        if offset == 0 or last or learnt:  # in between, the file's length is the progress (see _load)
            self._save()
        return self.status

    def update(self, force: bool = False) -> Status:
        """LwM2M Execute /5/0/2: install the staged bundle into the inactive slot and restart into it.
        Raises UpdateRefused (nothing staged, no slots, or slots.Refused's reason: another board,
        a downgrade unless `force`) before the slot is touched; the result says why. In the agent
        (an event loop runs) the install runs in a worker thread, as RAUC writing a root file
        system takes minutes: the answer is "installing", and /fw follows; without a loop it runs
        here and a failed install raises UpdateRefused."""
        if self.status.state != State.DOWNLOADED:
            raise UpdateRefused("nothing staged: upload a bundle first")
        if self.slot_store is None or self._board is None:
            raise UpdateRefused("this board has no update slots (its board file has no `update` section)")
        with self._staged.open("rb") as file:
            header = read_header(file)
        try:
            bundle = slots.Bundle(header.version, header.boards)
            step = slots.apply(self.slot_store.load(), bundle, self._board, __version__, force)
        except slots.Refused as exc:
            self._become(State.DOWNLOADED, Result(exc.result), str(exc))
            self._save()
            raise UpdateRefused(str(exc)) from None
        except RaucError as exc:
            raise UpdateRefused(f"cannot read the slots: {exc}") from None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if not self._apply(step, None):
                raise UpdateRefused(self.status.reason) from None
            return self.status
        self._become(State.UPDATING, Result.INITIAL, f"installing into slot {step.state.inactive}")
        self._save()
        loop.run_in_executor(None, self._apply, step, loop)
        return self.status

    def _apply(self, step: slots.Step, loop: asyncio.AbstractEventLoop | None) -> bool:
        """Carry out an accepted apply (the restart on `loop`'s thread, if given); whether it
        installed. A failed install leaves the slot as it was and the bundle staged, and says why."""
        import tarfile  # only when an update installs: the idle agent need not keep it

        try:
            for action in step.actions:
                if isinstance(action, slots.Restart) and loop is not None:
                    loop.call_soon_threadsafe(self._restart, action.reason)
                else:
                    self._carry_out(action, step)
        except (OSError, tarfile.TarError, RaucError) as exc:
            why = f"installing into slot {step.state.inactive}: {exc}"
            self._become(State.DOWNLOADED, Result.UPDATE_FAILED, why)
            self._save()
            return False
        return True

    def healthy(self) -> None:
        """The agent is ready (SIP listening, management reachable): commit a slot on trial."""
        if self.slot_store is None:
            return
        try:
            self.slot_store.change(lambda state: slots.healthy(state, time.time()))
        except (OSError, RaucError) as exc:  # the agent runs on; the trial is settled at the next look
            log.error("cannot record this version as healthy: %s", exc)
            return
        self._take_outcome()

    def slot_view(self) -> dict[str, object] | None:
        """Both slots for /fw: {"A": {"version", "state"}, ...}, `state` one of running, trial,
        bad, standby, empty; None on a board without slots."""
        if self.slot_store is None:
            return None
        try:
            state = self.slot_store.load()
        except RaucError as exc:  # /fw still answers; the log says what RAUC said
            log.error("cannot read the slots: %s", exc)
            return None
        return {
            name: {"version": version, "state": _slot_state(state, name)}
            for name, version in state.versions.items()
        }

    def _carry_out(self, action: slots.Action, step: slots.Step) -> None:
        assert self.slot_store is not None
        if isinstance(action, slots.Install):
            with self._staged.open("rb") as file:
                file.seek(image_offset(file))
                self.slot_store.install(action.slot, file)
            self.slot_store.save(step.state)  # only once the slot is complete
            self._become(
                State.UPDATING, Result.INITIAL, f"installed in slot {action.slot}; restarting into it"
            )
            self._save()
        elif isinstance(action, slots.Restart):
            self._restart(action.reason)

    def _take_outcome(self) -> None:
        """After a restart: the trial's end (committed or rolled back) into the LwM2M state."""
        if self.slot_store is None or self.status.state != State.UPDATING:
            return
        try:
            state = self.slot_store.load()
        except RaucError as exc:  # the agent starts all the same; /fw reads it again later
            log.error("cannot read the slots: %s", exc)
            return
        if state.trial is not None:
            self._become(
                State.UPDATING, Result.INITIAL, f"{state.trial.version} on trial in slot {state.trial.slot}"
            )
        elif state.outcome is not None:
            self._staged.unlink(missing_ok=True)
            self.status = Status(result=state.outcome.result, reason=state.outcome.reason)
        self._save()

    def _start(self) -> None:
        key = self._signing_key()
        self._part.unlink(missing_ok=True)
        self._staged.unlink(missing_ok=True)
        self._verifier = BundleVerifier(key)
        self.status = Status(state=State.DOWNLOADING, result=Result.INITIAL, reason="downloading")

    def _signing_key(self) -> "Ed25519PublicKey":
        """The key bundles must be signed with, read now (it may have been installed meanwhile)."""
        if self._key is not None and not isinstance(self._key, Path):  # a key object, not its file
            return self._key
        where = (
            f"install the public key from `vaxelctl fw keygen` as {self._key}"
            if self._key is not None
            else "start the agent with --fw-key FILE"
        )
        if self._key is None or not self._key.exists():
            raise UpdateRefused(f"no firmware signing key on this appliance: {where}")
        try:
            return load_public_key(self._key)
        except (OSError, ValueError) as exc:
            raise UpdateRefused(f"the firmware signing key cannot be used ({exc}): {where}") from None

    def _same_bundle(self, bundle: str | None) -> bool:
        known = self.status.sha256
        return bundle is None or known is None or known.startswith(bundle.lower())

    def _mismatch(self) -> BundleMismatch:
        have = f"version {self.status.version}" if self.status.version else "another bundle"
        return BundleMismatch(
            f"the appliance holds {self.status.received} bytes of another bundle ({have}): "
            "upload yours from the start"
        )

    def _take_header(self, verifier: BundleVerifier) -> None:
        """The verified header's facts into the state (a no-op until the header is complete)."""
        header = verifier.header
        if header is None:
            return
        self.status.version, self.status.size, self.status.sha256 = header.version, header.size, header.sha256
        self.status.total = self.status.received - verifier.image_bytes + header.size

    def _resume_offset(self) -> int:
        return self.status.received if self.status.state == State.DOWNLOADING else 0

    def _reverify(self) -> BundleVerifier:
        """After a restart: re-read what is on disk so the running hash continues."""
        verifier = BundleVerifier(self._signing_key())
        with self._part.open("rb") as file:
            while chunk := file.read(1 << 20):
                verifier.feed(chunk)
        self._verifier = verifier
        return verifier

    def _fail(self, result: Result, reason: str) -> None:
        self._part.unlink(missing_ok=True)
        self._verifier = None
        self.status = Status(state=State.IDLE, result=result, reason=reason)
        self._save()

    def _become(self, state: State, result: Result, reason: str) -> None:
        self.status.state, self.status.result, self.status.reason = state, result, reason

    def _load(self) -> Status:
        try:
            status = Status(**json.loads(self._state_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return Status()
        if status.state == State.DOWNLOADING:
            # The file is the truth: a crash may have lost the last state write, not the data.
            status.received = self._part.stat().st_size if self._part.exists() else 0
        return status

    def _save(self) -> None:
        write_private(self._state_file, json.dumps(asdict(self.status)))


def _slot_state(state: slots.Slots, name: str) -> str:
    if state.versions.get(name) is None:
        return "empty"
    if state.trial is not None and state.trial.slot == name:
        return "trial"
    if name == state.booted:
        return "running"
    return "bad" if name in state.bad else "standby"
