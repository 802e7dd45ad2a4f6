"""Watchers' subscriptions (RFC 6665 notifier) without sockets: what each SUBSCRIBE is answered,
what each NOTIFY carries and where it goes, and when a subscription ends."""

import json

import pytest
from vaxelbox.presence.subscription import MAX_LOST, Notifier, WatcherSubscription, parse_event
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.via import Via

OUR_CONTACT = "sip:192.0.2.1:5060"
SOURCE = ("203.0.113.5", 40000)  # where the phone's SUBSCRIBE came from (its NAT binding)
DIALOG_INFO = "application/dialog-info+xml"


def subscribe(
    *,
    event: str | None = "dialog",
    expires: int | str | None = 600,
    to_tag: str | None = None,
    cseq: int = 1,
    contact: str = "<sip:101@192.168.1.10:5062;transport=udp>",
    extra: str = "",
) -> Request:
    lines = [
        "SUBSCRIBE sip:102@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.10:5062;branch=z9hG4bK-w" + str(cseq),
        *([extra] if extra else []),
        "Max-Forwards: 70",
        "From: <sip:101@example.net>;tag=w1",
        "To: <sip:102@example.net>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: watch-1@192.168.1.10",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: {contact}",
        *([f"Event: {event}"] if event is not None else []),
        *([f"Expires: {expires}"] if expires is not None else []),
        "Accept: application/dialog-info+xml",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def via() -> Via:
    return Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK-n", "rport": None})


def wire(request: Request) -> Request:
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, Request)
    return parsed


def established(notifier: Notifier, now: float = 0.0, **kwargs) -> tuple[Response, WatcherSubscription]:
    response, sub = notifier.subscribe(subscribe(**kwargs), "u-102", "udp", SOURCE, OUR_CONTACT, now)
    assert response.status == 200
    assert sub is not None
    return response, sub


def refresh(
    notifier: Notifier, sub: WatcherSubscription, now: float, **kwargs
) -> tuple[Response, WatcherSubscription | None]:
    kwargs.setdefault("to_tag", sub.dialog.local_tag)
    return notifier.subscribe(subscribe(**kwargs), "u-102", "udp", SOURCE, OUR_CONTACT, now)


def send(
    notifier: Notifier, sub: WatcherSubscription, now: float = 0.0, reason: str | None = None
) -> Request:
    return wire(notifier.notify(sub, b"<dialog-info/>", DIALOG_INFO, via(), now, reason))


# -- SUBSCRIBE -------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["message-summary", "Dialog", None])
def test_an_event_we_do_not_serve_gets_489_with_allow_events(event):
    notifier = Notifier()
    response, sub = notifier.subscribe(subscribe(event=event), "u-102", "udp", SOURCE, OUR_CONTACT, 0.0)
    assert (response.status, response.get("Allow-Events"), sub) == (489, "dialog, presence", None)
    assert notifier.watchers() == []


def test_too_brief_an_interval_gets_423_with_min_expires_new_and_refreshing():
    notifier = Notifier(min_expires=60)
    response, sub = notifier.subscribe(subscribe(expires=30), "u-102", "udp", SOURCE, OUR_CONTACT, 0.0)
    assert (response.status, response.get("Min-Expires"), sub) == (423, "60", None)
    _, sub = established(notifier)
    response, _ = refresh(notifier, sub, 10.0, cseq=2, expires=59)
    assert (response.status, response.get("Min-Expires")) == (423, "60")
    assert notifier.watchers() == [sub]  # the refused refresh leaves the subscription as it was


def test_a_new_subscription_is_answered_200_with_expires_contact_and_a_to_tag():
    notifier = Notifier()
    response, sub = established(notifier, now=100.0, event="dialog;id=blf7")
    assert response.to.tag == sub.dialog.local_tag
    assert (response.get("Expires"), response.get("Contact")) == ("600", f"<{OUR_CONTACT}>")
    assert (sub.event, sub.event_id, sub.resource, sub.entity) == (
        "dialog",
        "blf7",
        "u-102",
        "sip:102@example.net",
    )
    assert (sub.expires_at, sub.version, sub.state) == (700.0, 0, "active")
    assert notifier.watchers("u-102") == [sub]
    assert notifier.resources() == {"u-102"}


@pytest.mark.parametrize(("asked", "granted"), [(None, 600), (86400, 3600), (3600, 3600), (60, 60)])
def test_the_granted_interval_defaults_and_is_clamped(asked, granted):
    response, sub = established(Notifier(), expires=asked)
    assert response.get("Expires") == str(granted)
    assert sub.expires_at == granted


def test_a_fetch_gets_200_and_one_terminated_notify():
    notifier = Notifier()
    response, sub = established(notifier, expires=0)
    assert response.get("Expires") == "0"
    assert sub.state == "terminated"
    assert notifier.watchers() == []
    notify = send(notifier, sub)
    assert notify.get("Subscription-State") == "terminated;reason=timeout"
    assert notify.body == b"<dialog-info/>"


def test_a_subscribe_without_contact_or_with_a_bad_expires_gets_400():
    notifier = Notifier()
    no_contact = subscribe()
    no_contact.remove("Contact")
    assert notifier.subscribe(no_contact, "u-102", "udp", SOURCE, OUR_CONTACT, 0.0)[0].status == 400
    bad = subscribe(expires=None, extra="Expires: soon")
    assert notifier.subscribe(bad, "u-102", "udp", SOURCE, OUR_CONTACT, 0.0)[0].status == 400
    assert notifier.watchers() == []


@pytest.mark.parametrize("written", ["\u00b2", "\u0665"])
def test_an_expires_in_other_digits_gets_400(written):
    """'²' once reached int() (ValueError out of subscribe); '٥' was granted as 5 s."""
    notifier = Notifier()
    response, sub = notifier.subscribe(subscribe(expires=written), "u-102", "udp", SOURCE, OUR_CONTACT, 0.0)
    assert (response.status, response.reason, sub) == (400, "Malformed Expires", None)
    assert notifier.watchers() == []


def test_an_unknown_dialog_gets_481():
    notifier = Notifier()
    _, sub = established(notifier)
    response, found = refresh(notifier, sub, 1.0, to_tag="not-ours", cseq=2)
    assert (response.status, found) == (481, None)
    response, found = refresh(notifier, sub, 1.0, cseq=2, event="presence")  # same dialog, other event
    assert (response.status, found) == (481, None)


def test_a_refresh_with_a_cseq_not_higher_gets_500():
    notifier = Notifier()
    _, sub = established(notifier, cseq=5)
    assert refresh(notifier, sub, 1.0, cseq=5)[0].status == 500
    assert refresh(notifier, sub, 1.0, cseq=4)[0].status == 500
    assert refresh(notifier, sub, 1.0, cseq=6)[0].status == 200


def test_a_refresh_extends_the_subscription_and_follows_the_new_contact_and_flow():
    notifier = Notifier()
    _, sub = established(notifier)
    response, again = refresh(
        notifier, sub, 500.0, cseq=2, expires=300, contact="<sip:101@192.168.1.11:5062>"
    )
    assert (response.status, response.get("Expires"), response.to.tag) == (200, "300", sub.dialog.local_tag)
    assert again is sub
    assert sub.expires_at == 800.0
    assert str(send(notifier, sub, 500.0).uri) == "sip:101@192.168.1.11:5062"
    new_flow = notifier.subscribe(
        subscribe(to_tag=sub.dialog.local_tag, cseq=3),
        "u-102",
        "tcp",
        ("203.0.113.5", 40111),
        OUR_CONTACT,
        600.0,
    )
    assert new_flow[0].status == 200
    assert (sub.transport, sub.remote) == ("tcp", ("203.0.113.5", 40111))


def test_unsubscribe_gets_200_and_a_final_notify_with_reason_timeout():
    notifier = Notifier()
    _, sub = established(notifier)
    response, ending = refresh(notifier, sub, 10.0, cseq=2, expires=0)
    assert (response.status, response.get("Expires"), ending) == (200, "0", sub)
    assert (sub.state, notifier.watchers(), notifier.resources()) == ("terminated", [], set())
    assert send(notifier, sub, 10.0).get("Subscription-State") == "terminated;reason=timeout"
    assert refresh(notifier, sub, 11.0, cseq=3)[0].status == 481


# -- NOTIFY ----------------------------------------------------------------------------------------


def test_notify_goes_to_the_watchers_contact_not_the_source():
    rr = "Record-Route: <sip:192.0.2.1:5060;lr>\r\nRecord-Route: <sip:sbc.example.net;lr>"
    notifier = Notifier()
    _, sub = established(notifier, extra=rr)
    notify = send(notifier, sub, 0.0)
    # RFC 6665: the NOTIFY's Request-URI is the watcher's Contact, along the route set; the source
    # address of the SUBSCRIBE is only the flow it goes back on.
    assert str(notify.uri) == "sip:101@192.168.1.10:5062;transport=udp"
    assert notify.get_all("Route") == ["<sip:192.0.2.1:5060;lr>", "<sip:sbc.example.net;lr>"]
    assert (sub.transport, sub.remote) == ("udp", SOURCE)
    assert SOURCE[0] not in str(notify.uri)
    assert (notify.from_.tag, notify.to.tag, notify.call_id) == (
        sub.dialog.local_tag,
        "w1",
        "watch-1@192.168.1.10",
    )


def test_notify_carries_event_with_its_id_state_contact_and_body():
    notifier = Notifier()
    _, sub = established(notifier, now=0.0, event="dialog;id=blf7")
    notify = send(notifier, sub, 99.5)
    assert notify.get("Event") == "dialog;id=blf7"
    assert notify.get("Subscription-State") == "active;expires=501"
    assert (notify.get("Contact"), notify.get("Content-Type")) == (f"<{OUR_CONTACT}>", DIALOG_INFO)
    assert notify.body == b"<dialog-info/>"
    _, plain = established(notifier, event="dialog")
    assert send(notifier, plain).get("Event") == "dialog"


def test_each_notify_bumps_the_version_after_the_body_and_the_cseq():
    notifier = Notifier()
    _, sub = established(notifier)
    seen = []
    for _ in range(3):
        version = sub.version
        seen.append((version, send(notifier, sub).cseq[0]))
    assert seen == [(0, 1), (1, 2), (2, 3)]
    assert sub.version == 3


@pytest.mark.parametrize("reason", ["deactivated", "noresource", "rejected", "timeout"])
def test_a_notify_with_a_reason_is_the_final_one(reason):
    notifier = Notifier()
    _, sub = established(notifier)
    assert send(notifier, sub, reason=reason).get("Subscription-State") == f"terminated;reason={reason}"
    assert (sub.state, notifier.watchers()) == ("terminated", [])


def test_a_notify_answered_481_ends_the_subscription():
    notifier = Notifier()
    _, sub = established(notifier)
    send(notifier, sub)
    assert not notifier.on_notify_result(sub, 481)
    assert (notifier.watchers(), notifier.resources()) == ([], set())


@pytest.mark.parametrize("status", [403, 404, 489, 500, 603])
def test_other_failure_responses_end_it_too(status):
    notifier = Notifier()
    _, sub = established(notifier)
    assert not notifier.on_notify_result(sub, status)
    assert notifier.watchers() == []


@pytest.mark.parametrize("lost", [None, 408])
def test_one_lost_notify_does_not_end_the_subscription(lost):
    notifier = Notifier()
    _, sub = established(notifier)
    assert notifier.on_notify_result(sub, lost)
    assert notifier.on_notify_result(sub, 200)
    assert notifier.on_notify_result(sub, lost)  # the 200 between them started the count again
    assert notifier.on_notify_result(sub, 100)  # a provisional changes nothing
    assert notifier.watchers() == [sub]


def test_zombie_subscription_ends_after_repeated_timeouts():
    notifier = Notifier()
    _, sub = established(notifier)
    # Timeouts and 408s in a row: the third ends it (the watcher is gone; a zombie would be
    # notified for ever).
    results = [notifier.on_notify_result(sub, status) for status in (None, 408, None)]
    assert results == [True, True, False]
    assert (MAX_LOST, sub.state, notifier.watchers()) == (3, "terminated", [])


def test_expire_hands_back_the_subscriptions_whose_time_ran_out():
    notifier = Notifier()
    _, short = established(notifier, expires=60)
    _, long = established(notifier, expires=600, extra="X-Other: 1")
    long.resource = "u-103"
    assert notifier.expire(59.9) == []
    assert notifier.expire(60.0) == [short]
    assert notifier.resources() == {"u-103"}
    assert send(notifier, short, 60.0).get("Subscription-State") == "terminated;reason=timeout"
    assert notifier.expire(61.0) == []


def test_watchers_and_resources_follow_the_table():
    notifier = Notifier()
    _, a = established(notifier)
    _, b = established(notifier)
    b.resource = "u-103"
    assert {s.id for s in notifier.watchers()} == {a.id, b.id}
    assert notifier.watchers("u-103") == [b]
    assert notifier.resources() == {"u-102", "u-103"}


def test_restore_after_a_restart_continues_versions_and_cseq():
    notifier = Notifier()
    _, sub = established(notifier, event="dialog;id=7")
    send(notifier, sub)
    send(notifier, sub)
    stored = json.loads(json.dumps([s.to_dict() for s in notifier.watchers()]))
    restarted = Notifier()
    restarted.restore(WatcherSubscription.from_dict(data) for data in stored)
    (back,) = restarted.watchers()
    assert back == sub
    assert back.id == sub.id
    notify = send(restarted, back)
    assert (back.version, notify.cseq[0], notify.get("Event")) == (3, 3, "dialog;id=7")
    assert (
        refresh(restarted, back, 10.0, cseq=2, event="dialog;id=7")[0].status == 200
    )  # the watcher's refresh finds it


def test_parse_event():
    assert parse_event("dialog") == ("dialog", None)
    assert parse_event("dialog ; id=abc") == ("dialog", "abc")
    assert parse_event(None) is None
    assert parse_event(";id=1") is None
    assert parse_event("dialog;=") is None
