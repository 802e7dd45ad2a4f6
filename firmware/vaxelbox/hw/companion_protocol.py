"""The companion link's wire protocol: the one description both ends import.

The agent imports it as `vaxelbox.hw.companion_protocol`; the companion microcontroller gets this
same file as `companion_protocol.py` (`make companion` compiles it with the companion's own). So
it is written in what MicroPython and CPython share: plain tuples and dicts, `struct`, no
dataclasses, nothing imported from `typing` (annotations are never evaluated on MicroPython).

A frame, integers big-endian:

    0x56 0x58 ("VX") | type (1) | seq (1) | length (1, at most 64) | payload | CRC-16 (2)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF) over type, seq, length and
payload. A receiver counts a frame with a bad CRC or an impossible length as corrupt, answers it
with ERROR and looks for the next "VX"; a frame of an unknown type, or whose payload does not fit
its type's format, is counted and answered too. HELLO, HEARTBEAT and ERROR keep their codes and
payloads in every protocol version, so the board's watchdog keeps working across an agent update
that changes the rest; the other messages need a HELLO of the same VERSION first.
"""

import struct

MAGIC = b"VX"
VERSION = 1
MAX_PAYLOAD = 64
HEADER = 5  # magic, type, seq, length
TRAILER = 2  # CRC

# name -> (type code, struct format of the payload, field names, who sends it)
MESSAGES = {
    # The agent's protocol version and what it read from the board file for the companion.
    "HELLO": (0x01, ">BHB", ("version", "heartbeat_timeout", "max_resets"), "agent"),
    "HEARTBEAT": (0x02, "", (), "agent"),
    # What the LEDs show (LINK_*, flags 0/1, FAULT_* or 0); see the companion's LED table.
    "LEDS": (0x03, ">BBBB", ("link", "enrolment", "update", "fault"), "agent"),
    # The agent's answer to a factory reset request: 1 = confirmed, it resets now; 0 = refused.
    "RESET_ANSWER": (0x04, ">B", ("confirmed",), "agent"),
    # The companion's version, its watchdog settings (s) and the resets it made, with the last
    # one's reason (REASON_*).
    "HELLO_REPLY": (
        0x11,
        ">BHHBBHB",
        ("version", "heartbeat_timeout", "boot_grace", "max_resets", "resets_in_row", "resets", "reason"),
        "companion",
    ),
    # The answer to every HEARTBEAT: supply in mV, temperature in 0.1 degC, the watchdog's
    # counters, the frames it counted as corrupt or unknown, and 1 when it is in its safe state.
    "TELEMETRY": (
        0x12,
        ">HhBHBHHB",
        ("supply_mv", "temperature_dc", "resets_in_row", "resets", "reason", "corrupt", "unknown", "safe"),
        "companion",
    ),
    "BUTTON": (0x13, ">B", ("event",), "companion"),  # BUTTON_*
    # Either end: what was wrong with the frame of sequence number `seq` (ERROR_*).
    "ERROR": (0x7F, ">BB", ("code", "seq"), "both"),
}
CODES = {spec[0]: name for name, spec in MESSAGES.items()}

LINK_UNKNOWN, LINK_UP, LINK_DEGRADED, LINK_LOCAL = 0, 1, 2, 3
BUTTON_SHORT, BUTTON_FACTORY_RESET = 1, 2
REASON_NONE, REASON_HEARTBEAT, REASON_BOOT = 0, 1, 2  # no reset yet; heartbeats stopped; none came
ERROR_CORRUPT, ERROR_UNKNOWN, ERROR_PAYLOAD, ERROR_VERSION = 1, 2, 3, 4
# Fault blink codes (the red LED blinks n times, then pauses).
FAULT_AGENT_SILENT, FAULT_SAFE_STATE, FAULT_AGENT = 1, 2, 3

REASONS = {REASON_NONE: "none", REASON_HEARTBEAT: "heartbeat timeout", REASON_BOOT: "no heartbeat after boot"}
ERRORS = {
    ERROR_CORRUPT: "corrupt frame",
    ERROR_UNKNOWN: "unknown type",
    ERROR_PAYLOAD: "bad payload",
    ERROR_VERSION: "version mismatch",
}


# What struct.pack raises for values that do not fit: CPython's struct.error, MicroPython's others.
PACK_ERRORS = (ValueError, OverflowError, TypeError) + ((struct.error,) if hasattr(struct, "error") else ())


class ProtocolError(ValueError):
    """A message that cannot be encoded: unknown name or values that do not fit its format."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data`: 0..65535 (0x29B1 for b"123456789")."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame(code: int, seq: int, payload: bytes) -> bytes:
    """The bytes of one frame; `code` and `seq` 0..255, payload at most MAX_PAYLOAD bytes.
    Raises ProtocolError for a payload that is too long."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    body = bytes((code & 0xFF, seq & 0xFF, len(payload))) + payload
    return MAGIC + body + struct.pack(">H", crc16(body))


def encode(name: str, seq: int, values: tuple = ()) -> bytes:
    """The frame of message `name` with its fields' `values` in MESSAGES order.
    Raises ProtocolError for an unknown name or values that do not fit."""
    if name not in MESSAGES:
        raise ProtocolError("unknown message " + name)
    code, fmt, fields, _sender = MESSAGES[name]
    if len(values) != len(fields):
        raise ProtocolError(f"{name} takes {len(fields)} values, not {len(values)}")
    try:
        payload = struct.pack(fmt, *values) if fmt else b""
    except PACK_ERRORS as exc:
        raise ProtocolError(f"{name}: {exc}") from None
    return frame(code, seq, payload)


def decode(code: int, payload: bytes) -> tuple:
    """(name, {field: value}) of a received frame's type and payload.
    Raises KeyError for an unknown type, ValueError for a payload that does not fit it."""
    name = CODES[code]
    _code, fmt, fields, _sender = MESSAGES[name]
    size = struct.calcsize(fmt) if fmt else 0
    if len(payload) != size:
        raise ValueError(f"{name} wants {size} payload bytes")
    values = struct.unpack(fmt, payload) if fmt else ()
    return name, dict(zip(fields, values))


class Decoder:
    """Turns the bytes of a serial line into frames, resynchronising after garbage.

    `feed(data)` returns a list of (code, seq, payload) for good frames and (None, seq, reason)
    for each corrupt one (seq as far as it could be read, else 0). Garbage before a magic counts
    as one corrupt frame per run. The buffer never holds more than one frame's worth of bytes.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.corrupt = 0
        self._in_garbage = False

    def feed(self, data: bytes) -> list:
        self.buffer += data
        out = []
        while True:
            item = self._next()
            if item is None:
                return out
            if item[0] is None:
                self.corrupt += 1
            out.append(item)

    def _next(self) -> tuple | None:
        start = self.buffer.find(MAGIC)
        if start < 0:  # keep a last byte that may begin a magic
            garbage = len(self.buffer) - (1 if self.buffer[-1:] == MAGIC[:1] else 0)
            return self._skip(garbage)
        if start > 0:
            return self._skip(start)
        self._in_garbage = False
        if len(self.buffer) < HEADER:
            return None
        seq, length = self.buffer[3], self.buffer[4]
        if length > MAX_PAYLOAD:
            return self._reject(seq, f"length {length}")
        end = HEADER + length + TRAILER
        if len(self.buffer) < end:
            return None
        body, crc = self.buffer[2 : HEADER + length], self.buffer[HEADER + length : end]
        if struct.unpack(">H", crc)[0] != crc16(body):
            return self._reject(seq, "crc")
        self.buffer = self.buffer[end:]
        return (body[0], seq, body[3:])

    def _reject(self, seq: int, reason: str) -> tuple:
        """A corrupt frame: drop its magic and count what follows up to the next one with it."""
        self.buffer = self.buffer[1:]
        self._in_garbage = True
        return (None, seq, reason)

    def _skip(self, count: int) -> tuple | None:
        """Drop `count` bytes of garbage: one corrupt frame for each run of it."""
        if count <= 0:
            return None
        self.buffer = self.buffer[count:]
        if self._in_garbage:
            return self._next()
        self._in_garbage = True
        return (None, 0, "garbage")
