"""The office's own view of its calls (presence.calls), without sockets: what the relay reports
becomes each office user's dialog, in the order a busy lamp must show it."""

import time

from vaxelbox.presence.calls import MAX_AGE, OfficeCalls, dialog_id, state_of
from vaxelbox.presence.model import LineDialog, LineState
from vaxelbox.routing.chain import RequestContext, Target
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.transport import Flow

PHONE_101, PHONE_102, HANDSET_102 = ("192.0.2.11", 5060), ("192.0.2.12", 5060), ("192.0.2.13", 5060)


class Quiet(Flow):
    transport = "udp"
    reliable = False

    def send(self, data: bytes) -> None:
        pass


def invite(call_id: str = "call-1", to_tag: str | None = None) -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    message = parse_message(
        (
            "INVITE sip:102@example.net SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-1\r\n"
            'From: "Anna" <sip:101@example.net>;tag=from-101\r\n'
            f"To: <sip:102@example.net>{tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            "Contact: <sip:101@192.0.2.11>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def response(request: Request, status: int, to_tag: str | None = None) -> Response:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-1\r\n"
        f"From: {request.get('From')}\r\nTo: <sip:102@example.net>{tag}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def context(request: Request, side: str = "lan") -> RequestContext:
    ctx = RequestContext(request, Quiet(("192.0.2.1", 5060), PHONE_101), side, Mode.ONLINE)  # type: ignore[arg-type]
    ctx.targets = [Target("wan", None, label="cloud")]
    return ctx


def branch_to(remote: tuple[str, int], user: str) -> Target:
    return Target("lan", Quiet(("192.0.2.1", 5060), remote), label=user, user=user)


class View:
    def __init__(self) -> None:
        self.seen: list[tuple[str, LineDialog]] = []
        self.calls = OfficeCalls(
            caller_of=lambda ctx, target: "anna" if ctx.side == "lan" else None,
            callee_of=lambda ctx, target: target.user if target else None,
            aor=lambda user: f"sip:{user}@example.net",
            on_dialog=lambda user, dialog: self.seen.append((user, dialog)),
        )

    def states(self, user: str) -> list[str]:
        return [d.state.text for u, d in self.seen if u == user]


def test_state_of_follows_rfc_4235():
    assert state_of(100, None) is LineState.TRYING
    assert state_of(183, None) is LineState.PROCEEDING
    assert state_of(180, "t") is LineState.EARLY
    assert state_of(200, "t") is LineState.CONFIRMED
    assert state_of(486, "t") is LineState.TERMINATED


def test_caller_goes_trying_early_confirmed_terminated():
    view, request = View(), invite()
    ctx = context(request)
    view.calls.request(ctx)
    view.calls.answered(ctx, response(request, 180, "t102"))
    view.calls.answered(ctx, response(request, 200, "t102"))
    bye = invite()
    bye.method = "BYE"
    bye.replace("To", "<sip:102@example.net>;tag=t102")
    view.calls.request(context(bye))
    assert view.states("anna") == ["trying", "early", "confirmed", "terminated"]
    last = view.seen[-1][1]
    assert (last.call_id, last.local_tag, last.remote_tag) == ("call-1", "from-101", "t102")
    assert last.direction == "initiator"
    assert last.reason == "remote-bye"
    assert last.id == dialog_id("call-1", "initiator")


def test_callee_with_two_phones_has_one_dialog_and_the_answer_wins():
    """Desk phone and DECT handset ring together; the handset's 487 after the desk phone answered
    never darkens the lamp (the losing branch of a fork)."""
    view, request = View(), invite()
    ctx = context(request, side="wan")
    desk, handset = branch_to(PHONE_102, "bjorn"), branch_to(HANDSET_102, "bjorn")
    view.calls.branch(ctx, handset, response(request, 180, "handset"))
    view.calls.branch(ctx, desk, response(request, 180, "desk"))
    view.calls.branch(ctx, desk, response(request, 200, "desk"))
    view.calls.branch(ctx, handset, response(request, 487, "handset"))
    assert view.states("bjorn") == ["early", "confirmed"]  # one NOTIFY per change, not one per branch
    answered = view.seen[-1][1]
    assert answered.local_tag == "desk"
    assert answered.remote_tag == "from-101"
    assert answered.direction == "recipient"
    assert answered.remote.identity == "sip:101@example.net"
    assert answered.remote.target == "sip:101@192.0.2.11"  # for pickup with Replaces


def test_callee_lamp_goes_dark_only_when_every_branch_failed():
    view, request = View(), invite()
    ctx = context(request, side="wan")
    desk, handset = branch_to(PHONE_102, "bjorn"), branch_to(HANDSET_102, "bjorn")
    view.calls.branch(ctx, desk, response(request, 180, "desk"))
    view.calls.branch(ctx, handset, response(request, 180, "handset"))
    view.calls.branch(ctx, desk, response(request, 487, "desk"))
    assert view.states("bjorn") == ["early"]
    view.calls.branch(ctx, handset, response(request, 487, "handset"))
    assert view.states("bjorn") == ["early", "terminated"]
    assert view.seen[-1][1].reason == "cancelled"
    assert len(view.calls) == 0


def test_a_branch_that_never_rang_shows_nothing():
    view, request = View(), invite()
    view.calls.branch(context(request, side="wan"), branch_to(PHONE_102, "bjorn"), response(request, 480))
    view.calls.branch(context(request, side="wan"), branch_to(PHONE_102, "bjorn"), None)
    assert view.seen == []


def test_a_refused_request_starts_no_dialog():
    """A 407 challenge (settled in the chain, no targets) must not leave a lamp blinking."""
    view, request = View(), invite()
    ctx = context(request)
    ctx.targets = []
    view.calls.request(ctx)
    assert view.seen == []


def test_in_dialog_and_other_requests_are_ignored():
    view = View()
    reinvite = invite(to_tag="t102")
    view.calls.request(context(reinvite))
    view.calls.branch(
        context(reinvite, side="wan"), branch_to(PHONE_102, "bjorn"), response(reinvite, 200, "t102")
    )
    assert view.seen == []


def test_a_call_whose_bye_was_lost_goes_dark_after_the_longest_call():
    """A stuck busy lamp: the BYE never crossed the appliance; after MAX_AGE the leg ends."""
    view, request = View(), invite()
    ctx = context(request)
    view.calls.request(ctx)
    view.calls.answered(ctx, response(request, 200, "t102"))
    view.calls.expire(time.monotonic() + 60)
    assert view.states("anna") == ["trying", "confirmed"]
    view.calls.expire(time.monotonic() + MAX_AGE + 1)
    assert view.states("anna") == ["trying", "confirmed", "terminated"]
    assert view.seen[-1][1].reason == "timeout"
