"""The dialog layer (RFC 3261 §12) without sockets: dialogs created as UAS and as UAC (from a 2xx
and from a NOTIFY, RFC 6665 §4.1.2.4), requests built in them (loose and strict routing), CSeq
ordering, target refresh, and the store's round trip."""

import json

import pytest
from vaxelbox.sip.dialog import Dialog
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.message import Header, Request, Response, parse_message
from vaxelbox.sip.via import Via

# Two proxies recorded the route; p1 is next to the watcher, p2 next to us.
RECORD_ROUTE = "Record-Route: <sip:p2.example.net;lr>\r\nRecord-Route: <sip:p1.example.net;lr>\r\n"


def subscribe(
    extra: str = RECORD_ROUTE, cseq: int = 7, contact: str = "<sip:101@192.0.2.10:5062>"
) -> Request:
    text = (
        "SUBSCRIBE sip:102@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-s1\r\n"
        f'{extra}Max-Forwards: 70\r\nFrom: "Ann" <sip:101@example.net>;tag=w1\r\n'
        "To: <sip:102@example.net>\r\nCall-ID: sub-1@192.0.2.10\r\n"
        f"CSeq: {cseq} SUBSCRIBE\r\nContact: {contact}\r\nEvent: dialog\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def ok(request: Request, extra: str = RECORD_ROUTE, to_tag: str | None = "n1") -> Response:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        "SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in request.get_all("Via")) + extra
        + f"From: {request.get('From')}\r\nTo: {request.get('To')}{tag}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.get('CSeq')}\r\n"
        "Contact: <sip:notifier@198.51.100.7:5070;transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def notify(request: Request, cseq: int = 1, extra: str = RECORD_ROUTE) -> Request:
    text = (
        f"NOTIFY sip:101@192.0.2.10:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-n{cseq}\r\n"
        f"{extra}Max-Forwards: 70\r\nFrom: {request.get('To')};tag=n1\r\nTo: {request.get('From')}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {cseq} NOTIFY\r\n"
        "Contact: <sip:notifier@198.51.100.7:5070>\r\nEvent: dialog\r\n"
        "Subscription-State: active;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def via() -> Via:
    return Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK-ours", "rport": None})


def wire(request: Request) -> Request:
    """The request as the peer would parse it: proves what we build is a valid SIP message."""
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, Request)
    return parsed


def test_uas_dialog_takes_the_record_route_in_order_and_the_contact_as_target():
    dialog = Dialog.as_uas(subscribe(), "n1")
    assert dialog.key == ("sub-1@192.0.2.10", "n1", "w1")
    assert dialog.route_set == ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
    assert dialog.remote_target == "sip:101@192.0.2.10:5062"
    assert (dialog.local_uri, dialog.remote_uri) == ("<sip:102@example.net>", '"Ann" <sip:101@example.net>')
    assert (dialog.local_cseq, dialog.remote_cseq) == (0, 7)


def test_uac_dialog_from_a_2xx_reverses_the_record_route():
    request = subscribe(extra="")
    dialog = Dialog.as_uac(request, ok(request))
    assert dialog.key == ("sub-1@192.0.2.10", "w1", "n1")
    assert dialog.route_set == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    assert dialog.remote_target == "sip:notifier@198.51.100.7:5070;transport=tcp"
    assert (dialog.local_uri, dialog.remote_uri) == ('"Ann" <sip:101@example.net>', "<sip:102@example.net>")
    assert (dialog.local_cseq, dialog.remote_cseq) == (7, None)


def test_uac_dialog_from_a_notify_that_came_before_the_2xx():
    request = subscribe(extra="")
    first = notify(
        request,
        cseq=3,
        extra="Record-Route: <sip:p1.example.net;lr>\r\nRecord-Route: <sip:p2.example.net;lr>\r\n",
    )
    dialog = Dialog.as_uac(request, first)
    assert dialog.key == ("sub-1@192.0.2.10", "w1", "n1")
    # A request received: its Record-Route is taken as it came (the first entry is next to us).
    assert dialog.route_set == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    assert dialog.remote_target == "sip:notifier@198.51.100.7:5070"
    assert (dialog.local_cseq, dialog.remote_cseq) == (7, 3)


def test_uac_dialog_without_a_to_tag_has_no_remote_tag_and_sends_none():
    request = subscribe(extra="")
    dialog = Dialog.as_uac(request, ok(request, extra="", to_tag=None))
    assert dialog.remote_tag is None
    assert wire(dialog.request("SUBSCRIBE", via())).to.tag is None


def test_a_dialog_needs_the_peers_contact():
    without_contact = subscribe()
    without_contact.remove("Contact")
    with pytest.raises(SipSyntaxError, match="Contact"):
        Dialog.as_uas(without_contact, "n1")


def test_loose_routing_sends_to_the_remote_target_with_the_whole_route_set():
    dialog = Dialog.as_uas(subscribe(), "n1")
    sent = wire(dialog.request("NOTIFY", via(), [Header("Event", "dialog")], b"<x/>"))
    assert str(sent.uri) == "sip:101@192.0.2.10:5062"
    assert sent.get_all("Route") == ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
    assert (sent.from_.tag, sent.to.tag, sent.call_id) == ("n1", "w1", "sub-1@192.0.2.10")
    assert (sent.get("Max-Forwards"), sent.get("Event"), sent.body) == ("70", "dialog", b"<x/>")
    assert sent.vias[0].branch == "z9hG4bK-ours"


def test_strict_routing_puts_the_first_route_in_the_request_uri_and_the_target_last():
    rr = (
        "Record-Route: <sip:p2.example.net;lr>\r\nRecord-Route: <sip:strict.example.net;maddr=192.0.2.99>\r\n"
    )
    dialog = Dialog.as_uas(subscribe(extra=rr), "n1")
    dialog.route_set.reverse()  # the strict router is now the first hop
    sent = wire(dialog.request("NOTIFY", via()))
    assert str(sent.uri) == "sip:strict.example.net;maddr=192.0.2.99"
    assert sent.get_all("Route") == ["<sip:p2.example.net;lr>", "<sip:101@192.0.2.10:5062>"]


def test_without_a_route_set_there_is_no_route_header():
    dialog = Dialog.as_uas(subscribe(extra=""), "n1")
    sent = wire(dialog.request("NOTIFY", via()))
    assert (str(sent.uri), sent.get_all("Route")) == ("sip:101@192.0.2.10:5062", [])


def test_each_request_takes_the_next_cseq_and_ack_reuses_the_last():
    dialog = Dialog.as_uas(subscribe(), "n1")
    assert [wire(dialog.request("NOTIFY", via())).cseq for _ in range(3)] == [
        (1, "NOTIFY"),
        (2, "NOTIFY"),
        (3, "NOTIFY"),
    ]
    request = subscribe(extra="")
    uac = Dialog.as_uac(request, ok(request))
    assert wire(uac.request("SUBSCRIBE", via())).cseq == (8, "SUBSCRIBE")
    assert wire(uac.request("ACK", via())).cseq == (8, "ACK")


def test_a_remote_request_with_a_lower_cseq_is_out_of_order():
    dialog = Dialog.as_uas(subscribe(cseq=7), "n1")
    assert not dialog.accept_remote(subscribe(cseq=6))
    assert dialog.remote_cseq == 7
    assert dialog.accept_remote(subscribe(cseq=7))  # §12.2.2 refuses only lower ones
    assert dialog.accept_remote(subscribe(cseq=9))
    assert dialog.remote_cseq == 9
    assert not dialog.accept_remote(subscribe(cseq=8))


def test_the_first_remote_request_of_a_uac_dialog_is_always_in_order():
    request = subscribe(extra="")
    dialog = Dialog.as_uac(request, ok(request))
    assert dialog.accept_remote(notify(request, cseq=1))
    assert dialog.remote_cseq == 1


def test_target_refresh_takes_the_new_contact_and_keeps_the_old_without_one():
    dialog = Dialog.as_uas(subscribe(), "n1")
    dialog.refresh_target(subscribe(contact="<sip:101@192.0.2.44:6000;transport=tcp>"))
    assert dialog.remote_target == "sip:101@192.0.2.44:6000;transport=tcp"
    assert str(wire(dialog.request("NOTIFY", via())).uri) == "sip:101@192.0.2.44:6000;transport=tcp"
    request = subscribe(extra="")
    without = ok(request)
    without.remove("Contact")
    dialog.refresh_target(without)
    assert dialog.remote_target == "sip:101@192.0.2.44:6000;transport=tcp"


def test_dict_round_trip_through_json_gives_the_same_dialog_and_the_same_next_request():
    dialog = Dialog.as_uas(subscribe(), "n1")
    dialog.request("NOTIFY", via())
    restored = Dialog.from_dict(json.loads(json.dumps(dialog.to_dict())))
    assert restored == dialog
    assert restored.request("NOTIFY", via()).to_bytes() == dialog.request("NOTIFY", via()).to_bytes()
    request = subscribe(extra="")
    tagless = Dialog.as_uac(request, ok(request, to_tag=None))
    assert Dialog.from_dict(json.loads(json.dumps(tagless.to_dict()))) == tagless
