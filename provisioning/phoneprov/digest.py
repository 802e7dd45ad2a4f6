"""HTTP Digest authentication, server side (RFC 7616), for phones re-fetching their files.

Phones speak Digest with MD5 (some also SHA-256); both are offered. Nonces
are stateless: a timestamp signed with a per-process key, so a restart only
costs phones one extra challenge and nothing is stored per request.
"""

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

REALM = "vaxelbox provisioning"
NONCE_LIFETIME = 300.0
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True)
class Verdict:
    username: str | None  # the authenticated user, or None
    stale: bool = False  # right password, expired nonce: the client retries without asking the user


class DigestAuth:
    def __init__(self, clock: Callable[[], float] = time.time, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key or secrets.token_bytes(32)

    def challenges(self, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, the strongest first (RFC 7616 section 3.7)."""
        nonce = self._nonce()
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{REALM}", qop="auth", algorithm={algorithm}, nonce="{nonce}"{extra}'
            for algorithm in ("SHA-256", "MD5")
        ]

    def verify(
        self, method: str, target: str, header: str | None, password_of: Callable[[str], str | None]
    ) -> Verdict:
        """Check an Authorization header for the request `method target`; `password_of(username)`
        is None for an unknown user."""
        if not header or header[:7].lower() != "digest ":
            return Verdict(None)
        params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(header[7:])}
        username, nonce, uri, response = (params.get(k) for k in ("username", "nonce", "uri", "response"))
        algorithm = params.get("algorithm", "MD5").upper()
        if not (username and nonce and uri and response) or algorithm not in _HASHES or uri != target:
            return Verdict(None)
        password = password_of(username)
        if password is None or params.get("realm") != REALM:
            return Verdict(None)
        expected = _response(_HASHES[algorithm], username, password, method, uri, nonce, params)
        if not hmac.compare_digest(expected, response.lower()):
            return Verdict(None)
        if not self._nonce_valid(nonce):
            return Verdict(None, stale=True)
        return Verdict(username)

    def _nonce(self) -> str:
        stamp = f"{int(self._clock()):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def _nonce_valid(self, nonce: str) -> bool:
        stamp, _, signature = nonce.partition(".")
        if not hmac.compare_digest(signature, self._sign(stamp)):
            return False
        try:
            return 0 <= self._clock() - int(stamp, 16) <= NONCE_LIFETIME
        except ValueError:
            return False

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]


def _response(
    hash_function: Callable[..., "hashlib._Hash"],
    username: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    params: dict[str, str],
) -> str:
    def h(text: str) -> str:
        return hash_function(text.encode()).hexdigest()

    ha1 = h(f"{username}:{REALM}:{password}")
    ha2 = h(f"{method}:{uri}")
    if params.get("qop") == "auth":
        return h(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")  # RFC 2069 form, still sent by old firmware
