"""HTTP Digest authentication, server side (RFC 7616), for phones re-fetching their files.

Phones speak Digest with MD5 (some also SHA-256); both are offered. Nonces
are stateless: a timestamp signed with a per-process key, so a restart only
costs phones one extra challenge and nothing is stored per request. The
mechanics are shared with SIP (`vaxelbox.sip.digest`); what is particular to
HTTP here: the realm, `uri` equal to the request target exactly, RFC 2069
responses (no qop) still accepted from old firmware, and no replay memory
(a file fetched twice is harmless, and some firmware re-sends nc=00000001).
"""

import hashlib
import time
from collections.abc import Callable

from vaxelbox.sip import digest as core
from vaxelbox.sip.digest import Verdict

__all__ = ["NONCE_LIFETIME", "REALM", "DigestAuth", "Verdict"]

REALM = "vaxelbox provisioning"
NONCE_LIFETIME = 300.0


class DigestAuth(core.DigestAuthenticator):
    def __init__(self, clock: Callable[[], float] = time.time, key: bytes | None = None) -> None:
        super().__init__(
            REALM, lifetime=NONCE_LIFETIME, clock=clock, key=key, allow_rfc2069=True, replay_memory=0
        )


def _response(
    hash_function: Callable[..., "hashlib._Hash"],
    username: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    params: dict[str, str],
) -> str:
    """The expected `response` under this module's REALM, for `params` qop, nc and cnonce."""
    return core.response_digest(
        hash_function, username, REALM, password, method, uri, nonce,
        params.get("qop"), params.get("nc", ""), params.get("cnonce", ""),
    )  # fmt: skip
