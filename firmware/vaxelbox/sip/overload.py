"""Overload control: when the element cannot keep up, refuse new work early and cheaply.

A SIP element past its capacity must not take on more than it can finish: the
UDP backlog grows, the kernel drops datagrams, peers retransmit and the load
multiplies until nothing completes (congestion collapse). Instead, while
overloaded, a request that would start new work (an INVITE, REGISTER,
SUBSCRIBE... outside a dialog) is answered 503 with Retry-After (RFC 3261
§21.5.4) statelessly, before it is parsed, while everything that belongs to
work already taken on (responses, ACK, BYE, CANCEL, in-dialog requests) is
always processed.

Overload is a standing queue, as CoDel detects it (RFC 8289 §3): every
message's sojourn (how long it waited before it was read: the kernel's
receive timestamp to now, or the event loop's lateness for streams) is fed
in; when sojourns stayed at or above `target` for a whole `interval`, new
work is shed, and the first message read below `target` (the queue drained)
ends it. A burst that drains within the interval is never shed.

Sans-I/O: time comes in as arguments (seconds, monotonic or wall, as long as
one clock is used throughout).
"""

import random
import re

# SIP's first retransmission comes after T1 = 500 ms: waits of tens of milliseconds (a collector
# pass, a burst) harm nobody, and shedding on them throws calls away (bench: 503s at 400 calls/s
# with a 20 ms target, none with 50 ms); a queue standing at 50 ms for 200 ms is one to act on.
TARGET = 0.050  # s of waiting tolerated before a message is read
INTERVAL = 0.200  # s the waiting must last to count as a standing queue
SEVERE = 4  # times the target: a queue standing above this sheds continuations too
RETRY_AFTER = (2, 10)  # s, drawn uniformly: refused phones do not all come back at once
# A live transaction costs about 1.1 KiB: most of them wait (Timers L and M: 32 s after a call is
# answered) holding only bytes and timers (bench/sip_relay.py memory part, 200 calls/s: 47 MiB of
# RSS over about 42,000 live transactions). Twice that for margin; SIP state may take a quarter of
# the board's RAM.
TRANSACTION_BYTES = 2 * 1024
SIP_SHARE_OF_RAM = 4

# A request that starts new work: its method, and no To tag (outside a dialog, RFC 3261 §12).
_NEW_WORK = re.compile(rb"(?:INVITE|REGISTER|SUBSCRIBE|OPTIONS|MESSAGE|PUBLISH|REFER|NOTIFY|INFO) ")
_TO_LINE = re.compile(rb"\r\n(?:to|t)[ \t]*:([^\r\n]*)", re.I)
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.I)
_CREDENTIALS = re.compile(rb"\r\n(?:proxy-)?authorization[ \t]*:", re.I)
SHED_TAG = "shed-"  # To tag prefix of our stateless refusals: their ACKs are absorbed (§17.1.1.3)
_ACK_OF_SHED = re.compile(rb"\r\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=[ \t]*" + SHED_TAG.encode(), re.I)


class OverloadControl:
    """Whether new work is shed now, and whether severely. `observe(sojourn, now)` per message read
    (or loop tick).

    Shedding refuses fresh attempts first: what continues work already paid for (an INVITE sent
    again with credentials after our 407 round, or the cloud's leg of a call that crossed the edge)
    is refused only when the queue stands above `SEVERE` times the target as well. Refusing those
    would throw away the work spent on their first half and drag goodput far below capacity."""

    def __init__(self, target: float = TARGET, interval: float = INTERVAL) -> None:
        self.target = target
        self.interval = interval
        self.shedding = False
        self.severe = False  # the queue stands above SEVERE * target too: shed continuations as well
        self.episodes = 0  # times shedding started
        self._above_until: float | None = None  # when a sojourn above target becomes standing
        self._severe_until: float | None = None  # the same, above SEVERE * target

    def observe(self, sojourn: float, now: float) -> None:
        if sojourn < self.target:
            self._above_until = self._severe_until = None
            self.shedding = self.severe = False
            return
        if self._above_until is None:
            self._above_until = now + self.interval
        if now >= self._above_until and not self.shedding:
            self.shedding = True
            self.episodes += 1
        if sojourn < SEVERE * self.target:
            self._severe_until, self.severe = None, False
            return
        if self._severe_until is None:
            self._severe_until = now + self.interval
        self.severe = now >= self._severe_until

    @staticmethod
    def retry_after() -> int:
        return random.randint(*RETRY_AFTER)


def transactions_for_ram(ram_mb: int) -> int:
    """The ceiling on live transactions for a board with `ram_mb` MiB of RAM: at it, new work is
    refused as when overloaded, so a flood meets the ceiling and not the kernel's OOM killer."""
    return ram_mb * 1024 * 1024 // SIP_SHARE_OF_RAM // TRANSACTION_BYTES


def starts_new_work(data: bytes) -> bool:
    """Whether raw `data` is a request outside any dialog that would start new work (read from the
    start line and the To header's tag, without parsing the message)."""
    if not _NEW_WORK.match(data):
        return False
    head = data.split(b"\r\n\r\n", 1)[0]
    to = _TO_LINE.search(head)
    return to is None or _TAG.search(to.group(1)) is None


def carries_credentials(data: bytes) -> bool:
    """Whether raw request `data` carries Authorization or Proxy-Authorization (an attempt sent again
    after a challenge: the continuation of work already done)."""
    return _CREDENTIALS.search(data.split(b"\r\n\r\n", 1)[0]) is not None


def acks_a_refusal(data: bytes) -> bool:
    """Whether raw `data` is the ACK for one of our stateless refusals (its To tag is ours)."""
    return data.startswith(b"ACK ") and _ACK_OF_SHED.search(data.split(b"\r\n\r\n", 1)[0]) is not None
