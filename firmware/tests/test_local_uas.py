"""A star code answered here and hung up (local.uas.Confirmations), on a fake scheduler: the real
SipStack and transaction layer, a flow that records what is sent, time moved by the test."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from vaxelbox.local.uas import Confirmations
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.stack import Running, SipStack
from vaxelbox.sip.transport import Flow, TransportLayer

LAN, WAN = ("192.0.2.1", 5060), ("198.51.100.1", 5062)
PHONE = ("192.0.2.10", 5060)
T1, T2 = 0.5, 4.0  # the stack's defaults (TimerSettings)


class RecordingFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, clock: "FakeScheduler") -> None:
        super().__init__(LAN, PHONE)
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []  # (when, datagram)

    def send(self, data: bytes) -> None:
        self.sent.append((self.clock.now, data))

    def lines(self, start: bytes) -> list[float]:
        """When each message whose first line begins with `start` was sent."""
        return [at for at, data in self.sent if data.startswith(start)]


class TcpFlow(RecordingFlow):
    transport = "tcp"
    reliable = True


@dataclass
class _Handle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeScheduler:
    """Scheduler (delay s, callback) -> handle, run by `advance` in time order."""

    now: float = 0.0
    due: list[tuple[float, int, Callable[[], None], _Handle]] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        self.due.append((self.now + delay, len(self.due), callback, handle))
        return handle

    def advance(self, until: float) -> None:
        while pending := sorted(e for e in self.due if e[0] <= until and not e[3].cancelled):
            at, _, callback, handle = pending[0]
            handle.cancelled = True
            self.now = at
            callback()
        self.now = until


class StarCodeUser:
    """The relay's part: every INVITE is a star code confirmed here; a 2xx ACK goes to on_ack."""

    def __init__(self, confirmations: Confirmations) -> None:
        self.confirmations = confirmations

    def admit(self, message: Request | Response, flow: Flow) -> bool:
        return True

    def on_request(self, transaction: Running, request: Request) -> None:
        self.confirmations.answer_and_hang_up(transaction, request, "forward set")

    def on_cancel(self, invite: Running, cancel: Request) -> None:
        pass

    def on_stray(self, message: Request | Response, flow: Flow) -> None:
        if isinstance(message, Request) and message.method == "ACK":
            self.confirmations.on_ack(message)


def message(method: str, to_tag: str = "") -> Request:
    branch = "z9hG4bK-inv" if method == "INVITE" else "z9hG4bK-ack"
    parsed = parse_message(
        (
            f"{method} sip:*21*0701234567%23@office.example SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\nMax-Forwards: 70\r\n"
            "From: <sip:101@office.example>;tag=a\r\n"
            f"To: <sip:*21*0701234567%23@office.example>{to_tag and ';tag=' + to_tag}\r\n"
            f"Call-ID: code@x\r\nCSeq: 1 {method}\r\nContact: <sip:101@192.0.2.10:5060>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(parsed, Request)
    return parsed


def answered(flow_type: type[RecordingFlow] = RecordingFlow) -> tuple[SipStack, RecordingFlow, FakeScheduler]:
    """A star code's INVITE taken by the stack and answered 200 at time 0."""
    clock = FakeScheduler()
    stack = SipStack(TransportLayer(lambda message, flow: None))
    stack.user = StarCodeUser(Confirmations(stack, EdgeAddresses(LAN, WAN), clock))
    phone = flow_type(clock)
    stack.on_message(message("INVITE"), phone)
    assert phone.lines(b"SIP/2.0 200 ") == [0.0]
    return stack, phone, clock


def to_tag_of_200(phone: RecordingFlow) -> str:
    ok = parse_message(next(data for _, data in phone.sent if data.startswith(b"SIP/2.0 200 ")))
    assert isinstance(ok, Response)
    assert ok.to_tag
    return ok.to_tag


async def test_over_udp_the_200_is_resent_doubling_to_t2_until_64_t1():
    """§13.3.1.4: one lost 200 must not leave the phone waiting. Resent after T1, the interval
    doubling up to T2 (0.5, 1, 2, 4, 4 ... s), never after 64*T1, and no BYE without an ACK."""
    _, phone, clock = answered()
    clock.advance(200.0)
    times, gap = [0.0], T1
    while times[-1] + gap < 64 * T1:
        times.append(times[-1] + gap)
        gap = min(2 * gap, T2)
    assert phone.lines(b"SIP/2.0 200 ") == pytest.approx(times)
    assert times[1:5] == [0.5, 1.5, 3.5, 7.5]
    sent = [data for at, data in phone.sent if data.startswith(b"SIP/2.0 200 ")]
    assert len(set(sent)) == 1  # the same 200 each time
    assert phone.lines(b"BYE ") == []


async def test_the_ack_stops_the_retransmissions_and_the_bye_follows():
    stack, phone, clock = answered()
    clock.advance(2.0)  # two retransmissions (0.5, 1.5) before the ACK arrives
    stack.on_message(message("ACK", to_tag_of_200(phone)), phone)  # a 2xx's ACK: to on_stray
    clock.advance(200.0)
    assert phone.lines(b"SIP/2.0 200 ") == [0.0, 0.5, 1.5]
    assert phone.lines(b"BYE ") == [2.0]


async def test_over_tcp_the_200_is_sent_once():
    """A reliable transport carries the 200 itself: nothing is resent."""
    _, phone, clock = answered(TcpFlow)
    clock.advance(200.0)
    assert phone.lines(b"SIP/2.0 200 ") == [0.0]
