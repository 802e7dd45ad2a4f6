"""Via header values (RFC 3261 §20.42): transport, sent-by, branch, received, rport."""

import re
from dataclasses import dataclass, field

from vaxelbox.memo import Memo
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.syntax import TOKEN, format_params, parse_params, split_list
from vaxelbox.sip.uri import split_hostport

# sent-protocol with LWS allowed around each '/', then LWS, then the rest.
_SENT_PROTOCOL = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*(\S+?)\s+(.*)", re.S | re.I)
_COLON_LWS = re.compile(r"\s*:\s*")
MAGIC_COOKIE = "z9hG4bK"


@dataclass(slots=True)
class Via:
    transport: str  # upper case: UDP, TCP, TLS, WS, or an extension token
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via_list(text: str) -> list[Via]:
    return [parse_via(value) for value in split_list(text)]


# Validated "SIP/2.0/UDP host:port" -> (transport, host, port): every phone and the cloud write
# the same one on each message; the parameters (a fresh branch each time) are parsed every time.
_SENT: Memo[str, tuple[str, str, int | None]] = Memo()


def parse_via(text: str) -> Via:
    head, semicolon, params = text.partition(";")
    sent = _SENT.get(head)
    if sent is None:
        via = _parse_via(text)
        _SENT.keep(head, (via.transport, via.host, via.port))
        return via
    return Via(*sent, parse_params(semicolon + params))


def _parse_via(text: str) -> Via:
    match = _SENT_PROTOCOL.fullmatch(text)
    if not match:
        raise SipSyntaxError("malformed Via" if text.strip() else "empty Via value")
    transport, rest = match.groups()
    if not TOKEN.fullmatch(transport):
        raise SipSyntaxError(f"malformed Via transport {transport[:20]!r}")
    sent_by, semicolon, params = rest.partition(";")
    host, port = split_hostport(_COLON_LWS.sub(":", sent_by.strip()))
    return Via(transport.upper(), host, port, parse_params(semicolon + params))
