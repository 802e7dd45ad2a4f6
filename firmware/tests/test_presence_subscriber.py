"""The upstream subscription (RFC 6665 subscriber) without sockets, against a scripted cloud: what it
sends, how it answers challenges and refusals, when it refreshes and retries (with jitter, so many
subscriptions never move in step), and how it ends."""

import itertools
import random
from collections import Counter

import pytest
from vaxelbox.presence.subscriber import Credentials, UpstreamState, UpstreamSubscription
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.via import Via

TARGET = "sip:102@cloud.example.net"
CLOUD_CONTACT = "<sip:presence@198.51.100.7:5060;transport=tcp>"
RECORD_ROUTE = "<sip:sbc.cloud.example.net;lr>"
CREDENTIALS = Credentials("102", "s3cret")
_branches = itertools.count()


def via() -> Via:
    return Via("TCP", "192.0.2.1", 5060, {"branch": f"z9hG4bK-t{next(_branches)}", "rport": None})


def subscription(rng: random.Random | None = None, expires: int = 3600) -> UpstreamSubscription:
    return UpstreamSubscription(
        "u-102", TARGET, "sip:102@cloud.example.net", CREDENTIALS, "sip:192.0.2.1:5060;transport=tcp",
        rng or random.Random(7), expires=expires,
    )  # fmt: skip


def wire(message):
    parsed = parse_message(message.to_bytes())
    assert type(parsed) is type(message)
    return parsed


def answer(
    request: Request, status: int, *headers: tuple[str, str], expires: int | str | None = None
) -> Response:
    """The cloud's response; a 2xx carries Contact, Record-Route and Expires."""
    response = make_response(request, status, "X", to_tag="c1")
    if 200 <= status < 300:
        response.add("Contact", CLOUD_CONTACT)
        response.add("Record-Route", RECORD_ROUTE)
        response.add("Expires", str(expires if expires is not None else request.get("Expires")))
    for name, value in headers:
        response.add(name, value)
    return wire(response)


def notify(request: Request, cseq: int = 1, state: str = "active;expires=3600", body: bytes = b"<dialog-info/>",
           from_tag: str = "c1", call_id: str | None = None) -> Request:  # fmt: skip
    text = (
        f"NOTIFY sip:192.0.2.1:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bK-n{cseq}\r\n"
        f"Record-Route: {RECORD_ROUTE}\r\nMax-Forwards: 70\r\nFrom: <{TARGET}>;tag={from_tag}\r\n"
        f"To: {request.get('From')}\r\nCall-ID: {call_id or request.call_id}\r\nCSeq: {cseq} NOTIFY\r\n"
        f"Contact: {CLOUD_CONTACT}\r\nEvent: dialog\r\nSubscription-State: {state}\r\n"
        "Content-Type: application/dialog-info+xml\r\n\r\n"
    )
    message = parse_message(text.encode() + body)
    assert isinstance(message, Request)
    return message


def active(sub: UpstreamSubscription, now: float = 0.0) -> Request:
    """Start `sub` and bring it to active (2xx and first NOTIFY); the initial SUBSCRIBE."""
    first = wire(sub.start(now, via()))
    assert sub.on_response(first, answer(first, 200), now + 0.05, via()) is None
    response, body = sub.on_notify(notify(first), now + 0.06)
    assert (response.status, body, sub.state) == (200, b"<dialog-info/>", UpstreamState.ACTIVE)
    return first


def waited(sub: UpstreamSubscription, now: float) -> float:
    assert sub.state == UpstreamState.WAITING
    due = sub.due()
    assert due is not None
    return due - now


def test_start_sends_a_subscribe_for_dialog_events_and_arms_timer_n():
    sub = subscription()
    request = wire(sub.start(10.0, via()))
    assert (request.method, str(request.uri), request.to.tag) == ("SUBSCRIBE", TARGET, None)
    assert request.from_.tag
    assert request.call_id == sub.call_id
    assert [request.get(h) for h in ("Event", "Accept", "Expires", "Contact", "Max-Forwards")] == [
        "dialog", "application/dialog-info+xml", "3600", "<sip:192.0.2.1:5060;transport=tcp>", "70",
    ]  # fmt: skip
    assert request.cseq == (1, "SUBSCRIBE")
    assert (sub.state, sub.due()) == (UpstreamState.SUBSCRIBING, 10.0 + 64 * 0.5)


def test_2xx_and_notify_make_it_active_with_a_jittered_refresh_and_the_body_for_the_cache():
    sub = subscription()
    active(sub, 0.0)
    due = sub.due()
    assert due is not None
    assert 0.05 + 3600 * 0.6 <= due <= 0.05 + 3600 * 0.85  # Timer N stopped by the NOTIFY


def test_synchronized_refresh_storm_is_spread():
    rng = random.Random(2024)  # one generator for the appliance, as the server injects it
    subs = [subscription(rng) for _ in range(100)]
    for sub in subs:
        active(sub, 0.0)  # 100 watched users subscribed in the same moment (a boot, a failback)
    dues = sorted(sub.due() for sub in subs)
    assert dues[-1] - dues[0] > 600  # spread over most of the 0.6..0.85 window (900 s wide)
    per_second = Counter(int(due) for due in dues)
    assert max(per_second.values()) <= 3  # never the whole office at once
    per_minute = Counter(int(due // 60) for due in dues)
    assert max(per_minute.values()) <= 25  # about 7 a minute on average


def test_the_refresh_goes_in_the_dialog_along_the_route_set():
    sub = subscription()
    first = active(sub, 0.0)
    due = sub.due()
    assert sub.tick(due - 1, via()) is None
    refresh = wire(sub.tick(due, via()))
    assert (refresh.call_id, refresh.from_.tag, refresh.to.tag) == (first.call_id, first.from_.tag, "c1")
    # The 2xx's Record-Route, reversed (one entry here), and the cloud's Contact as Request-URI.
    assert (str(refresh.uri), refresh.get_all("Route")) == (
        "sip:presence@198.51.100.7:5060;transport=tcp",
        [RECORD_ROUTE],
    )
    assert (refresh.cseq, refresh.get("Expires")) == ((2, "SUBSCRIBE"), "3600")
    assert sub.due() is None  # nothing until it is answered
    assert sub.on_response(refresh, answer(refresh, 200, expires=1800), due + 0.1, via()) is None
    assert due + 0.1 + 1800 * 0.6 <= sub.due() <= due + 0.1 + 1800 * 0.85


@pytest.mark.parametrize(("status", "challenge", "credentials"), [(401, "WWW-Authenticate", "Authorization"), (407, "Proxy-Authenticate", "Proxy-Authorization")])  # fmt: skip
def test_a_challenge_is_answered_once_with_the_site_credentials(status, challenge, credentials):
    cloud = SipDigest("cloud.example.net")
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    offered = cloud.challenges()[0]
    retry = wire(sub.on_response(first, answer(first, status, (challenge, offered)), 0.1, via()))
    assert (retry.call_id, retry.from_.tag, retry.cseq) == (first.call_id, first.from_.tag, (2, "SUBSCRIBE"))
    verdict = cloud.verify("SUBSCRIBE", str(retry.uri), retry.get_all(credentials), {"102": "s3cret"}.get)
    assert verdict.username == "102"
    # The same nonce again: the password is wrong; no third try, wait.
    assert sub.on_response(retry, answer(retry, status, (challenge, offered)), 0.2, via()) is None
    assert 240 <= waited(sub, 0.2) <= 360


def test_a_stale_challenge_with_a_new_nonce_is_answered_again():
    cloud = SipDigest("cloud.example.net")
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    retry = wire(
        sub.on_response(first, answer(first, 401, ("WWW-Authenticate", cloud.challenges()[0])), 0.1, via())
    )
    stale = cloud.challenges(stale=True)[0]
    again = wire(sub.on_response(retry, answer(retry, 401, ("WWW-Authenticate", stale)), 0.2, via()))
    assert again.cseq[0] == 3
    assert (
        cloud.verify("SUBSCRIBE", str(again.uri), again.get("Authorization"), {"102": "s3cret"}.get).username
        == "102"
    )


def test_423_retries_with_min_expires():
    sub = subscription(expires=60)
    first = wire(sub.start(0.0, via()))
    retry = wire(sub.on_response(first, answer(first, 423, ("Min-Expires", "300")), 0.1, via()))
    assert (retry.get("Expires"), retry.cseq[0], retry.call_id) == ("300", 2, first.call_id)
    # A Min-Expires no higher than what we asked is not an answer we can act on.
    assert sub.on_response(retry, answer(retry, 423, ("Min-Expires", "300")), 0.2, via()) is None
    assert sub.state == UpstreamState.WAITING


def test_481_to_a_refresh_reestablishes_after_jitter():
    sub = subscription()
    first = active(sub, 0.0)
    due = sub.due()
    refresh = wire(sub.tick(due, via()))
    assert sub.on_response(refresh, answer(refresh, 481), due, via()) is None
    assert 0 <= waited(sub, due) <= 2
    new = wire(sub.tick(sub.due(), via()))
    assert (new.to.tag, new.cseq[0]) == (None, 1)
    assert new.call_id != first.call_id == refresh.call_id
    assert sub.call_id == new.call_id


def test_timer_n_without_a_notify_fails_the_subscription_and_backs_off():
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    sub.on_response(first, answer(first, 200), 0.05, via())
    assert sub.due() == 32.0  # the refresh is later; Timer N comes first
    assert sub.tick(31.9, via()) is None
    assert sub.tick(32.0, via()) is None
    assert 4 <= waited(sub, 32.0) <= 6
    assert sub.on_notify(notify(first), 33.0)[0].status == 481  # that dialog is given up
    again = wire(sub.tick(sub.due(), via()))
    assert again.call_id != first.call_id


def test_backoff_doubles_to_300_s_with_jitter_and_honours_retry_after():
    sub = subscription()
    now, delays = 0.0, []
    request = wire(sub.start(now, via()))
    for _ in range(8):
        sub.on_response(request, answer(request, 503), now, via())
        delays.append(waited(sub, now))
        now = sub.due()
        request = wire(sub.tick(now, via()))
    bases = [5, 10, 20, 40, 80, 160, 300, 300]
    assert all(0.8 * b <= d <= 1.2 * b for b, d in zip(bases, delays, strict=True)), delays
    assert len({round(d / b, 6) for b, d in zip(bases, delays, strict=True)}) > 1  # jittered
    sub.on_timeout(request, now)  # no answer at all counts as a failure too
    assert 240 <= waited(sub, now) <= 360
    fresh = subscription()
    first = wire(fresh.start(0.0, via()))
    fresh.on_response(first, answer(first, 503, ("Retry-After", "120 (maintenance)")), 0.0, via())
    assert waited(fresh, 0.0) == 120
    retry = wire(fresh.tick(120.0, via()))
    fresh.on_response(retry, answer(retry, 200), 120.0, via())
    fresh.on_notify(notify(retry), 120.0)
    refresh = wire(fresh.tick(fresh.due(), via()))
    fresh.on_response(refresh, answer(refresh, 500), 3000.0, via())
    assert 4 <= waited(fresh, 3000.0) <= 6  # a 2xx started the count again


@pytest.mark.parametrize("written", ["\u00b2", "\u0665\u0660\u0660"])
def test_numbers_in_other_digits_from_the_cloud_are_malformed_and_ignored(written):
    """'²' once reached int() (ValueError out of on_response); '٥٠٠' was read as 500. A 2xx's
    malformed Expires grants what we asked; a 503's malformed Retry-After leaves the usual backoff."""
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    assert sub.on_response(first, answer(first, 200, expires=written), 0.05, via()) is None
    sub.on_notify(notify(first, state="active"), 0.06)
    assert 0.05 + 3600 * 0.6 <= sub.due() <= 0.05 + 3600 * 0.85
    fresh = subscription()
    request = wire(fresh.start(0.0, via()))
    fresh.on_response(request, answer(request, 503, ("Retry-After", written)), 0.0, via())
    assert 4 <= waited(fresh, 0.0) <= 6


def test_a_refresh_that_got_no_answer_is_retried_in_the_dialog():
    sub = subscription()
    first = active(sub, 0.0)
    refresh = wire(sub.tick(sub.due(), via()))
    sub.on_timeout(refresh, 2500.0)
    again = wire(sub.tick(sub.due(), via()))
    assert (again.call_id, again.to.tag, again.cseq[0]) == (first.call_id, "c1", 3)


@pytest.mark.parametrize("status", [403, 404, 489])
def test_a_refusal_waits_300_s(status):
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    assert sub.on_response(first, answer(first, status), 0.1, via()) is None
    assert 240 <= waited(sub, 0.1) <= 360
    assert sub.tick(200.0, via()) is None


@pytest.mark.parametrize(
    ("state", "low", "high"),
    [
        ("terminated;reason=deactivated", 0, 2),
        ("terminated;reason=timeout", 0, 2),
        ("terminated;reason=probation;retry-after=90", 90, 90),
        ("terminated;reason=giveup", 4, 6),
        ("terminated;reason=rejected", 240, 360),
        ("terminated;reason=noresource", 240, 360),
        ("terminated", 4, 6),
    ],
)
def test_a_terminated_notify_resubscribes_as_its_reason_says(state, low, high):
    sub = subscription()
    first = active(sub, 0.0)
    response, body = sub.on_notify(notify(first, cseq=2, state=state, body=b""), 100.0)
    assert (response.status, body, sub.dialog) == (200, None, None)
    assert low <= waited(sub, 100.0) <= high
    new = wire(sub.tick(sub.due(), via()))
    assert (new.to.tag, new.call_id != first.call_id) == (None, True)


def test_a_notify_before_the_2xx_creates_the_dialog():
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    response, body = sub.on_notify(notify(first), 0.04)
    assert (response.status, body) == (200, b"<dialog-info/>")
    assert sub.dialog is not None
    assert sub.dialog.remote_tag == "c1"
    assert sub.on_response(first, answer(first, 200), 0.05, via()) is None
    assert sub.state == UpstreamState.ACTIVE
    refresh = wire(sub.tick(sub.due(), via()))
    assert (refresh.to.tag, refresh.cseq[0]) == ("c1", 2)


def test_a_notify_that_is_not_ours_gets_481_and_one_out_of_order_500():
    sub = subscription()
    first = active(sub, 0.0)
    response, body = sub.on_notify(notify(first, cseq=2, call_id="other@x"), 1.0)
    assert (response.status, body) == (481, None)  # its body never reaches the cache
    assert sub.on_notify(notify(first, cseq=2, from_tag="fork2"), 1.0)[0].status == 481
    assert sub.on_notify(notify(first, cseq=5), 1.0)[0].status == 200
    assert sub.on_notify(notify(first, cseq=4), 1.0)[0].status == 500


def test_a_shorter_expires_in_a_notify_brings_the_refresh_forward():
    sub = subscription()
    first = active(sub, 0.0)
    sub.on_notify(notify(first, cseq=2, state="active;expires=100"), 10.0)
    assert 10.0 + 60 <= sub.due() <= 10.0 + 85


def test_stop_unsubscribes_in_the_dialog_and_then_nothing_more():
    sub = subscription()
    first = active(sub, 0.0)
    bye = wire(sub.stop(50.0, via()))
    assert (bye.call_id, bye.to.tag, bye.get("Expires"), bye.get("Event")) == (
        first.call_id,
        "c1",
        "0",
        "dialog",
    )
    assert (sub.state, sub.due()) == (UpstreamState.STOPPED, None)
    assert sub.on_response(bye, answer(bye, 200, expires=0), 50.1, via()) is None
    response, body = sub.on_notify(notify(first, cseq=2, state="terminated;reason=timeout"), 50.2)
    assert (response.status, body) == (200, None)
    assert sub.tick(5000.0, via()) is None
    assert sub.stop(5001.0, via()) is None


def test_stop_while_the_first_subscribe_is_out_unsubscribes_once_it_is_answered():
    sub = subscription()
    first = wire(sub.start(0.0, via()))
    assert sub.stop(0.01, via()) is None
    bye = wire(sub.on_response(first, answer(first, 200), 0.05, via()))
    assert (bye.call_id, bye.to.tag, bye.get("Expires"), bye.cseq[0]) == (first.call_id, "c1", "0", 2)


def test_an_unsubscribe_that_is_challenged_is_answered():
    cloud = SipDigest("cloud.example.net")
    sub = subscription()
    active(sub, 0.0)
    bye = wire(sub.stop(50.0, via()))
    again = wire(
        sub.on_response(bye, answer(bye, 401, ("WWW-Authenticate", cloud.challenges()[0])), 50.1, via())
    )
    assert (again.get("Expires"), again.cseq[0]) == ("0", bye.cseq[0] + 1)
    assert (
        cloud.verify("SUBSCRIBE", str(again.uri), again.get("Authorization"), {"102": "s3cret"}.get).username
        == "102"
    )


def test_resubscribe_after_failback_is_jittered():
    """An outage longer than the grant: new subscriptions, spread over the window."""
    rng = random.Random(11)
    subs = [subscription(rng) for _ in range(100)]
    old = {sub.call_id for sub in subs if active(sub, 0.0)}
    for sub in subs:
        sub.lost(1000.0)  # the cloud went away
    assert all(sub.due() is None and sub.tick(1500.0, via()) is None for sub in subs)
    for sub in subs:
        sub.resume(5000.0, spread=30.0)  # the cloud is back, after the 3600 s grant ran out
    dues = sorted(sub.due() for sub in subs)
    assert dues[0] >= 5000.0
    assert dues[-1] <= 5030.0
    assert dues[-1] - dues[0] > 25
    assert max(Counter(int(d) for d in dues).values()) <= 10  # not all in the same second
    assert all(sub.tick(sub.due() - 0.001, via()) is None for sub in subs)
    sent = [wire(sub.tick(sub.due(), via())) for sub in subs]
    assert all(request.to.tag is None for request in sent)  # new subscriptions, not refreshes
    assert not old & {request.call_id for request in sent}


def test_failback_refreshes_the_old_subscription_so_no_orphan_is_left_at_the_cloud():
    """A short outage: the cloud still holds the subscription it granted, so the way back refreshes
    it in its dialog (jittered) instead of making a second one beside it; a 481 (the cloud forgot
    it) then makes a new one."""
    sub = subscription(random.Random(3))
    first = active(sub, 0.0)
    sub.lost(100.0)
    sub.resume(200.0, spread=10.0)
    due = sub.due()
    assert due is not None
    assert 200.0 <= due <= 210.0
    refresh = wire(sub.tick(due, via()))
    assert refresh.call_id == first.call_id
    assert refresh.to.tag == "c1"
    assert refresh.get("Expires") == "3600"
    assert sub.on_response(refresh, answer(refresh, 481), due + 0.1, via()) is None
    again = wire(sub.tick(sub.due(), via()))
    assert again.to.tag is None
    assert again.call_id != first.call_id
