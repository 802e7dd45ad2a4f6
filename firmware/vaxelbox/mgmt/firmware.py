"""Firmware update with the state semantics of LwM2M Object 5 (Firmware Update).

Blocks arrive in order and go straight to disk (staging/bundle.part); the
bundle is verified while it streams (vaxelbox.bundle) and renamed to
staging/bundle when intact. The state survives a restart: an interrupted
download resumes where the file ends, but only with the same bundle: the
sender names its bundle by the image's SHA-256 from the signed header, and a
block of any other bundle is refused (BundleMismatch), so two bundles are
never spliced. The signing key is read from its file whenever a download
starts, so a key installed while the agent runs counts at once. Applying a
staged bundle comes with the image/update capability; until then `update`
says so.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from vaxelbox.bundle import BundleError, BundleVerifier, load_public_key
from vaxelbox.mgmt.security import write_private
from vaxelbox.update.lwm2m import Result, State

__all__ = ["Result", "State"]  # re-exported: callers import them from here too


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


class FirmwareUpdate:
    def __init__(self, directory: Path, key: Path | Ed25519PublicKey | None) -> None:
        """`key`: the signing key, or the file to read it from when a download starts (PEM)."""
        self._directory = directory
        self._directory.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._part = directory / "bundle.part"
        self._staged = directory / "bundle"
        self._state_file = directory / "state.json"
        self.status = self._load()
        self._verifier: BundleVerifier | None = None

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

    def update(self) -> Status:
        """LwM2M Execute /5/0/2: apply the staged bundle."""
        if self.status.state != State.DOWNLOADED:
            raise UpdateRefused("nothing staged: upload a bundle first")
        raise UpdateRefused("applying a staged bundle comes with the image/update capability")

    def _start(self) -> None:
        key = self._signing_key()
        self._part.unlink(missing_ok=True)
        self._staged.unlink(missing_ok=True)
        self._verifier = BundleVerifier(key)
        self.status = Status(state=State.DOWNLOADING, result=Result.INITIAL, reason="downloading")

    def _signing_key(self) -> Ed25519PublicKey:
        """The key bundles must be signed with, read now (it may have been installed meanwhile)."""
        if isinstance(self._key, Ed25519PublicKey):
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
