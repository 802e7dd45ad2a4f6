"""SIP requests and responses: parse, validate, edit, serialise (RFC 3261 §7, §20; RFC 4475).

A message keeps every header line as it arrived and writes it back byte for
byte unless it was changed, so unknown headers pass through untouched.

What every message needs on the forwarding path is validated on parse: the
start line, the top Via, Call-ID, CSeq, the From and To tags, Max-Forwards
and Content-Length. A request with a malformed one is refused with a 400
that says which; a response is dropped (and logged). Everything else (the
rest of the Vias, the From and To URIs and display names, Contact, Route,
Record-Route, and every other header) is parsed only when something asks
for it: a proxy does not refuse a message for a field it does not use (RFC
3261 §16.3 step 1), and a field it never reads is relayed byte for byte. A
field found malformed when it is read raises SipSyntaxError then; the
transaction layer answers that request 400 (or drops that response) too.
"""

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from vaxelbox.memo import Memo
from vaxelbox.sip.address import Address, parse_address, parse_address_list
from vaxelbox.sip.errors import SipParseError, SipSyntaxError
from vaxelbox.sip.syntax import is_number, is_token, split_list
from vaxelbox.sip.uri import SipUri, Uri, parse_uri
from vaxelbox.sip.via import Via, parse_via, parse_via_list

CRLF = "\r\n"
MAX_CSEQ = 2**32 - 1

# Compact forms (RFC 3261 §7.3.3 and the extensions that define one) -> canonical names.
COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
    "y": "Identity", "n": "Identity-Info",
}  # fmt: skip
SINGLE_VALUED = ("call-id", "from", "to", "cseq", "max-forwards", "content-type")  # checked in this order
_ONCE = frozenset((*SINGLE_VALUED, "content-length"))  # a second line of these may be a fault
_VERSION = re.compile(r"SIP/\d+\.\d+", re.I)
_FOLD = re.compile(r"\r\n[ \t]+")
_LINE_END = re.compile(r"\r\n(?![ \t])")  # a line starting with SP or HTAB continues the last one
# Header key -> the cached properties holding its parsed forms.
_PARSED_FROM = {
    "via": ("vias", "top_via"), "from": ("from_", "from_tag"), "to": ("to", "to_tag"),
    "call-id": ("call_id",), "cseq": ("cseq",), "contact": ("contacts",), "route": ("routes",),
    "record-route": ("record_routes",), "max-forwards": ("max_forwards",),
}  # fmt: skip
_LIST_OF = {"via": "vias", "route": "routes", "record-route": "record_routes"}  # key -> parsed list
_TAG = re.compile(r";\s*tag\s*=\s*([^;,\s]+)", re.I)
_SPACE = re.compile(r"\s")


T = TypeVar("T")


class cached(Generic[T]):  # lower case: a decorator, like functools.cached_property
    """functools.cached_property without its lock: Python 3.11 takes an RLock on each first read,
    a measurable share of a relay's time (issue 12). Messages are used from one thread."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.func(instance)
        return value


_KEYS: dict[str, str] = {}  # header name as written -> its key: a few dozen names in practice
_KNOWN_NAMES = 4096  # bound on _KEYS and _TOKEN_NAMES, whatever names peers invent


def header_key(name: str) -> str:
    """The lower-case canonical name under which a header is looked up."""
    key = _KEYS.get(name)
    if key is None:
        lowered = name.lower()
        key = COMPACT[lowered].lower() if len(lowered) == 1 and lowered in COMPACT else lowered
        if len(_KEYS) < _KNOWN_NAMES:
            _KEYS[name] = key
    return key


class Header:
    """One header line: its name as written, its unfolded value, and its text on the wire (`raw`: as
    received, folding and all, or "Name: value" for a line made here).

    Never changed once made (edits replace the line in a message's list), so forwarded copies and
    responses share the received lines instead of copying them."""

    __slots__ = ("key", "name", "raw", "value")

    def __init__(self, name: str, value: str, raw: str | None = None) -> None:
        self.name = name
        self.key = _KEYS.get(name) or header_key(name)
        self.value = value
        self.raw = raw if raw is not None else f"{name}: {value}"  # what to_bytes writes

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.value!r})"


class Message:
    """What requests and responses share: headers, body, and the parsed headers a proxy needs."""

    def __init__(self, headers: list[Header], body: bytes) -> None:
        self.headers = headers
        self.body = body

    # -- reading headers -------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The value of the first header called `name` (long or compact form), or None."""
        return self._firsts.get(_KEYS.get(name) or header_key(name))

    @cached
    def _firsts(self) -> dict[str, str]:
        """Header key -> the value of its first line, made in one pass: `get` is the hottest read of
        a relay (issue 12), a dozen per message. Each edit reads its header's entry again (`_forget`)."""
        return {header.key: header.value for header in reversed(self.headers)}

    def firsts_with(self, *headers: Header) -> dict[str, str]:
        """`_firsts` for a copy of this message where each of `headers` is the first line of its
        name (a proxy's forwarded copy: its Via, Max-Forwards, Record-Route on top)."""
        return self._firsts | {header.key: header.value for header in headers}

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [h.value for h in self.headers if h.key == key]

    @cached
    def vias(self) -> list[Via]:
        return [via for value in self.get_all("Via") for via in parse_via_list(value)]

    @cached
    def top_via(self) -> Via:
        """The first Via value, parsed alone (the rest stay text until `vias` is read)."""
        first = self.get("Via")
        if first is None:
            raise SipSyntaxError("missing Via")
        values = split_list(first)
        if not values or not values[0].strip():
            raise SipSyntaxError("malformed Via")
        return parse_via(values[0])

    @cached
    def from_tag(self) -> str | None:
        """The From tag, read without parsing the rest of the header (its display name may be
        anything a peer wrote: the proxy does not use it)."""
        return header_tag(self._required("From"))

    @cached
    def to_tag(self) -> str | None:
        return header_tag(self._required("To"))

    @cached
    def from_(self) -> Address:
        return parse_address(self._required("From"))

    @cached
    def to(self) -> Address:
        return parse_address(self._required("To"))

    @cached
    def call_id(self) -> str:
        value = self._required("Call-ID")
        if not value or _SPACE.search(value):
            raise SipSyntaxError("malformed Call-ID")
        return value

    @cached
    def cseq(self) -> tuple[int, str]:
        parts = self._required("CSeq").split()
        if len(parts) != 2 or not is_number(parts[0]) or not is_token(parts[1]):
            raise SipSyntaxError("malformed CSeq")
        number = int(parts[0])
        if number > MAX_CSEQ:
            raise SipSyntaxError("CSeq number out of range")
        return number, parts[1]

    @cached
    def contacts(self) -> list[Address]:
        values = self.get_all("Contact")
        if [v.strip() for v in values] == ["*"]:
            return []
        return [address for value in values for address in parse_address_list(value)]

    def contacts_lenient(self) -> tuple[list[Address], list[str]]:
        """Every Contact value parsed on its own: (those that parse, the text of those that do
        not). For reading what a peer lists without letting one odd entry hide the others (a
        registrar's 200 listing another device's binding written as `sip:GW#555...@...`)."""
        parsed, bad = [], []
        for value in self.get_all("Contact"):
            if value.strip() == "*":
                continue
            for element in split_list(value):
                try:
                    parsed.append(parse_address(element))
                except SipSyntaxError:
                    bad.append(element.strip())
        return parsed, bad

    @cached
    def routes(self) -> list[Address]:
        return [a for value in self.get_all("Route") for a in parse_address_list(value)]

    @cached
    def record_routes(self) -> list[Address]:
        return [a for value in self.get_all("Record-Route") for a in parse_address_list(value)]

    # -- editing -------------------------------------------------------------------------------

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line; `first` puts it above the existing lines of the same name."""
        header = Header(name, value)
        if first:
            index = next((i for i, h in enumerate(self.headers) if h.key == header.key), 0)
            self.headers.insert(index, header)
        else:
            self.headers.append(header)
        self._forget(header.key)

    def push_via(self, via: Via) -> None:
        """Put our own `via` on top (RFC 3261 §16.6 step 8), its parsed form known without a parse:
        the client transaction reads it at once to key itself (§17.1.3)."""
        self.add("Via", str(via), first=True)
        self.__dict__["top_via"] = via

    def remove(self, name: str) -> None:
        key = header_key(name)
        self.headers = [h for h in self.headers if h.key != key]
        self._forget(key)

    def replace(self, name: str, value: str) -> None:
        """Set the header to one line with `value`, where the first line of that name stood."""
        key = header_key(name)
        index = next((i for i, h in enumerate(self.headers) if h.key == key), len(self.headers))
        self.headers = [h for h in self.headers if h.key != key]
        self.headers.insert(index, Header(name, value))
        self._forget(key)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a list header (the top Via, the first Route)."""
        key = header_key(name)
        for i, header in enumerate(self.headers):
            if header.key != key:
                continue
            if "," in header.value and len(values := split_list(header.value)) > 1:
                self.headers[i] = Header(header.name, ",".join(values[1:]).strip())
                first = values[0]
            else:  # one value on the line, as nearly always: nothing to split
                del self.headers[i]
                first = header.value
            parsed = self.__dict__.get(_LIST_OF.get(key, ""))
            self._forget(key)
            if parsed:  # the rest parses as before: keep it (popping our Routes one by one, §16.4)
                self.__dict__[_LIST_OF[key]] = parsed[1:]
            return first.strip()
        return None

    def to_bytes(self) -> bytes:
        """The message on the wire, with Content-Length set to the body's length."""
        lines = [self.start_line()]
        lines += [h.raw for h in self.headers if h.key != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        head = CRLF.join(lines) + CRLF + CRLF
        return head.encode("utf-8", "surrogateescape") + self.body

    def start_line(self) -> str:
        raise NotImplementedError

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipSyntaxError(f"missing {name}")
        return value

    def _forget(self, key: str) -> None:
        """Drop the parsed forms of a header that was edited; its entry in `_firsts` is read again
        (the others stand: a relay edits two or three headers of a message, and reads a dozen)."""
        firsts = self.__dict__.get("_firsts")
        if firsts is not None:
            first = next((h.value for h in self.headers if h.key == key), None)
            if first is None:
                firsts.pop(key, None)
            else:
                firsts[key] = first
        for attribute in _PARSED_FROM.get(key, ()):
            self.__dict__.pop(attribute, None)


class Request(Message):
    def __init__(self, method: str, uri: Uri, headers: list[Header], body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    @cached
    def max_forwards(self) -> int | None:
        value = self.get("Max-Forwards")
        if value is None:
            return None  # RFC 2543 peers send none; the proxy treats it as 70
        if not is_number(value) or int(value) > 255:
            raise SipSyntaxError("malformed Max-Forwards")
        return int(value)

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    def __init__(self, status: int, reason: str, headers: list[Header], body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_message(data: bytes) -> Request | Response:
    """One message from a datagram or a framed stream chunk.

    The body is Content-Length octets after the header section; octets past
    it are ignored (RFC 3261 §18.3); without Content-Length the body is the
    rest of the data (§18.3, datagrams only: stream framing requires it).
    Raises SipParseError saying whether to answer 400/505 or drop.
    """
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are keepalives
    is_request = not data.startswith(b"SIP/")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("incomplete header section", is_request=is_request)
    head = data[:end].decode("utf-8", "surrogateescape")
    start, _, header_text = head.partition(CRLF)
    try:
        headers, firsts, faults = _split_headers(header_text)
        message: Request | Response = _request(start, headers) if is_request else _response(start, headers)
        message.__dict__["_firsts"] = firsts
        message.body = _body(firsts.get("content-length"), faults, data, end + 4)
        _validate(message, faults)
    except SipSyntaxError as exc:
        raise SipParseError(str(exc), is_request=is_request) from None
    return message


_TOKEN_NAMES: set[str] = set()  # header names already found to be tokens
# Header line as received -> its Header, shared (a Header never changes): most lines come again and
# again (CSeq, Max-Forwards, Content-Type, a dialog's Routes, a phone's Contact), and splitting them
# was the largest share of parsing (issue 12). Not the lines new in every call or transaction.
_LINES: Memo[str, Header] = Memo()
_NEW_EACH_TIME = frozenset(("via", "from", "to", "call-id"))
_KEPT_LINE = 256  # characters: the lines that repeat are short; 1,024 long ones would hold ~125 MiB


def _split_headers(text: str) -> tuple[list[Header], dict[str, str], set[str] | None]:
    """The header lines, the value of each key's first line (`Message._firsts`), and the faults a
    later line made: the keys of single-valued headers given again, and "content-length" for a
    Content-Length that disagrees with the first. One pass (issue 12); the faults are raised later
    (`_body`, `_validate`), so the start line is still judged first."""
    headers: list[Header] = []
    firsts: dict[str, str] = {}
    faults = None
    if not text:
        return headers, firsts, faults
    folded = "\r\n " in text or "\r\n\t" in text
    for raw in _LINE_END.split(text) if folded else text.split("\r\n"):
        header = _LINES.get(raw)
        if header is None:
            name, colon, value = raw.partition(":")
            name = name.rstrip(" \t")
            if not colon or (name not in _TOKEN_NAMES and not _token_name(name)):
                raise SipSyntaxError(f"malformed header line {raw[:30]!r}")
            header = Header(name, (_FOLD.sub(" ", value) if folded else value).strip(" \t"), raw)
            if len(raw) <= _KEPT_LINE and header.key not in _NEW_EACH_TIME:
                _LINES.keep(raw, header)
        headers.append(header)
        key = header.key
        if key not in firsts:
            firsts[key] = header.value
        elif key in _ONCE and (key != "content-length" or header.value.strip() != firsts[key].strip()):
            faults = faults or set()
            faults.add(key)
    return headers, firsts, faults


def _token_name(name: str) -> bool:
    if not is_token(name):
        return False
    if len(_TOKEN_NAMES) < _KNOWN_NAMES:
        _TOKEN_NAMES.add(name)
    return True


def _request(start: str, headers: list[Header]) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipSyntaxError("malformed Request-Line")
    method, uri_text, version = parts
    if version.upper() != "SIP/2.0":
        if _VERSION.fullmatch(version):
            raise SipParseError(f"Version Not Supported ({version})", is_request=True, status=505)
        raise SipSyntaxError("malformed SIP version")
    if not is_token(method):
        raise SipSyntaxError("malformed method")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers is not None:
        raise SipSyntaxError("headers in Request-URI")  # §19.1.5: never turned into real headers
    return Request(method, uri, headers)


def _response(start: str, headers: list[Header]) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0":
        raise SipSyntaxError("unsupported SIP version in response")
    if len(code) != 3 or not is_number(code) or not 100 <= int(code) <= 699:
        raise SipSyntaxError(f"malformed status code {code[:12]!r}")
    return Response(int(code), reason, headers)


def _body(length_text: str | None, faults: set[str] | None, data: bytes, start: int) -> bytes:
    if length_text is None:
        return data[start:]
    if faults and "content-length" in faults:
        raise SipSyntaxError("conflicting Content-Length values")
    length_text = length_text.strip()
    if not is_number(length_text):
        raise SipSyntaxError("malformed Content-Length")
    length = int(length_text)
    if start + length > len(data):
        raise SipSyntaxError("Content-Length larger than the message")
    return data[start : start + length]


def header_tag(value: str) -> str | None:
    """The tag parameter of a From or To value, or None. The header's parameters follow the URI's
    closing '>' (name-addr) or its first ';' (addr-spec, §20.10)."""
    close = value.rfind(">")
    params = value[close + 1 :] if close >= 0 else value[value.find(";") :] if ";" in value else ""
    found = _TAG.search(params)
    return found.group(1) if found else None


def _validate(message: Request | Response, faults: set[str] | None) -> None:
    """Check what the forwarding path needs, so a bad one fails here and not mid-transaction."""
    if faults:  # a Content-Length fault was raised by _body: these are single-valued headers
        raise SipSyntaxError(f"more than one {next(k for k in SINGLE_VALUED if k in faults)} header")
    # Each parsed straight into its cached slot: through the descriptors, a frame more each (issue 12).
    known = message.__dict__
    known["top_via"] = _top_via(message)
    known["from_tag"] = _from_tag(message)
    known["to_tag"] = _to_tag(message)
    known["call_id"] = _call_id(message)
    cseq = known["cseq"] = _cseq(message)
    if isinstance(message, Request):
        if cseq[1] != message.method:
            raise SipSyntaxError("CSeq method does not match the request method")
        known["max_forwards"] = _max_forwards(message)


_top_via, _from_tag, _to_tag, _call_id, _cseq = (
    Message.__dict__[name].func for name in ("top_via", "from_tag", "to_tag", "call_id", "cseq")
)
_max_forwards = Request.__dict__["max_forwards"].func
