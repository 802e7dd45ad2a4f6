"""Who may manage the appliance: the pairing secret, and one OSCORE context per installer.

Pairing: the appliance's secret (on its label; `vaxelbox pairing-code` here)
keys a bootstrap OSCORE context. The client picks a fresh random ID context
per attempt and sends it in the clear (RFC 8613 kid context); both sides
derive the same keys from secret + ID context, so every attempt starts with
new keys and its own sequence numbers, and the appliance refuses an ID
context it has seen before (a recorded pairing cannot be replayed). The only
thing a bootstrap context may do is create an installer context.

Installer contexts are aiocoap file contexts (secret.json 0600, sequence
numbers and replay window persisted) on both sides, so replay protection
survives restarts. Revoking one deletes its directory; the appliance stops
answering it at the next request.
"""

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the OSCORE stack is imported on first use: vaxelbox.mgmt.oscore_contexts
    from aiocoap.oscore import FilesystemSecurityContext
    from vaxelbox.mgmt.oscore_contexts import EphemeralContext, InstallerContext

PAIRING_CLAIM = "pairing"
INSTALLER_CLAIM_PREFIX = "installer:"
CLIENT_PAIRING_ID = b"pair"  # the installer's sender ID in the bootstrap context
APPLIANCE_ID = b""  # the appliance's sender ID in every context
_CODE_CHARS = re.compile(r"[^A-Z2-7]")
_SEPARATORS = re.compile(r"[\s\-_.]+")  # how people group a code when they type it
MAX_REMEMBERED_ATTEMPTS = 10_000
REFUSALS_TOLD_EVERY = 10.0  # s: wrong codes are told at most this often, so guessing cannot flood the log
# The COSE header labels a request names its context by (RFC 8613; aiocoap.oscore.COSE_KID and
# COSE_KID_CONTEXT), here so that looking a context up needs no OSCORE import.
COSE_KID = 4
COSE_KID_CONTEXT = 10
_INSTALLER_ID = re.compile(r"[0-9a-f]{8}")  # hex of a 4-byte sender ID: an installer's directory
_REVOKED = ".revoked-"  # prefix of an installer directory being deleted


class PairingError(ValueError):
    """A pairing code that cannot be right; the message says why."""


def normalise_code(code: str) -> str:
    """`abcde-fghij ...` as typed from a label -> the 20 base32 characters it stands for.

    Dashes and spaces between groups are ignored, look-alikes (0 1 8) read as O I B. Raises
    PairingError naming the first character that cannot be in a code, or the count."""
    typed = _SEPARATORS.sub("", code.upper().replace("0", "O").replace("1", "I").replace("8", "B"))
    stray = _CODE_CHARS.search(typed)
    if stray is not None:
        raise PairingError(
            f"{stray.group()!r} is not in any pairing code: it has letters A-Z and digits 2-7 "
            "(4 groups of 5, as on the label)"
        )
    if len(typed) != 20:
        raise PairingError(f"a pairing code has 20 letters and digits (4 groups of 5); this has {len(typed)}")
    return typed


def format_code(letters: str) -> str:
    return "-".join(letters[i : i + 5] for i in range(0, 20, 5))


def pairing_context(code: str, id_context: bytes, *, appliance: bool) -> "EphemeralContext":
    """The bootstrap context for one attempt, from either side. Raises PairingError for a code
    that cannot be right (before any OSCORE or cryptography module is imported)."""
    letters = normalise_code(code)
    from vaxelbox.mgmt import oscore_contexts  # the OSCORE stack: only now (see that module)

    return oscore_contexts.pairing_context(letters, id_context, appliance=appliance)


class PairingSecret:
    """The appliance's pairing secret: created on first boot, kept 0600 in the data directory."""

    def __init__(self, directory: Path, on_refused: Callable[[str, int], None] | None = None) -> None:
        """`on_refused(peer, attempts)`: pairing attempts with a wrong code, `attempts` of them since
        the last call, the latest from `peer` ("HOST:PORT"); called at once for the first, then at
        most every REFUSALS_TOLD_EVERY s, with those in between counted (from the event loop)."""
        self._on_refused = on_refused
        self._refusals, self._refusals_told, self._refused_by = 0, -REFUSALS_TOLD_EVERY, ""
        self._path = directory / "pairing-code"
        self._attempts_path = directory / "pairing-attempts"
        if not self._path.exists():
            letters = base64.b32encode(secrets.token_bytes(15)).decode()  # 120 bits, 24 letters
            write_private(self._path, format_code(letters[:20]) + "\n")
        self.code = self._path.read_text().strip()
        self._attempts = dict.fromkeys(self._read_attempts())  # ordered: oldest first

    def context_for(self, unprotected: dict[Any, Any]) -> "EphemeralContext | None":
        """A fresh bootstrap context for a request naming the pairing kid and a new ID context."""
        kid = unprotected.get(COSE_KID)
        id_context = unprotected.get(COSE_KID_CONTEXT)
        if kid != CLIENT_PAIRING_ID or not id_context or len(id_context) < 8:
            return None
        if id_context.hex() in self._attempts:
            return None  # a replayed attempt: answered as an unknown context
        context = pairing_context(self.code, id_context, appliance=True)
        context.on_refused = self._refused
        return context

    def _refused(self, peer: str) -> None:
        self._refusals += 1
        self._refused_by = peer
        wait = self._refusals_told + REFUSALS_TOLD_EVERY - time.monotonic()
        if wait <= 0:
            self._tell_refusals()
        elif self._refusals == 1:  # the first held back: told when the interval ends, not lost
            asyncio.get_running_loop().call_later(wait, self._tell_refusals)

    def _tell_refusals(self) -> None:
        if self._on_refused is not None and self._refusals:
            self._on_refused(self._refused_by, self._refusals)
        self._refusals, self._refusals_told = 0, time.monotonic()

    def spend(self, id_context: bytes) -> None:
        """Remember an attempt that decrypted, so it cannot be replayed (survives restarts)."""
        self._attempts[id_context.hex()] = None
        while len(self._attempts) > MAX_REMEMBERED_ATTEMPTS:  # 64 random bits: old ones will not recur
            del self._attempts[next(iter(self._attempts))]
        write_private(self._attempts_path, json.dumps(list(self._attempts)))

    def _read_attempts(self) -> list[str]:
        try:
            return list(json.loads(self._attempts_path.read_text()))
        except (FileNotFoundError, ValueError):
            return []


@dataclass(frozen=True)
class Installer:
    id: str  # hex of the installer's sender ID
    name: str
    created: float


class Installers:
    """The appliance's installer contexts, one directory each under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._loaded: dict[bytes, InstallerContext] = {}
        for leftover in self.directory.glob(_REVOKED + "*"):  # a revocation a power cut interrupted
            shutil.rmtree(leftover, ignore_errors=True)

    def create(self, name: str) -> dict[str, str]:
        """A new installer context; returns what the installer's side needs (hex fields)."""
        while True:
            installer_id = secrets.token_bytes(4)
            if installer_id != CLIENT_PAIRING_ID and not (self.directory / installer_id.hex()).exists():
                break
        secret, salt = secrets.token_bytes(32), secrets.token_bytes(8)
        path = self.directory / installer_id.hex()
        path.mkdir(mode=0o700)
        write_private(
            path / "secret.json",
            json.dumps({"secret_hex": secret.hex(), "salt_hex": salt.hex()}),
        )
        write_private(
            path / "settings.json",
            json.dumps({"sender-id_hex": APPLIANCE_ID.hex(), "recipient-id_hex": installer_id.hex()}),
        )
        write_private(path / "installer.json", json.dumps({"name": name, "created": time.time()}))
        return {
            "installer": installer_id.hex(),
            "secret": secret.hex(),
            "salt": salt.hex(),
            "sender_id": installer_id.hex(),
            "recipient_id": APPLIANCE_ID.hex(),
        }

    def all(self) -> list[Installer]:
        return sorted(self._each(), key=lambda i: i.created)

    def revoke(self, installer_id: str) -> bool:
        """Delete an installer's context; False if there is no such installer. The installer may
        be the one asking: its context still protects this one answer (see InstallerContext.retire)."""
        path = self.directory / installer_id
        if not _INSTALLER_ID.fullmatch(installer_id) or not path.is_dir():
            return False
        gone = self.directory / (_REVOKED + installer_id)
        shutil.rmtree(gone, ignore_errors=True)
        path.rename(gone)  # atomic: no request finds the context from here on, even after a crash
        context = self._loaded.pop(bytes.fromhex(installer_id), None)
        if context is not None:
            context.retire()
        shutil.rmtree(gone)
        return True

    def close(self) -> None:
        """Persist every loaded context's counters and drop their locks (agent shutdown)."""
        for context in self._loaded.values():
            release(context)
        self._loaded.clear()

    def get_oscore_context_for(self, unprotected: dict[Any, Any]) -> "InstallerContext | None":
        """aiocoap's credentials hook: the installer context a request names, if it still exists."""
        kid = unprotected.get(COSE_KID)
        if not isinstance(kid, bytes) or len(kid) != 4 or unprotected.get(COSE_KID_CONTEXT):
            return None
        path = self.directory / kid.hex()
        if not (path / "secret.json").exists():
            self._loaded.pop(kid, None)  # revoked, possibly by another process
            return None
        if kid not in self._loaded:
            from vaxelbox.mgmt.oscore_contexts import InstallerContext  # a protected request came

            self._loaded[kid] = InstallerContext(str(path), kid.hex())
        return self._loaded[kid]

    def _each(self) -> Iterator[Installer]:
        for path in self.directory.iterdir():
            if not _INSTALLER_ID.fullmatch(path.name):
                continue  # e.g. a revocation in progress
            try:
                info = json.loads((path / "installer.json").read_text())
            except (OSError, ValueError):
                continue
            yield Installer(path.name, str(info.get("name", "")), float(info.get("created", 0)))


class PairingCredentials:
    """aiocoap's credentials hook for bootstrap contexts."""

    def __init__(self, secret: PairingSecret) -> None:
        self.secret = secret

    def get_oscore_context_for(self, unprotected: dict[Any, Any]) -> "EphemeralContext | None":
        return self.secret.context_for(unprotected)


def release(context: "FilesystemSecurityContext") -> None:
    """Write back the sequence number actually reached and remove the lock file now, rather than
    whenever the garbage collector gets to it (aiocoap offers no public call for this yet)."""
    if context.lockfile is not None:
        context._destroy()


def write_private(path: Path, text: str) -> None:
    """Write `text` atomically, readable by the owner only (a crash leaves the old file or the new)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
