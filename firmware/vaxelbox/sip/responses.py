"""Building responses: to a parsed request (§8.2.6), or to one too broken to parse (a stateless 400)."""

import re
import secrets

from vaxelbox.sip.message import Header, Request, Response, header_tag

_ECHOED = ("via", "from", "to", "call-id", "cseq")
_HEADER_LINE = re.compile(rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*(.*?)\r?$", re.I | re.M)


def new_tag() -> str:
    return secrets.token_hex(6)


def make_response(request: Request, status: int, reason: str, *, to_tag: str | None = None) -> Response:
    """A response that echoes the request's Via, From, To, Call-ID and CSeq; a To tag for finals."""
    headers = [h for h in request.headers if h.key in _ECHOED]  # shared: a Header never changes
    if status > 100 and request.to_tag is None:
        tag = to_tag or new_tag()
        headers = [Header(h.name, f"{h.value};tag={tag}") if h.key == "to" else h for h in headers]
    return Response(status, reason, headers)


def error_response_for_raw(
    data: bytes, status: int, reason: str, *, to_tag: str | None = None, extra: tuple[str, ...] = ()
) -> bytes | None:
    """A stateless error response to a request, from whatever Via, From, To, Call-ID and CSeq lines
    its raw bytes have (one that failed to parse, or one refused before parsing). `to_tag` is added
    to a To without a tag; `extra` lines (e.g. "Retry-After: 5") go before Content-Length.

    Without a Via there is nowhere RFC 3261 lets us send it, so None.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = [f"SIP/2.0 {status} {_phrase(reason)}"]
    has_via = False
    for match in _HEADER_LINE.finditer(head):
        name = match.group(1).decode("ascii")
        value = match.group(2).decode("utf-8", "replace").replace("\r", "").replace("\n", "")
        has_via |= name.lower() in ("via", "v")
        if to_tag and name.lower() in ("to", "t") and header_tag(value) is None:
            value = f"{value};tag={to_tag}"
        lines.append(f"{name}: {value}")
    if not has_via:
        return None
    lines += extra
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _phrase(reason: str) -> str:
    """A reason phrase safe to put on a status line: printable, one line, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in reason)
    return cleaned[:100]
