"""name-addr and addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 §20.10)."""

from dataclasses import dataclass, field

from vaxelbox.memo import Memo
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.syntax import (
    Params,
    format_params,
    frozen_params,
    has_lws,
    parse_params,
    quoted_string_end,
    split_list,
)
from vaxelbox.sip.uri import SipUri, Uri, parse_uri


@dataclass(frozen=True, slots=True)
class Address:
    """A value, shared like sip.uri.SipUri: frozen, its params read-only."""

    uri: Uri
    display: str | None = None  # as written, quotes included
    params: Params = field(default_factory=dict)  # read-only once made

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozen_params(self.params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise SipSyntaxError(f"not a SIP URI: {self.uri}")
        return self.uri

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


# Validated address text -> its Address, shared by every parse of that text: the relay reads the
# same Route, From and Contact values again and again (issue 12: every Route of every ACK and BYE).
# Bounded.
_PARTS: Memo[str, Address] = Memo()


def parse_address(text: str) -> Address:
    address = _PARTS.get(text)
    if address is None:
        address = _PARTS.keep(text, _parse_address(text))
    return address


def _parse_address(text: str) -> Address:
    text = text.strip()
    if not text:
        raise SipSyntaxError("empty address")
    if text.startswith('"'):
        end = quoted_string_end(text, 0)
        display: str | None = text[:end]
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipSyntaxError("expected <URI> after the display name")
        return _name_addr(display, rest)
    bracket = text.find("<")
    if bracket >= 0:
        # Liberal in what we accept: RFC 3261 wants a display name that is not all tokens quoted,
        # but PBXs write `Åsa Öberg <sip:...>` unquoted; it is kept as written, never interpreted.
        display = text[:bracket].strip() or None
        if display and '"' in display:
            raise SipSyntaxError("a stray quote in the display name")
        return _name_addr(display, text[bracket:])
    return _addr_spec(text)


def parse_address_list(text: str) -> list[Address]:
    values = split_list(text)
    if any(not v.strip() for v in values):
        raise SipSyntaxError("empty element in address list")
    return [parse_address(v) for v in values]


def _name_addr(display: str | None, text: str) -> Address:
    close = text.find(">")
    if close < 0:
        raise SipSyntaxError("missing '>' after URI")
    uri_text = text[1:close]
    if has_lws(uri_text):
        raise SipSyntaxError("white space inside <URI>")
    return Address(parse_uri(uri_text), display, parse_params(text[close + 1 :]))


def _addr_spec(text: str) -> Address:
    # Without <>, ';' starts the header's parameters and '?' or ',' cannot appear (§20.10).
    uri_text, semicolon, params_text = text.partition(";")
    uri_text = uri_text.strip()
    if has_lws(uri_text):
        raise SipSyntaxError("white space inside URI")
    if "?" in uri_text and uri_text.lower().startswith(("sip:", "sips:")):
        raise SipSyntaxError("a URI with headers must be enclosed in <>")
    return Address(parse_uri(uri_text), None, parse_params(semicolon + params_text))
