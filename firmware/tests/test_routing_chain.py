"""The routing chains without sockets: each processor on a request context, the target chain's
per-branch flows and Record-Route, and the local plan runner's fallbacks on a fake clock."""

import gc
import weakref
from dataclasses import dataclass, field

from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.flowtoken import make_token
from vaxelbox.edge.front import AnswerOptions, ProxyChecks, RouteToken
from vaxelbox.edge.online import FromCloud, PhoneLocator, between_phones, to_cloud
from vaxelbox.edge.relay import EdgeRelay
from vaxelbox.edge.upstream import Upstream
from vaxelbox.local.plan import Reject, Ring
from vaxelbox.local.plan_runner import LocalCalls
from vaxelbox.local.processors import InDialog, not_served_locally
from vaxelbox.routing.chain import Chain, ModeGate, Next, RequestContext, ResponseChain, Target
from vaxelbox.routing.forking import EdgeAddresses, Forking
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.proxy import forward_copy, new_branch
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transport import Flow, TransportLayer
from vaxelbox.sip.uri import SipUri, parse_uri
from vaxelbox.sip.via import Via

LAN, WAN = ("192.0.2.1", 5060), ("198.51.100.1", 5062)
ADDRESSES = EdgeAddresses(LAN, WAN)


class FakeFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, local, remote) -> None:
        super().__init__(local, remote)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


@dataclass
class FakeStack:
    """Records the client transactions the target chain starts, so the test can answer them."""

    sent: list[tuple[Request, Flow, object, object]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)  # indexes into `sent` whose user let go

    def send_request(self, request, flow, on_response, on_timeout) -> int:
        self.sent.append((request, flow, on_response, on_timeout))
        return len(self.sent) - 1

    def release(self, running: int) -> None:
        self.released.append(running)


@dataclass
class FakeScheduler:
    now: float = 0.0
    due: list[list] = field(default_factory=list)

    def __call__(self, delay, callback):
        entry = [self.now + delay, callback, False]
        self.due.append(entry)

        class Handle:
            def cancel(self_inner) -> None:
                entry[1:] = [None, True]  # and the callback goes, as asyncio's handles let it go

        return Handle()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        for entry in sorted(self.due, key=lambda e: e[0]):
            if entry[0] <= end and not entry[2]:
                self.now = entry[0]
                entry[2] = True
                entry[1]()
        self.now = end


def request(method: str, uri: str, extra: str = "", to_tag: str | None = None) -> Request:
    to = "<sip:201@example.net>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-c1\r\n{extra}"
        f"Max-Forwards: 70\r\nFrom: <sip:demo-101@example.net>;tag=f\r\nTo: {to}\r\n"
        f"Call-ID: c@x\r\nCSeq: 1 {method}\r\nContact: <sip:demo-101@192.0.2.10>\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answer(sent: Request, status: int) -> Response:
    text = (
        f"SIP/2.0 {status} X\r\n" + "".join(f"Via: {v}\r\n" for v in sent.get_all("Via"))
        + f"From: {sent.get('From')}\r\nTo: {sent.get('To')};tag=t{status}\r\nCall-ID: c@x\r\n"
        f"CSeq: {sent.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def is_ours(uri) -> bool:
    return isinstance(uri, SipUri) and (uri.host, uri.port or 5060) in (LAN, WAN)


PHONE_A = FakeFlow(LAN, ("192.0.2.10", 5060))
PHONE_B = FakeFlow(LAN, ("192.0.2.20", 5060))
CLOUD = FakeFlow(WAN, ("203.0.113.5", 5060))
CALLER = FakeFlow(LAN, ("192.0.2.30", 5060))


def flow_of(transport: str, address: tuple[str, int]) -> Flow | None:
    return {PHONE_A.remote: PHONE_A, PHONE_B.remote: PHONE_B, CLOUD.remote: CLOUD}.get(address)


def context(message: Request, flow: Flow = PHONE_A, mode: Mode = Mode.ONLINE) -> RequestContext:
    return RequestContext(message, flow, ADDRESSES.side_of(flow), mode)


def our_uri(flow: Flow) -> str:
    return ADDRESSES.uri("lan", "udp", make_token(flow.transport, *flow.remote))


# -- the front of the chain ------------------------------------------------------------------------


def test_options_to_the_edge_is_answered_and_options_to_a_user_is_not():
    ctx = context(request("OPTIONS", "sip:192.0.2.1:5060"))
    assert AnswerOptions(is_ours)(ctx) is Next.STOP
    assert ctx.response.status == 200
    assert "REGISTER" in ctx.response.get("Allow")
    assert AnswerOptions(is_ours)(context(request("OPTIONS", "sip:101@192.0.2.1"))) is Next.CONTINUE


def test_proxy_checks_refuse_what_a_proxy_must_refuse():
    ctx = context(request("INVITE", "sip:201@example.net", "Proxy-Require: foo\r\n"))
    assert ProxyChecks(frozenset({"192.0.2.1:5060"}))(ctx) is Next.STOP
    assert ctx.response.status == 420


async def test_a_request_looping_back_through_an_ipv6_edge_gets_482():
    """§16.3 item 4 on IPv6: our Via's sent-by is '[2001:db8::1]:5060', so the relay's own sent-by
    set must be written so too (it was '2001:db8::1:5060', and a loop was forwarded again)."""
    lan, wan = ("2001:db8::1", 5060), ("2001:db8:1::1", 5062)
    layer = TransportLayer(lambda message, flow: None)
    stack = SipStack(layer)
    EdgeRelay(stack, EdgeAddresses(lan, wan), Upstream(layer, ["sip:cloud.example"], wan), BindingMirror())
    phone_via = "SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK-p1"
    original = parse_message(
        (
            f"INVITE sip:201@example.net SIP/2.0\r\nVia: {phone_via}\r\nMax-Forwards: 70\r\n"
            "From: <sip:101@example.net>;tag=f\r\nTo: <sip:201@example.net>\r\nCall-ID: loop@x\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(original, Request)
    ours = Via("UDP", *lan, {"branch": new_branch(original)})  # as the relay forwards it
    looped = forward_copy(original, ours)
    looped.add("Via", phone_via, first=True)  # back unchanged, above our Via (a hop that echoes it)
    looped_back = parse_message(looped.to_bytes().replace(b"Max-Forwards: 69", b"Max-Forwards: 70"))
    assert isinstance(looped_back, Request)
    phone = FakeFlow(lan, ("2001:db8::10", 5060))
    stack.on_message(looped_back, phone)
    finals = [data.split(b"\r\n", 1)[0] for data in phone.sent if not data.startswith(b"SIP/2.0 100")]
    assert finals == [b"SIP/2.0 482 Loop Detected"]


def test_route_token_names_the_flow_of_the_last_of_our_topmost_routes():
    token = RouteToken(is_ours, flow_of)
    # The cloud's request for phone A: Route = our WAN URI, then our LAN URI naming A.
    routes = f"Route: <{ADDRESSES.uri('wan', 'udp')}>, <{our_uri(PHONE_A)}>\r\n"
    ctx = context(request("BYE", "sip:demo-101@192.0.2.10", routes, to_tag="x"), flow=CLOUD)
    token(ctx)
    assert ctx.token_target is PHONE_A
    assert ctx.request.routes == []  # ours are popped (§16.4)


def test_beyond_the_cloud_the_far_office_phone_is_found():
    """A dialog A -> cloud -> B: A's BYE names the cloud first; in local mode it goes to B."""
    routes = (
        f"Route: <{our_uri(PHONE_A)}>, <{ADDRESSES.uri('wan', 'udp')}>, <sip:sbc.example.net;lr>, "
        f"<{ADDRESSES.uri('wan', 'udp')}>, <{our_uri(PHONE_B)}>\r\n"
    )
    ctx = context(request("BYE", "sip:demo-201@192.0.2.20", routes, to_tag="x"), mode=Mode.LOCAL)
    RouteToken(is_ours, flow_of)(ctx)
    assert ctx.token_target is None  # online, it goes to the cloud
    assert ctx.far_target is PHONE_B
    assert InDialog()(ctx) is Next.STOP
    assert [t.flow for t in ctx.targets] == [PHONE_B]


def test_in_dialog_toward_a_dead_cloud_is_answered_here():
    bye = context(request("BYE", "sip:x@203.0.113.9", to_tag="x"), mode=Mode.LOCAL)
    InDialog()(bye)
    assert bye.response.status == 200
    assert "the far end was the cloud" in bye.response.get("Reason")
    reinvite = context(request("INVITE", "sip:x@203.0.113.9", to_tag="x"), mode=Mode.LOCAL)
    InDialog()(reinvite)
    assert reinvite.response.status == 481
    assert InDialog()(context(request("INVITE", "sip:201@example.net"))) is Next.CONTINUE


def test_from_cloud_goes_to_the_phone_and_a_phone_goes_to_the_cloud():
    locate = PhoneLocator(BindingMirror(), flow_of)
    ctx = context(request("INVITE", "sip:demo-101@192.0.2.10"), flow=CLOUD)
    assert FromCloud(locate)(ctx) is Next.STOP
    assert ctx.targets == [Target("lan", PHONE_A, label="phone 192.0.2.10")]
    unknown = context(request("INVITE", "sip:demo-109@192.0.2.99"), flow=CLOUD)
    FromCloud(locate)(unknown)
    assert unknown.response.status == 480
    phone = context(request("INVITE", "sip:201@example.net"))
    assert FromCloud(locate)(phone) is Next.CONTINUE
    assert to_cloud(phone) is Next.STOP
    assert phone.targets == [Target("wan", None, label="cloud")]


def test_the_mode_gate_picks_the_chain_by_mode():
    seen = []
    gate = ModeGate(
        online=Chain("online", [lambda c: seen.append("online") or Next.STOP]),
        local=Chain("local", [lambda c: seen.append("local") or Next.STOP]),
    )
    assert gate(context(request("INVITE", "sip:201@example.net"))) is Next.STOP
    gate(context(request("INVITE", "sip:201@example.net"), mode=Mode.LOCAL))
    assert seen == ["online", "local"]


def test_what_local_mode_does_not_serve_gets_480_at_once():
    ctx = context(request("MESSAGE", "sip:201@example.net"), mode=Mode.LOCAL)
    assert not_served_locally(ctx) is Next.STOP
    assert ctx.response.status == 480
    assert "MESSAGE needs the cloud" in ctx.response.get("Reason")


# -- the target chain ----------------------------------------------------------------------------------


def forking(stack: FakeStack, scheduler: FakeScheduler, seen: list | None = None) -> Forking:
    record = (lambda c, t, r: seen.append((t.label, r.status if r else None))) if seen is not None else None
    return Forking(stack, ADDRESSES, scheduler, ResponseChain([record] if record else []))


def test_each_branch_leaves_on_its_own_flow_with_tokens_that_route_back():
    stack, scheduler = FakeStack(), FakeScheduler()
    ctx = context(request("INVITE", "sip:201@example.net"), mode=Mode.LOCAL)
    targets = [
        Target("lan", PHONE_B, parse_uri("sip:demo-201@192.0.2.20"), "b"),
        Target("lan", CLOUD, parse_uri("sip:demo-201@203.0.113.5"), "c"),
    ]
    forking(stack, scheduler).fork(ctx, targets, lambda r: None)
    (first, flow_1, *_), (_, flow_2, *_) = stack.sent
    assert (flow_1, flow_2) == (PHONE_B, CLOUD)
    assert str(first.uri) == "sip:demo-201@192.0.2.20"
    # Callee B's route set is the Record-Route as sent; its BYE names caller A last.
    callee_routes = [h for h in first.get_all("Record-Route")]
    bye = request("BYE", "sip:demo-101@192.0.2.10", f"Route: {', '.join(callee_routes)}\r\n", to_tag="t")
    back = context(bye, flow=PHONE_B, mode=Mode.LOCAL)
    RouteToken(is_ours, flow_of)(back)
    assert back.far_target is PHONE_A
    # Caller A's route set is the reverse; its BYE names B last.
    bye = request("BYE", "sip:demo-201@192.0.2.20", f"Route: {', '.join(reversed(callee_routes))}\r\n", "t")
    forth = context(bye, mode=Mode.LOCAL)
    RouteToken(is_ours, flow_of)(forth)
    assert forth.far_target is PHONE_B


def test_a_fork_lets_go_of_the_call_once_each_branch_has_its_final_response():
    """Issue 12: the call's state (fork, copies, context) is freed when the call is settled, not held
    by the client transactions' 32 s wait for 2xx retransmissions (those go on statelessly); and it
    is freed by reference counting alone: no cycle waits for the collector."""
    stack, scheduler = FakeStack(), FakeScheduler()
    targets = [Target("lan", PHONE_B, None, "b"), Target("wan", CLOUD, None, "c")]
    fork = forking(stack, scheduler).fork(
        context(request("INVITE", "sip:201@example.net")), targets, lambda r: None
    )
    (invite_b, _, on_b, _), (invite_c, _, on_c, on_timeout_c) = stack.sent
    on_b(answer(invite_b, 180))
    on_c(answer(invite_c, 180))
    on_b(answer(invite_b, 200))
    assert stack.released == [0]  # the winner; the other branch is being cancelled
    assert stack.sent[-1][0].method == "CANCEL"
    on_c(answer(invite_c, 487))
    assert stack.released == [0, 1]
    freed = weakref.ref(fork)
    gc.disable()
    try:
        del fork, on_b, on_c, on_timeout_c
        stack.sent.clear()  # the real stack drops the handlers it released
        assert freed() is None
    finally:
        gc.enable()


def test_register_to_the_cloud_carries_a_path_naming_the_phone():
    stack = FakeStack()
    ctx = context(request("REGISTER", "sip:example.net"))
    forking(stack, FakeScheduler()).fork(ctx, [Target("wan", CLOUD, label="cloud")], lambda r: None)
    sent = stack.sent[0][0]
    assert sent.get("Path") == f"<{ADDRESSES.uri('wan', 'udp', make_token('udp', *PHONE_A.remote))}>"
    assert sent.vias[0].host == WAN[0]


# -- the local plan runner -------------------------------------------------------------------------------


def runner_for(plan, contacts):
    stack, scheduler, answers, seen = FakeStack(), FakeScheduler(), [], []
    calls = LocalCalls(forking(stack, scheduler, seen), contacts, lambda c, p: [])
    ctx = context(request("INVITE", "sip:101@example.net"), flow=CALLER, mode=Mode.LOCAL)
    ctx.plan = plan
    runner = calls(ctx, answers.append)
    return runner, stack, scheduler, answers


def contacts_of(table):
    return lambda user: [
        Target("lan", flow, parse_uri(f"sip:{user}@{flow.remote[0]}"), user) for flow in table.get(user, [])
    ]


def test_a_user_rings_on_every_contact_and_no_answer_forwards():
    plan = Ring(("anna",), 25, "anna", on_no_answer=Ring(("bjorn",), None, "forward to bjorn"))
    runner, stack, scheduler, answers = runner_for(
        plan, contacts_of({"anna": [PHONE_A, PHONE_B], "bjorn": [CLOUD]})
    )
    assert [flow for _, flow, *_ in stack.sent] == [PHONE_A, PHONE_B]  # desk phone and DECT handset together
    for sent, _, on_response, _ in list(stack.sent):
        on_response(answer(sent, 180))
    assert [r.status for r in answers] == [180, 180]
    scheduler.advance(25)  # nobody answers: the branches are cancelled ...
    cancels = [r for r, *_ in stack.sent if r.method == "CANCEL"]
    assert len(cancels) == 2
    for sent, _, on_response, _ in [s for s in stack.sent if s[0].method == "INVITE"]:
        on_response(answer(sent, 487))
    # ... and the forward rings bjorn
    assert stack.sent[-1][1] is CLOUD
    assert stack.sent[-1][0].method == "INVITE"
    assert runner.steps == ["anna", "forward to bjorn"]


def test_busy_everywhere_takes_the_busy_forward():
    plan = Ring(("anna",), 25, "anna", on_busy=Reject(486, "Busy Here", "busy forward"))
    _, stack, _, answers = runner_for(plan, contacts_of({"anna": [PHONE_A]}))
    sent, _, on_response, _ = stack.sent[0]
    on_response(answer(sent, 486))
    assert answers[-1].status == 486
    assert "busy forward" in answers[-1].get("Reason")


def test_nobody_registered_takes_the_unavailable_plan_at_once():
    plan = Ring(
        ("anna",), 25, "anna", on_unavailable=Reject(480, "Temporarily Unavailable", "not registered")
    )
    _, stack, _, answers = runner_for(plan, contacts_of({}))
    assert stack.sent == []
    assert answers[-1].status == 480


def test_no_answer_without_a_fallback_says_no_answer_not_487():
    _, stack, scheduler, answers = runner_for(Ring(("anna",), 10, "anna"), contacts_of({"anna": [PHONE_A]}))
    sent, _, on_response, _ = stack.sent[0]
    on_response(answer(sent, 180))
    scheduler.advance(10)
    on_response(answer(sent, 487))
    assert answers[-1].status == 480
    assert "no answer from anna" in answers[-1].get("Reason")


def test_the_callers_cancel_stops_the_plan():
    plan = Ring(("anna",), 25, "anna", on_no_answer=Ring(("bjorn",), None, "bjorn"))
    runner, stack, _, answers = runner_for(plan, contacts_of({"anna": [PHONE_A], "bjorn": [PHONE_B]}))
    sent, _, on_response, _ = stack.sent[0]
    on_response(answer(sent, 180))
    runner.cancel()
    on_response(answer(sent, 487))
    assert answers[-1].status == 487
    assert all(flow is not PHONE_B for _, flow, *_ in stack.sent)


def test_an_answer_ends_the_plan():
    status = 200
    plan = Ring(("anna",), 25, "anna", on_no_answer=Ring(("bjorn",), None, "bjorn"))
    _, stack, scheduler, answers = runner_for(plan, contacts_of({"anna": [PHONE_A], "bjorn": [PHONE_B]}))
    sent, _, on_response, _ = stack.sent[0]
    on_response(answer(sent, status))
    scheduler.advance(60)
    assert [r.status for r in answers] == [200]
    assert len(stack.sent) == 1


def test_a_self_call_never_rings_the_calling_device():
    _, stack, _, _ = runner_for(Ring(("anna",), None, "anna"), contacts_of({"anna": [CALLER, PHONE_B]}))
    assert [flow for _, flow, *_ in stack.sent] == [PHONE_B]


def test_online_a_dialog_between_two_office_phones_stays_between_them():
    """Set up in local mode (route set: only us), the dialog goes on phone to phone after failback;
    a dialog through the cloud (our WAN URI after our first entry) still goes to the cloud."""
    local_dialog = f"Route: <{our_uri(PHONE_A)}>, <{our_uri(PHONE_B)}>\r\n"
    ctx = context(request("BYE", "sip:demo-201@192.0.2.20", local_dialog, to_tag="t"))
    RouteToken(is_ours, flow_of)(ctx)
    assert between_phones(ctx) is Next.STOP
    assert [t.flow for t in ctx.targets] == [PHONE_B]
    cloud_dialog = (
        f"Route: <{our_uri(PHONE_A)}>, <{ADDRESSES.uri('wan', 'udp')}>, <sip:sbc.example.net;lr>\r\n"
    )
    ctx = context(request("BYE", "sip:x@203.0.113.9", cloud_dialog, to_tag="t"))
    RouteToken(is_ours, flow_of)(ctx)
    assert between_phones(ctx) is Next.CONTINUE
