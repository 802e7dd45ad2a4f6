"""Flow tokens: the user part of our Path and Record-Route URIs names the phone's flow (RFC 5626 §5.2).

When the cloud sends a request back for a phone, the token says which
transport and address the phone registered from, so the request goes out on
that flow (or that NAT binding) and not to a guessed address.
"""

import base64
import hashlib
import hmac
import secrets

from vaxelbox.memo import Memo

_KEY = secrets.token_bytes(16)  # per process: tokens die with the flows they name


# Tokens made and tokens verified, so each message does not cost an HMAC or two: an office has a few
# hundred flows. Only valid tokens are kept; both are bounded (cleared when full).
_MADE: Memo[tuple[str, str, int], str] = Memo()
_READ: Memo[str, tuple[str, str, int]] = Memo()


def make_token(transport: str, host: str, port: int) -> str:
    token = _MADE.get((transport, host, port))
    if token is None:
        payload = f"{transport}|{host}|{port}".encode()
        mac = hmac.new(_KEY, payload, hashlib.sha256).digest()[:6]
        token = base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")
        _MADE.keep((transport, host, port), token)
    return token


def read_token(token: str) -> tuple[str, str, int] | None:
    """(transport, host, port) of a token we made, or None for anything else (forged, foreign)."""
    target = _READ.get(token)
    if target is None:
        target = _verify(token)
        if target is not None:
            _READ.keep(token, target)
    return target


def _verify(token: str) -> tuple[str, str, int] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None
    mac, payload = raw[:6], raw[6:]
    if not hmac.compare_digest(mac, hmac.new(_KEY, payload, hashlib.sha256).digest()[:6]):
        return None
    try:
        transport, host, port = payload.decode().split("|")
        return transport, host, int(port)
    except ValueError:
        return None
