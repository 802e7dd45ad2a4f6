"""SIP and SIPS URIs (RFC 3261 §19.1, §25.1), IPv6 references per RFC 5118, other schemes opaque."""

import ipaddress
import re
from dataclasses import dataclass, field

from vaxelbox.memo import Memo
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.syntax import Params, format_params, frozen_params, is_number

_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|{_ESCAPED})+")
_PASSWORD = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|{_ESCAPED})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PARAM_PART = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|{_ESCAPED})+")
_HEADERS = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$=&]|{_ESCAPED})+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_OPAQUE = re.compile(r"[^\s<>\"]+")


@dataclass(frozen=True, slots=True)
class SipUri:
    """A value, shared: every parse of the same text gives the same object (issue 12), so nothing
    changes one (frozen, its params read-only); `dataclasses.replace` makes another."""

    scheme: str  # "sip" or "sips", lower case
    host: str  # IPv6 without brackets; as written otherwise
    port: int | None = None
    user: str | None = None  # escaped, as written
    password: str | None = None
    params: Params = field(default_factory=dict)  # read-only once made
    headers: str | None = None  # raw text after '?'
    # The text `str()` gives, once made: a relay writes the same URI several times (the forwarded
    # Request-URI, the loop hash of each branch).
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozen_params(self.params))

    @property
    def host_reference(self) -> str:
        """The host as it appears in a URI: IPv6 in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        if self._text is None:
            text = f"{self.scheme}:"
            if self.user is not None:
                text += self.user + (f":{self.password}" if self.password is not None else "") + "@"
            text += self.host_reference + (f":{self.port}" if self.port is not None else "")
            text += format_params(self.params)
            object.__setattr__(self, "_text", text + (f"?{self.headers}" if self.headers else ""))
        return self._text  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme this element does not interpret (tel:, isbn:, http:, ...), kept verbatim."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise SipSyntaxError(f"not a URI: {text[:40]!r}")
    lowered = scheme.lower()
    if lowered not in ("sip", "sips"):
        if not _OPAQUE.fullmatch(rest):
            raise SipSyntaxError(f"malformed {scheme} URI")
        return AbsoluteUri(scheme, rest)
    return _parse_sip(lowered, rest)


# Validated SIP URI text -> its SipUri, shared by every parse of that text: a relay reads the same
# few URIs over and over (Request-URIs, Route and Record-Route entries, Contacts of the office's
# phones). Bounded: cleared when full.
UriParts = tuple[str, int | None, str | None, str | None, Params, str | None]
_PARTS: Memo[tuple[str, str], SipUri] = Memo()


def _parse_sip(scheme: str, rest: str) -> SipUri:
    uri = _PARTS.get((scheme, rest))
    if uri is None:
        uri = _PARTS.keep((scheme, rest), SipUri(scheme, *_sip_parts(rest)))
    return uri


def _sip_parts(rest: str) -> UriParts:
    """(host, port, user, password, params, headers) of a SIP URI after its scheme."""
    user = password = None
    if "@" in rest:  # '@' never occurs unescaped after the userinfo
        userinfo, _, rest = rest.partition("@")
        user, colon, password_text = userinfo.partition(":")
        if not _USER.fullmatch(user):
            raise SipSyntaxError("malformed user part in URI")
        if colon:
            if not _PASSWORD.fullmatch(password_text):
                raise SipSyntaxError("malformed password in URI")
            password = password_text
    rest, question, headers = rest.partition("?")
    if question and not _HEADERS.fullmatch(headers):
        raise SipSyntaxError("malformed headers in URI")
    hostport, _, param_text = rest.partition(";")
    host, port = split_hostport(hostport)
    params: dict[str, str | None] = {}
    if param_text or rest.endswith(";"):
        for part in param_text.split(";"):
            name, equals, value = part.partition("=")
            if not _PARAM_PART.fullmatch(name) or (equals and not _PARAM_PART.fullmatch(value)):
                raise SipSyntaxError("malformed URI parameter")
            params[name.lower()] = value if equals else None
    return host, port, user, password, params, headers if question else None


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host, port). IPv6 comes back without brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipSyntaxError("unterminated IPv6 reference")
        host = _ipv6(text[1:end])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipSyntaxError("junk after IPv6 reference")
        return host, _port(rest[1:])
    host, colon, port_text = text.partition(":")
    if not _HOSTNAME.fullmatch(host):
        raise SipSyntaxError(f"malformed host {host[:40]!r}")
    return host, _port(port_text) if colon else None


def _port(text: str) -> int:
    if not is_number(text) or len(text) > 5 or int(text) > 65535:
        raise SipSyntaxError(f"malformed port {text[:10]!r}")
    return int(text)


def _ipv6(text: str) -> str:
    """The address as written (it is compared as an address, not as text), once validated."""
    # RFC 5118 §4.10: the RFC 3261 ABNF admits a third colon before an embedded IPv4; tolerate it.
    candidate = text.replace(":::", "::", 1) if ":::" in text else text
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        raise SipSyntaxError(f"malformed IPv6 reference [{text[:40]}]") from None
    return candidate


# §19.1.4: these URI parameters must match when either URI has them; others only when both do.
_ALWAYS_COMPARED = ("user", "ttl", "method", "maddr")


def uri_equal(a: Uri, b: Uri) -> bool:
    """RFC 3261 §19.1.4 URI equality: scheme and host case-insensitive (IPv6 as addresses, so
    `[2001:DB8:0:0::A]` equals `[2001:db8::a]`), user and password case-sensitive after %-escapes
    are undone, a default port not equal to an absent one, parameters compared case-insensitively
    (user, ttl, method and maddr whenever either URI has them, others when both do), headers ignored
    here (contacts never differ by them). Other schemes compare as text, scheme case-insensitive."""
    if isinstance(a, AbsoluteUri) or isinstance(b, AbsoluteUri):
        return (
            isinstance(a, AbsoluteUri)
            and isinstance(b, AbsoluteUri)
            and (a.scheme.lower(), a.rest) == (b.scheme.lower(), b.rest)
        )
    same = (a.scheme, _unescaped(a.user), _unescaped(a.password), a.port, _host_key(a.host)) == (
        b.scheme, _unescaped(b.user), _unescaped(b.password), b.port, _host_key(b.host),
    )  # fmt: skip
    compared = [
        n for n in {*a.params, *b.params} if n in _ALWAYS_COMPARED or (n in a.params and n in b.params)
    ]
    return same and all((a.params.get(n) or "").lower() == (b.params.get(n) or "").lower() for n in compared)


def _unescaped(text: str | None) -> str | None:
    return None if text is None else re.sub(_ESCAPED, lambda m: chr(int(m.group(0)[1:], 16)), text)


def _host_key(host: str) -> str:
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host.lower()
    return host.lower()
