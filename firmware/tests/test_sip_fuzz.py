"""Fuzzing: mutated torture messages never make the parser raise anything but SipParseError,
and never break the transaction layer or leave transactions behind.

Hypothesis mutates the RFC 4475/5118 messages (flip, insert, delete, duplicate,
truncate, splice bytes; swap CRLFs) for a bounded number of examples. A
transport turns SipParseError into a 400 or a drop; any other exception would
escape into the transport and is a bug.
"""

import asyncio
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_corpus import all_messages
from vaxelbox.sip.errors import SipParseError, SipSyntaxError
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transaction import TimerSettings
from vaxelbox.sip.transport import Flow, TransportLayer

MESSAGES = all_messages()
INTERESTING = [
    b"\r\n",
    b"\r\n ",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b"[",
    b"]",
    b"%",
    b"@",
    b"\x00",
    b"\xff",
    b" ",
    b"=",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MESSAGES)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "splice"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif action == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif action == "truncate":
            del data[at:]
        else:
            other = draw(st.sampled_from(MESSAGES))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_parser_only_ever_raises_parse_errors(data):
    result = verdict(data)
    if isinstance(result, SipParseError):
        assert result.reason
        assert result.status in (400, 505)
    else:
        verdict(result.to_bytes())  # whatever is accepted can be written out and read back


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    verdict(data)


def verdict(data: bytes) -> Request | Response | SipParseError:
    """The parsed message or the parse error; any other exception fails the test."""
    try:
        return parse_message(data)
    except SipParseError as error:
        return error


# -- the transaction layer ------------------------------------------------------------------------


class RecordingFlow(Flow):
    """A flow that keeps what is sent on it (the stack under test needs no socket for this)."""

    transport = "udp"
    reliable = False

    def __init__(self):
        super().__init__(("192.0.2.1", 5060), ("192.0.2.10", 5060))
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.sent += 1


class AnswerEverything:
    """A transaction user that answers every request (200 or 486) and ignores the rest."""

    def __init__(self, stack: SipStack):
        self.stack = stack

    def admit(self, message, flow) -> bool:
        return True

    def on_request(self, transaction, request) -> None:
        status = 486 if len(request.call_id) % 2 else 200
        self.stack.respond(transaction, make_response(request, status, "Fuzzed"))

    def on_cancel(self, invite, cancel) -> None:
        self.stack.respond(invite, make_response(invite.machine.request, 487, "Request Terminated"))

    def on_stray(self, message, flow) -> None:
        pass


FAST = TimerSettings(t1=0.001, t2=0.004, t4=0.005)  # every timer over within 64*T1 = 64 ms


async def drained(stack: SipStack, within: float = 0.15) -> None:
    """Returns once `stack` holds no transaction, or `within` s from now (over twice every FAST
    timer): a batch costs its transactions' lifetime, not always the whole 0.15 s. Nothing can
    open one after that here: only the batch, fed before, makes them."""
    deadline = time.monotonic() + within
    while (stack.clients or stack.servers) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(mutated(), min_size=10, max_size=60))
def test_transaction_layer_survives_junk_and_holds_nothing_afterwards(batch):
    async def scenario() -> SipStack:
        transports = TransportLayer(lambda message, flow: None)
        stack = SipStack(transports, FAST)
        stack.user = AnswerEverything(stack)
        flow = RecordingFlow()
        for data in batch:
            message = verdict(data)
            if isinstance(message, SipParseError):
                continue
            if (
                isinstance(message, Request)
                and message.method not in ("ACK", "CANCEL")
                and len(data) % 3 == 0
            ):
                # Also run client transactions: send it, then feed it its own (mutated) responses.
                stack.send_request(message, flow, lambda response: None, lambda: None)
            else:
                stack.on_message(message, flow)
        await drained(stack)
        return stack

    stack = asyncio.run(scenario())
    assert stack.clients == {}
    assert stack.servers == {}


def test_the_corpus_itself_creates_transactions_that_all_end():
    async def scenario() -> tuple[int, SipStack]:
        stack = SipStack(TransportLayer(lambda message, flow: None), FAST)
        stack.user = AnswerEverything(stack)
        flow = RecordingFlow()
        for data in MESSAGES:
            message = verdict(data)
            if isinstance(message, Request | Response):
                stack.on_message(message, flow)
        held = len(stack.servers)
        await asyncio.sleep(0.15)
        return held, stack

    held, stack = asyncio.run(scenario())
    assert held >= 20  # most valid corpus requests opened a server transaction
    assert stack.servers == {}
    assert stack.clients == {}


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=';= \t\r\n"\\[]:.aB1-~é\x0b', max_size=30))
def test_parameters_read_fast_and_slowly_agree(text: str) -> None:
    """parse_params checks plain parameters (no LWS, quotes or IPv6) with one regex for them all and
    reads others with one per parameter (issue 12), and falls back to the piece-by-piece reader on
    anything it does not take: all give the same parameters, or the same error."""
    from vaxelbox.sip.syntax import _parse_params_slowly, parse_params

    def outcome(parse: Callable[[str], dict[str, str | None]]) -> object:
        try:
            return parse(text)
        except SipSyntaxError as error:
            return str(error)

    assert outcome(parse_params) == outcome(_parse_params_slowly)


BASE = (
    "INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bKx\r\nMax-Forwards: 70\r\n"
    "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("field", "number"),
    [
        ("h:5060;", "h:{};"),  # a Via port
        ("sip:a@h SIP", "sip:a@h:{} SIP"),  # a Request-URI port
        ("Max-Forwards: 70", "Max-Forwards: {}"),
        ("CSeq: 1 ", "CSeq: {} "),
        ("Content-Length: 0", "Content-Length: {}"),
    ],
)
@pytest.mark.parametrize("digit", ["\u00b2", "\u0665"])  # superscript two, Arabic-Indic five
def test_a_number_written_with_other_digits_is_a_parse_error(field: str, number: str, digit: str):
    """str.isdigit() is true for digits int() cannot read ('²') and for non-ASCII ones int() reads
    ('٥' is 5): a number in SIP is ASCII digits (RFC 3261 §25.1). '²' raised ValueError out of the
    parser, so the transport raised for one datagram (a traceback logged per packet, a connection
    torn down) instead of answering 400."""
    data = BASE.replace(field, number.format(digit)).encode()
    assert isinstance(verdict(data), SipParseError)
