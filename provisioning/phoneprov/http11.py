"""HTTP/1.1 as phones speak it to the provisioning server (RFC 9112), without sockets.

A request head (request line and header lines, as read) becomes a `RequestHead`; a reply becomes
the bytes of a response head. Only what provisioning needs: any method (the service refuses all
but GET and HEAD), origin-form and absolute-form targets and `OPTIONS *`, a body announced by
Content-Length or chunked (Poly phones PUT their logs; the server reads and drops it), keep-alive
as HTTP/1.0 and 1.1 define it. Whatever does not parse is a `BadRequest`: answered with 400 and
the connection closed. The limits are those aiohttp, the server used before, applied.
"""

import re
import time
from dataclasses import dataclass
from http import HTTPStatus

MAX_LINE = 8190  # bytes in the request line or in one header line
MAX_HEADERS = 128  # header lines in one request
MAX_CHUNK_LINE = 1024  # bytes in one chunk-size line (the size and any extensions)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no spaces, controls or raw 8-bit bytes
_VERSION = re.compile(rb"HTTP/1\.([01])")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class BadRequest(ValueError):
    """The request cannot be read; the message says why (it goes back in the 400's body)."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str  # as sent: path and query (or the absolute URI, or `*`)
    path: str  # the target's path, percent-decoded (see `decoded_path`)
    minor: int  # HTTP/1.<minor>: 0 or 1
    headers: dict[str, str]  # lower-case name -> its first value, without surrounding white space
    length: int | None  # body bytes announced by Content-Length; None when chunked
    keep_alive: bool  # whether the client wants the connection kept after the reply

    @property
    def has_body(self) -> bool:
        return self.length != 0

    @property
    def expects_continue(self) -> bool:
        """The client waits for `100 Continue` before it sends its body (RFC 9110 §10.1.1)."""
        return self.headers.get("expect", "").lower() == "100-continue"


def request_head(request_line: bytes, header_lines: list[bytes]) -> RequestHead:
    """Parse a request line and its header lines (each with its CRLF, the empty one excluded).
    Raises BadRequest."""
    method, target, minor = request_line_parts(request_line)
    headers: dict[str, str] = {}
    lengths: list[str] = []
    for line in header_lines:
        name, value = _header_line(line)
        if name == "content-length":
            lengths.append(value)
        headers.setdefault(name, value)
    length = _body_length(headers.get("transfer-encoding"), lengths)
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection if minor == 1 else "keep-alive" in connection
    return RequestHead(method, target, _target_path(method, target), minor, headers, length, keep_alive)


def request_line_parts(line: bytes) -> tuple[str, str, int]:
    """(method, target, minor version) of a request line with its CRLF. Raises BadRequest."""
    if not line.endswith(b"\r\n"):
        raise BadRequest("the request line must end with CRLF")
    parts = line[:-2].split(b" ")
    if len(parts) != 3:
        raise BadRequest("the request line is not METHOD TARGET HTTP/1.x")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise BadRequest("invalid method")
    if not _TARGET.fullmatch(target):
        raise BadRequest("invalid request target")
    matched = _VERSION.fullmatch(version)
    if matched is None:
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken here")
    return method.decode(), target.decode(), int(matched[1])


def _header_line(line: bytes) -> tuple[str, str]:
    if not line.endswith(b"\r\n"):
        raise BadRequest("a header line must end with CRLF")
    name, colon, value = line[:-2].partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise BadRequest(f"invalid header line {line[:40]!r}")
    return name.decode().lower(), value.strip(b" \t").decode("latin-1")


def _body_length(transfer_encoding: str | None, lengths: list[str]) -> int | None:
    """The Content-Length, None for chunked, 0 for no body (RFC 9112 §6.3)."""
    if transfer_encoding is not None:
        if lengths:
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if transfer_encoding.lower() != "chunked":
            raise BadRequest("only the chunked transfer coding is understood")
        return None
    if len(lengths) > 1:
        raise BadRequest("duplicate Content-Length")
    if not lengths:
        return 0
    if not lengths[0].isdigit() or not lengths[0].isascii():
        raise BadRequest("invalid Content-Length")
    return int(lengths[0])


def _target_path(method: str, target: str) -> str:
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest("only OPTIONS may ask for *")
        return target
    if target.startswith("/"):
        raw = target
    elif (scheme_end := target.find("://")) > 0:  # absolute-form: the path after the authority
        after = target[scheme_end + 3 :]
        cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
        raw = after[cut:] if after[cut:].startswith("/") else "/" + after[cut:]
    else:
        raise BadRequest("invalid request target")
    return decoded_path(re.split(r"[?#]", raw, maxsplit=1)[0])


def decoded_path(path: str) -> str:
    """`path` with its percent-escapes decoded where they spell UTF-8; an escape of a byte that is
    not part of valid UTF-8 stays as written (`/%ff.cfg` stays; `/%c3%a9%ff` is `/é%ff`), and `+`
    stays `+`: as aiohttp (yarl) decoded paths, so the service sees what it saw before."""
    return _ESCAPES.sub(_decoded_run, path)


def _decoded_run(run: re.Match[str]) -> str:
    written = run.group()
    escapes = [written[i : i + 3] for i in range(0, len(written), 3)]
    text = bytes(int(e[1:], 16) for e in escapes).decode("utf-8", "surrogateescape")
    decoded, at = [], 0
    for char in text:
        if "\udc80" <= char <= "\udcff":  # a byte that is not valid UTF-8 here: keep its escape
            decoded.append(escapes[at])
            at += 1
        else:
            decoded.append(char)
            at += len(char.encode())
    return "".join(decoded)


def chunk_size(line: bytes) -> int:
    """The size of the chunk a chunk-size line (with its CRLF) announces. Raises BadRequest."""
    if not line.endswith(b"\r\n") or len(line) > MAX_CHUNK_LINE:
        raise BadRequest("invalid chunk size line")
    size = line[:-2].partition(b";")[0].strip(b" \t")
    if not _HEX.fullmatch(size):
        raise BadRequest("invalid chunk size")
    return int(size, 16)


def response_head(
    minor: int,
    status: int,
    headers: list[tuple[str, str]],
    length: int,
    close: bool,
    keep_alive_1_0: bool = False,
    now: float | None = None,
) -> bytes:
    """A response head: status line in the request's version, `headers` in order, then
    Content-Length (`length`), Date, and `Connection: close` when the server closes after it (for
    HTTP/1.0, `Connection: keep-alive` when the client asked for it and the connection stays)."""
    lines = [f"HTTP/1.{minor} {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {length}", f"Date: {http_date(now)}"]
    if minor == 0:  # an HTTP/1.0 connection closes unless both sides said keep-alive
        lines += ["Connection: keep-alive"] if keep_alive_1_0 and not close else []
    elif close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_date(now: float | None = None) -> str:
    """e.g. `Mon, 30 Nov 2026 19:15:08 GMT` (RFC 9110 §5.6.7; English names whatever the locale)."""
    t = time.gmtime(now)
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} {clock} GMT"
