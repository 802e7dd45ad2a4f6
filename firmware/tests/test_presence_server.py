"""The presence server's I/O decisions without sockets: where each NOTIFY goes, what a NOTIFY too
large for UDP becomes, what other events get, and how a watcher that is gone ends. The transaction
layer is a recorder (FakeStack); everything else is the real code (notifier, cache, documents).
The end-to-end behaviour against Kamailio and sipp is in test_presence.py."""

import asyncio
import random
import re
from dataclasses import dataclass, field

from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.presence.cloud import failback_spread
from vaxelbox.presence.model import LineDialog, LineState, Party
from vaxelbox.presence.server import PresenceServer
from vaxelbox.routing.chain import Next, RequestContext
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.digest import SipDigest, authorization
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.transport import Flow
from vaxelbox.site import demo_site_text, parse_site

LAN, WAN = ("192.0.2.1", 5060), ("198.51.100.1", 5060)
PHONE = ("192.0.2.11", 5062)  # where the watcher's SUBSCRIBE comes from
SITE = parse_site(demo_site_text(), "demo")
ANNA = next(u for u in SITE.users if u.id == "anna")


class FakeFlow(Flow):
    def __init__(self, local, remote, transport: str = "udp") -> None:
        super().__init__(local, remote)
        self.transport = transport
        self.reliable = transport != "udp"

    def send(self, data: bytes) -> None:
        pass


@dataclass
class FakeStack:
    sent: list[tuple[Request, Flow, object, object]] = field(default_factory=list)

    def send_request(self, request, flow, on_response, on_timeout):
        self.sent.append((request, flow, on_response, on_timeout))

    def release(self, running) -> None:
        pass  # the fork lets go of a branch after its final response: nothing held here


class FakeCloud:
    target = None

    def ready_flow(self) -> Flow:
        return FakeFlow(WAN, ("203.0.113.5", 5060))


class NoActivities:
    def activity(self, user: str) -> None:
        return None


class Office:
    def __init__(self) -> None:
        self.stack = FakeStack()
        self.flows: dict[tuple[str, tuple[str, int]], Flow] = {}
        self.auth = SipDigest(realm=SITE.cloud.domain, algorithms=("MD5",))
        self.server = PresenceServer(
            self.stack, EdgeAddresses(LAN, WAN), self.flow_of, FakeCloud(), BindingMirror(), lambda: SITE,
            self.auth, NoActivities(), rng=random.Random(1), clock=lambda: 1000.0,
        )  # fmt: skip

    def flow_of(self, transport: str, remote: tuple[str, int]) -> Flow:
        return self.flows.setdefault((transport, remote), FakeFlow(LAN, remote, transport))

    def run(self, request: Request, mode: Mode = Mode.ONLINE, side: str = "lan") -> RequestContext:
        context = RequestContext(request, self.flow_of("udp", PHONE), side, mode)  # type: ignore[arg-type]
        assert self.server(context) is Next.STOP or context.response is None
        return context

    async def subscribe(self, event: str = "dialog", contact: str = "sip:101@192.0.2.11:5062") -> Response:
        """SUBSCRIBE as Anna to Björn (102), answering the 407; the first NOTIFY is then sent."""
        challenge = self.run(subscribe(event, contact)).response
        assert challenge is not None
        assert challenge.status == 407
        request = subscribe(event, contact, cseq=2)
        credentials = authorization(
            challenge.get("Proxy-Authenticate") or "", "SUBSCRIBE", str(request.uri),
            ANNA.sip.user, ANNA.sip.password.get_secret_value(),
        )  # fmt: skip
        request.add("Proxy-Authorization", credentials)
        response = self.run(request).response
        assert response is not None
        await asyncio.sleep(0)  # the NOTIFY goes right after the 200
        return response

    def notifies(self) -> list[tuple[Request, Flow]]:
        return [(r, f) for r, f, _, _ in self.stack.sent if r.method == "NOTIFY"]


def subscribe(event: str, contact: str, cseq: int = 1) -> Request:
    accept = "application/dialog-info+xml" if event == "dialog" else "application/pidf+xml"
    message = parse_message(
        (
            f"SUBSCRIBE sip:102@{SITE.cloud.domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {PHONE[0]}:{PHONE[1]};branch=z9hG4bK-s{cseq};rport\r\n"
            f"From: <sip:demo-101@{SITE.cloud.domain}>;tag=watcher\r\n"
            f"To: <sip:102@{SITE.cloud.domain}>\r\nCall-ID: watch-1\r\nCSeq: {cseq} SUBSCRIBE\r\n"
            f"Contact: <{contact}>\r\nEvent: {event}\r\nAccept: {accept}\r\nExpires: 600\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def busy_with(office: Office, calls: int) -> None:
    """Björn in `calls` confirmed calls, with long identities (a big dialog-info document)."""
    for n in range(calls):
        dialog = LineDialog(
            f"d{n}", LineState.CONFIRMED, f"call-{n}-{'x' * 40}@pbx.example.net", f"lt{n}", f"rt{n}",
            "recipient", Party("sip:102@demo.vaxel.example.net"),
            Party(f"sip:+4684650040{n}@trunk.example.net", '"A caller with a long name"'),
        )  # fmt: skip
        office.server._office_dialog("bjorn", dialog)


async def test_notify_to_the_wrong_address_never_happens():
    """The NOTIFY goes back over the flow the SUBSCRIBE came in on, whatever the Contact says (a
    phone behind a NAT writes an address nobody can reach); its Request-URI is the Contact (§12)."""
    office = Office()
    response = await office.subscribe(contact="sip:101@10.9.9.9:5060")
    assert response.status == 200
    ((notify, flow),) = office.notifies()
    assert flow.remote == PHONE
    assert str(notify.uri) == "sip:101@10.9.9.9:5060"
    assert (notify.get("Subscription-State") or "").startswith("active")


async def test_large_notify_over_udp_is_trimmed_to_what_the_lamp_needs():
    office = Office()
    await office.subscribe()
    busy_with(office, 8)
    notify, flow = office.notifies()[-1]
    assert flow.transport == "udp"
    assert len(notify.to_bytes()) <= 1300
    assert notify.body.count(b"<dialog ") == 1
    assert b"<state>confirmed</state>" in notify.body


async def test_large_notify_goes_over_the_watchers_stream_flow():
    office = Office()
    await office.subscribe()
    stream = office.flow_of("tcp", (PHONE[0], 40123))  # the phone registered over TCP
    office.server.bindings.grant(f"sip:{ANNA.sip.user}@{SITE.cloud.domain}", "sip:101@192.0.2.11:40123",
                                 stream, 600, "Yealink")  # fmt: skip
    busy_with(office, 8)
    notify, flow = office.notifies()[-1]
    assert flow is stream
    assert notify.body.count(b"<dialog ") == 8
    assert notify.vias[0].transport == "TCP"


async def test_other_events_go_to_the_cloud_online_and_get_489_locally():
    office = Office()
    request = subscribe("message-summary", "sip:101@192.0.2.11:5062")
    assert office.run(request).response is None  # not ours: on down the chain, to the cloud
    refused = office.run(subscribe("message-summary", "sip:101@192.0.2.11:5062"), Mode.LOCAL).response
    assert refused is not None
    assert refused.status == 489
    assert refused.get("Allow-Events") == "dialog, presence"


async def test_zombie_watcher_ends_at_481_and_the_upstream_subscription_goes_with_it():
    office = Office()
    await office.subscribe()
    upstream = [r for r, _, _, _ in office.stack.sent if r.method == "SUBSCRIBE"]
    assert len(upstream) == 1  # the one upstream subscription, to Björn
    _, _, answered, _ = next(s for s in office.stack.sent if s[0].method == "NOTIFY")
    answered(_response(office.notifies()[0][0], 481))
    assert office.server.notifier.watchers("bjorn") == []
    assert office.server.cloud.get("bjorn") is None


async def test_a_dialog_that_ends_is_sent_once_as_terminated():
    office = Office()
    await office.subscribe()
    busy_with(office, 1)
    office.server._office_dialog(
        "bjorn", LineDialog("d0", LineState.TERMINATED, "call-0-" + "x" * 40 + "@pbx.example.net")
    )
    last = office.notifies()[-1][0]
    assert re.search(rb"<state[^>]*>terminated</state>", last.body)
    busy_with(office, 0)
    office.server._fan_out("bjorn")
    assert b"<dialog " not in office.notifies()[-1][0].body


def test_failback_spread_bounds():
    assert failback_spread(1) == 2.0
    assert failback_spread(100) == 10.0
    assert failback_spread(10_000) == 60.0


def _response(request: Request, status: int) -> Response:
    message = parse_message(
        (
            f"SIP/2.0 {status} X\r\nVia: {request.get('Via')}\r\nFrom: {request.get('From')}\r\n"
            f"To: {request.get('To')}\r\nCall-ID: {request.call_id}\r\nCSeq: {request.get('CSeq')}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Response)
    return message


async def test_no_orphan_at_the_cloud_when_the_last_watcher_leaves_during_an_outage():
    """The cloud still holds the upstream subscription made before the WAN cut: when the last
    watcher leaves while local, it is unsubscribed once the cloud is back, not left to expire."""
    office = Office()
    await office.subscribe()
    first = next(r for r, _, _, _ in office.stack.sent if r.method == "SUBSCRIBE")
    _, _, answered, _ = next(s for s in office.stack.sent if s[0] is first)
    ok = _response(first, 200)
    ok.replace("To", f"{first.get('To')};tag=cloud")
    ok.add("Contact", "<sip:102@203.0.113.5>")
    ok.add("Expires", "3600")
    answered(ok)
    office.server.mode_changed(Mode.LOCAL)
    _, _, notify_answered, _ = next(s for s in office.stack.sent if s[0].method == "NOTIFY")
    notify_answered(_response(office.notifies()[0][0], 481))  # the watcher is gone
    assert not [r for r, _, _, _ in office.stack.sent if r.method == "SUBSCRIBE" and r is not first]
    office.server.mode_changed(Mode.ONLINE)
    for _ in range(30):
        await asyncio.sleep(0.1)
        later = [r for r, _, _, _ in office.stack.sent if r.method == "SUBSCRIBE" and r is not first]
        if later:
            break
    (unsubscribe,) = later
    assert unsubscribe.call_id == first.call_id
    assert unsubscribe.to.tag == "cloud"
    assert unsubscribe.get("Expires") == "0"
