"""Flow tokens: the user part of our Path and Record-Route URIs names the phone's flow (RFC 5626 §5.2).

When the cloud sends a request back for a phone, the token says which
transport and address the phone registered from, so the request goes out on
that flow (or that NAT binding) and not to a guessed address.
"""

import base64
import hashlib
import hmac
import secrets

_KEY = secrets.token_bytes(16)  # per process: tokens die with the flows they name


def make_token(transport: str, host: str, port: int) -> str:
    payload = f"{transport}|{host}|{port}".encode()
    mac = hmac.new(_KEY, payload, hashlib.sha256).digest()[:6]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def read_token(token: str) -> tuple[str, str, int] | None:
    """(transport, host, port) of a token we made, or None for anything else (forged, foreign)."""
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
