"""What the relay and the transaction layer hold for a call, and for how long (issue 12 review):
state is freed at the final response, but never before what still needs it has run.

Sans-I/O where possible: the real SipStack and EdgeRelay over a flow that records what is sent."""

import asyncio

from vaxelbox.edge.admission import MAX_BANNED, Admission
from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.relay import EdgeAddresses, EdgeRelay
from vaxelbox.edge.upstream import Upstream
from vaxelbox.local.plan import Reject, Ring
from vaxelbox.local.plan_runner import LocalCalls
from vaxelbox.routing.chain import Next, RequestContext
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, parse_message
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transaction import TimerSettings
from vaxelbox.sip.transport import Flow, Limits, TransportLayer

LAN, WAN = ("192.0.2.1", 5060), ("198.51.100.1", 5062)


class RecordingFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, local: tuple[str, int], remote: tuple[str, int]) -> None:
        super().__init__(local, remote)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def invite(branch: str, call_id: str) -> Request:
    message = parse_message(
        (
            f"INVITE sip:102@office.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:101@office.example>;tag=a\r\nTo: <sip:102@office.example>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def local_relay(plan: object) -> EdgeRelay:
    """A relay in local mode whose local chain settles every request with `plan`."""
    layer = TransportLayer(lambda message, flow: None)
    stack = SipStack(layer)
    relay = EdgeRelay(
        stack, EdgeAddresses(LAN, WAN), Upstream(layer, ["sip:cloud.example"], WAN), BindingMirror()
    )

    def settle(context: RequestContext) -> Next:
        context.plan = plan  # type: ignore[assignment]
        return Next.STOP

    relay.set_chains(local=[settle], responses=[])
    relay.mode = lambda: Mode.LOCAL
    relay.execute_plan = LocalCalls(relay.forking, lambda user: [], lambda context, trunk: [])
    return relay


async def test_a_local_call_answered_at_once_leaves_nothing_behind_in_the_relay():
    """A plan answered before `execute_plan` returns (a Reject, or a Ring with nobody registered:
    local mode's everyday 480) must not leave its runner in `relay.calls`: the runner holds the
    context, the parsed INVITE and its transaction, so nothing would ever free them (one per call)."""
    for plan in (Reject(486, "Busy Here", "busy"), Ring(("anna",), 20.0, "ring anna")):
        relay = local_relay(plan)
        phone = RecordingFlow(LAN, ("192.0.2.10", 5060))
        for n in range(3):
            relay.stack.on_message(invite(f"z9hG4bK-local{n}", f"local-{n}"), phone)
        finals = [data.split(b"\r\n", 1)[0] for data in phone.sent if not data.startswith(b"SIP/2.0 100")]
        assert (
            finals
            == [
                b"SIP/2.0 486 Busy Here"
                if isinstance(plan, Reject)
                else b"SIP/2.0 480 Temporarily Unavailable"
            ]
            * 3
        )
        assert relay.calls == {}


def test_scanner_bans_stay_bounded_under_a_flood_of_sources():
    """Each scanner source is banned for 10 minutes, and a ban was dropped only when that source
    came back after it: scanners from ever new (or spoofed) addresses grew the table without bound
    (about 700,000 entries an hour at the per-source rate limit's 200 messages/s)."""
    admission = Admission()
    scan = invite("z9hG4bK-scan", "scan")
    scan.add("User-Agent", "friendly-scanner")
    for n in range(MAX_BANNED + 500):
        assert not admission.screen(scan, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
    assert len(admission._banned) == MAX_BANNED
    newest = f"10.{(MAX_BANNED + 499) >> 16}.{((MAX_BANNED + 499) >> 8) & 255}.{(MAX_BANNED + 499) & 255}"
    assert admission.is_banned(newest)  # the oldest bans made room, not the newest
    assert not admission.is_banned("10.0.0.0")


def rfc2543_invite(call_id: str, branch: str = "") -> bytes:
    """An INVITE as an RFC 2543 peer sends it: no magic-cookie branch in its Via (§17.2.3)."""
    return (
        f"INVITE sip:102@office.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060{branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:101@office.example>;tag=a\r\nTo: <sip:102@office.example>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_an_rfc2543_peers_retransmission_is_never_refused_as_new_work():
    """At the transaction ceiling (or overloaded) new work is refused before parsing, but never a
    retransmission of a request taken on, which `taken_on` finds by its top branch. An RFC 2543
    peer's request has no such branch: its retransmitted INVITE got the stateless 503, a final
    answer the phone takes while its call goes on here. Nor may a branch written `rfc2543` (what
    such transactions were counted under) pass as taken on."""
    layer = TransportLayer(lambda message, flow: None, Limits(max_transactions=1))
    stack = SipStack(layer)
    phone = RecordingFlow(LAN, ("192.0.2.10", 5060))
    layer._received(rfc2543_invite("old-1"), phone)
    layer._received(rfc2543_invite("old-1"), phone)  # our 100 was lost: the phone sends it again
    layer._received(rfc2543_invite("new-2", ";branch=rfc2543"), phone)  # new work, whatever its branch
    assert [data.split(b"\r\n", 1)[0] for data in phone.sent] == [
        b"SIP/2.0 100 Trying",
        b"SIP/2.0 100 Trying",
        b"SIP/2.0 503 Service Unavailable",
    ]
    assert len(stack.servers) == 1


class ReliableFlow(RecordingFlow):
    transport = "tcp"
    reliable = True  # waiting timers are zero: a transaction that ends, ends at once


class Failing:
    """A transaction user with a bug: it raises on every request it is handed."""

    def admit(self, message: object, flow: Flow) -> bool:
        return True

    def on_request(self, transaction: object, request: Request) -> None:
        raise RuntimeError("a bug in the transaction user")

    def on_cancel(self, invite: object, cancel: Request) -> None:
        pass

    def on_stray(self, message: object, flow: Flow) -> None:
        pass


def fail(*args: object) -> None:
    raise RuntimeError("a bug in a response or timeout handler")


async def test_a_bug_in_a_transaction_user_does_not_keep_the_transaction_for_ever():
    """An exception out of a user's handler stopped the transaction's actions half-way: a request
    was never answered (a server transaction has no timer before its final response), a final
    response's ACK and wait timer were never run, a timeout never ended its transaction. Each stayed
    in the stack for ever, counted against the ceiling: a peer that can trigger one bug (a phone's
    'Expires: ²' reached int() in the registrars) could fill it, and then every new call is refused."""
    layer = TransportLayer(lambda message, flow: None)
    stack = SipStack(layer, TimerSettings(t1=0.001))
    stack.user = Failing()  # type: ignore[assignment]
    phone = ReliableFlow(LAN, ("192.0.2.10", 5060))
    layer._received(invite("z9hG4bK-bug1", "bug-1").to_bytes().replace(b"INVITE", b"OPTIONS"), phone)
    assert [data.split(b"\r\n")[0] for data in phone.sent] == [b"SIP/2.0 500 Server Internal Error"]

    callee = ReliableFlow(LAN, ("192.0.2.20", 5060))
    answered = invite("z9hG4bK-bug2", "bug-2")
    stack.send_request(answered, callee, fail, fail)
    response = parse_message(
        callee.sent[0]
        .split(b"\r\n\r\n")[0]
        .replace(b"INVITE sip:102@office.example SIP/2.0", b"SIP/2.0 486 Busy")
        + b"\r\n\r\n"
    )
    layer._received(response.to_bytes(), callee)
    assert callee.sent[-1].startswith(b"ACK ")  # the ACK of a non-2xx is still sent
    stack.send_request(invite("z9hG4bK-bug3", "bug-3"), callee, fail, fail)  # never answered: Timer B
    await asyncio.sleep(0.2)
    assert (stack.servers, stack.clients) == ({}, {})
    assert layer.stats["handler_errors"] == 3
