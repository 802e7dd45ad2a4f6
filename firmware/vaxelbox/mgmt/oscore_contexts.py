"""The OSCORE security contexts behind management (see vaxelbox.mgmt.security for who gets one).

This module imports aiocoap.oscore and cryptography, which the running agent
loads only when a request protected with OSCORE arrives (vaxelbox.mgmt.oscore_site):
they cost ~12 MiB of RSS for life (issue 12). vaxelbox.mgmt.security imports
it on first use; import it directly only where OSCORE is certainly needed.
"""

from collections.abc import Callable
from typing import Any

from aiocoap import oscore
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from vaxelbox.mgmt.security import (
    APPLIANCE_ID,
    CLIENT_PAIRING_ID,
    INSTALLER_CLAIM_PREFIX,
    PAIRING_CLAIM,
)


class EphemeralContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """An in-memory OSCORE context: lives for one pairing attempt, so nothing to persist."""

    def __init__(
        self, master_secret: bytes, id_context: bytes, sender_id: bytes, recipient_id: bytes
    ) -> None:
        self.alg_aead = oscore.algorithms[oscore.DEFAULT_ALGORITHM]
        self.hashfun = oscore.hashfunctions[oscore.DEFAULT_HASHFUNCTION]
        self.id_context = id_context
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.derive_keys(b"vaxelbox-pairing", master_secret)
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.authenticated_claims = [PAIRING_CLAIM]
        # Told the peer's address when a request does not decrypt: a wrong code (the appliance's side).
        self.on_refused: Callable[[str], None] | None = None

    def unprotect(self, protected_message: Any, request_id: Any = None) -> Any:
        try:
            return super().unprotect(protected_message, request_id)
        except oscore.ProtectionInvalid:
            if self.on_refused is not None:
                remote = protected_message.remote
                self.on_refused(str(getattr(remote, "hostinfo", remote)))
            raise

    def post_seqnoincrease(self) -> None:
        pass  # never persisted: the context dies with the attempt


def pairing_context(letters: str, id_context: bytes, *, appliance: bool) -> EphemeralContext:
    """The bootstrap context for one attempt, from either side; `letters`: a normalised code
    (vaxelbox.mgmt.security.normalise_code)."""
    master_secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"vaxelbox pairing v1", info=b"").derive(
        letters.encode()
    )
    ours, theirs = (APPLIANCE_ID, CLIENT_PAIRING_ID) if appliance else (CLIENT_PAIRING_ID, APPLIANCE_ID)
    return EphemeralContext(master_secret, id_context, sender_id=ours, recipient_id=theirs)


class InstallerContext(oscore.FilesystemSecurityContext):
    """An installer's file context; its claim names the installer."""

    def __init__(self, basedir: str, installer_id: str) -> None:
        super().__init__(basedir)
        self.installer_id = installer_id
        self.revoked = False

    @property
    def authenticated_claims(self) -> list[str]:  # type: ignore[override]
        return [INSTALLER_CLAIM_PREFIX + self.installer_id]

    def _store(self) -> None:
        if not self.revoked:  # revoked: its directory is gone, it only answers its last request
            super()._store()

    def retire(self) -> None:
        """Revoked: drop the lock, never touch the disk again, but keep the keys, so the answer to
        the request being handled (an installer revoking itself) still goes out protected."""
        self.revoked = True
        if self.lockfile is not None:
            self.lockfile.release()
            self.lockfile = None
