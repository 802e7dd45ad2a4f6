"""RFC 3261 §25 lexical pieces shared by the header parsers: tokens, quoted strings, lists, params."""

import re
from collections.abc import Mapping
from types import MappingProxyType

from vaxelbox.sip.errors import SipSyntaxError

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# gen-value: token, host (IPv6 with or without brackets, as in received=), or quoted-string. An
# IPv6 host may carry a zone (`fe80::1%eth0`): what a link-local phone's datagram comes from, which
# the edge stamps as received= and must read back (RFC 4007 §11; no SIP grammar has a zone there).
_PARAM_VALUE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~]+|\[?[0-9A-Fa-f:.]+(?:%[A-Za-z0-9\-._~]+)?\]?|\"(?:[^\"\\]|\\.)*\"", re.S
)
_LWS = re.compile(r"\s+")


def is_token(text: str) -> bool:
    return TOKEN.fullmatch(text) is not None


def is_number(text: str) -> bool:
    """ASCII digits only (RFC 3261 §25.1 DIGIT): str.isdigit() is also true for '²', which int()
    cannot read, and for other scripts' digits."""
    return text.isascii() and text.isdigit()


def quoted_string_end(text: str, start: int) -> int:
    """Index just past the closing quote of the quoted string opening at `start`."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            return i + 1
        i += 1
    raise SipSyntaxError("unterminated quoted string")


_OUTSIDE_BRACKETS = {sep: re.compile(rf"{re.escape(sep)}(?![^<]*>)") for sep in ",;"}


def split_list(text: str, separator: str = ",") -> list[str]:
    """Split on `separator` outside quoted strings and <...>; RFC 3261 §7.3.1 header lists."""
    if '"' not in text:
        if "<" not in text:
            return text.split(separator)
        return _OUTSIDE_BRACKETS[separator].split(text)  # in C: a separator not inside <...>
    parts: list[str] = []
    start = i = 0
    depth = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = quoted_string_end(text, i)
            continue
        if char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


# One `;name[=value]` with the LWS around it; `parse_params` walks a text with it in C.
_PARAM = re.compile(
    rf"[ \t\r\n]*;[ \t\r\n]*({TOKEN.pattern})[ \t\r\n]*(?:=[ \t\r\n]*({_PARAM_VALUE.pattern})[ \t\r\n]*)?",
    re.S,
)


# Parameters as phones and proxies write them: no LWS, no quoted or IPv6 values. Checked whole in
# one match, then split with str methods; anything else is walked parameter by parameter.
_PLAIN_PARAMS = re.compile(rf"(?:;{TOKEN.pattern}(?:={TOKEN.pattern})?)+")


def parse_params(text: str) -> dict[str, str | None]:
    """`;name=value;flag` (with LWS anywhere around ';' and '=') as {lower-case name: value}.
    Raises SipSyntaxError saying what is wrong."""
    if _PLAIN_PARAMS.fullmatch(text):
        params: dict[str, str | None] = {}
        for part in text[1:].split(";"):
            name, equals, value = part.partition("=")
            params[name.lower()] = value if equals else None
        return params
    params = {}
    position, end = 0, len(text)
    while position < end:  # LWS, a quoted or an IPv6 value: a regex match per parameter
        match = _PARAM.match(text, position)
        if match is None:
            return _parse_params_slowly(text)  # an odd or wrong one: read piece by piece, says why
        params[match[1].lower()] = match[2]
        position = match.end()
    return params


def _parse_params_slowly(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    text = text.strip()
    if not text.startswith(";"):
        raise SipSyntaxError(f"expected ';' before parameters, got {text[:20]!r}")
    for part in split_list(text[1:], ";"):
        name, equals, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipSyntaxError(
                "empty or malformed parameter" if not name else f"bad parameter name {name!r}"
            )
        if equals:
            value = value.strip()
            if not _PARAM_VALUE.fullmatch(value):
                raise SipSyntaxError(f"bad value for parameter {name!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def value_and_params(text: str | None) -> tuple[str, dict[str, str | None]] | None:
    """A header value of the shape `token *(;param)` (Event, Subscription-State) -> (the value as
    written, stripped; its parameters); None when absent, empty or malformed."""
    if text is None:
        return None
    value, _, params = text.partition(";")
    try:
        parsed = parse_params(";" + params) if params else {}
    except SipSyntaxError:
        return None
    return (value.strip(), parsed) if value.strip() else None


Params = Mapping[str, str | None]  # parsed `;name=value` parameters: lower-case name -> value or None


def frozen_params(params: Params) -> Params:
    """A read-only copy of `params`, for the parsed values the relay shares (sip.uri, sip.address)."""
    return params if type(params) is MappingProxyType else MappingProxyType(dict(params))


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def has_lws(text: str) -> bool:
    return _LWS.search(text) is not None
