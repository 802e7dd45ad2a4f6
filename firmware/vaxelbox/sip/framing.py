"""Cutting a stream transport's bytes into SIP messages (RFC 3261 §18.3), and CRLF keepalives.

Sans-I/O: feed it bytes as they arrive, get back whole frames. A framing
error is unrecoverable on a stream (RFC 4475 §3.1.2.2): the connection must
be closed.
"""

import re
from dataclasses import dataclass

# A header line follows a line end (the start line comes first). "\n" rather than "^" with re.M:
# a literal first character lets the engine skip to each line end instead of trying every octet.
_CONTENT_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*(\S*)", re.I)


@dataclass(slots=True)  # one per message read from a stream: not frozen, half the cost to make
class Frame:
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """CRLFCRLF: the peer's keepalive (RFC 5626 §4.4.1); answer with one CRLF."""


@dataclass(frozen=True, slots=True)
class Pong:
    """A lone CRLF: the answer to our keepalive."""


@dataclass(frozen=True, slots=True)
class FramingError:
    reason: str


Event = Frame | Ping | Pong | FramingError


class StreamFramer:
    def __init__(self, max_size: int = 65_535) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> list[Event]:
        if self.failed:
            return []
        self._buffer += data
        events: list[Event] = []
        while self._buffer:
            event = self._next()
            if event is None:
                break
            events.append(event)
            if isinstance(event, FramingError):
                self.failed = True
                self._buffer.clear()
                break
        return events

    def _next(self) -> Event | None:
        buffer = self._buffer
        if buffer.startswith(b"\r\n\r\n"):
            del buffer[:4]
            return Ping()
        if buffer.startswith(b"\r\n"):
            if len(buffer) == 2 or buffer[2:3] != b"\r":
                del buffer[:2]
                return Pong()
            return None  # maybe the first half of a ping
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return FramingError("header section too large") if len(buffer) > self.max_size else None
        lengths = {m.group(1) for m in _CONTENT_LENGTH.finditer(buffer, 0, end + 2)}
        if len(lengths) != 1:
            return FramingError("a stream message needs exactly one Content-Length")
        (text,) = lengths
        if not text.isdigit():
            return FramingError("malformed Content-Length")
        total = end + 4 + int(text)
        if total > self.max_size:
            return FramingError(f"message of {total} octets exceeds the {self.max_size}-octet limit")
        if len(buffer) < total:
            return None
        frame = bytes(buffer[:total])
        del buffer[:total]
        return Frame(frame)
