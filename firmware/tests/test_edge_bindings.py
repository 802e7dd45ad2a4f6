"""The binding mirror: what the registrar's 200 says, kept, expired, and surviving a restart."""

import logging

from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.transport import Flow
from vaxelbox.store import Store

CONTACT = "<sip:101@192.0.2.50:5062;transport=udp>"


class PhoneFlow(Flow):
    transport = "udp"
    reliable = False

    def send(self, data: bytes) -> None:
        pass


def register(expires: int | str, contact: str = CONTACT) -> Request:
    text = (
        "REGISTER sip:demo.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5062;branch=z9hG4bK-r\r\n"
        "From: <sip:101@demo.example.net>;tag=a\r\nTo: <sip:101@demo.example.net>\r\nCall-ID: r@x\r\n"
        f"CSeq: 2 REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\nUser-Agent: Snom D785\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def ok(contacts: str) -> Response:
    text = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.50:5062;branch=z9hG4bK-r\r\n"
        "From: <sip:101@demo.example.net>;tag=a\r\nTo: <sip:101@demo.example.net>;tag=b\r\nCall-ID: r@x\r\n"
        f"CSeq: 2 REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def test_only_the_registering_contacts_are_mirrored_with_the_expiry_granted():
    mirror = BindingMirror()
    other = "Contact: <sip:101@192.0.2.77:5060>;expires=900\r\n"  # the same user's other phone
    mirror.update(
        register(3600),
        ok(f"Contact: {CONTACT};expires=600\r\n{other}"),
        PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062)),
    )
    (binding,) = mirror.all()
    assert (binding.aor, binding.contact) == ("sip:101@demo.example.net", "sip:101@192.0.2.50:5062")
    assert 595 <= binding.expires_in() <= 600  # what the registrar granted, not what was asked
    assert binding.user_agent == "Snom D785"


def test_expiry_and_deregistration_drop_bindings():
    mirror = BindingMirror()
    flow = PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062))
    mirror.update(register(60), ok(f"Contact: {CONTACT};expires=60\r\n"), flow)
    assert mirror.expire(now=mirror.all()[0].expires_at - 1) == []
    assert len(mirror.expire(now=mirror.all()[0].expires_at + 1)) == 1
    mirror.update(register(60), ok(f"Contact: {CONTACT};expires=60\r\n"), flow)
    mirror.update(register(0), ok(""), flow)  # de-registration: the 200 no longer lists it
    assert mirror.all() == []
    mirror.update(register(60), ok(f"Contact: {CONTACT};expires=60\r\n"), flow)
    mirror.update(register(0, contact="*"), ok(""), flow)
    assert mirror.all() == []


def test_the_mirror_survives_a_restart_through_the_store(tmp_path):
    store = Store(tmp_path)
    mirror = BindingMirror(store)
    mirror.update(
        register(600),
        ok(f"Contact: {CONTACT};expires=600\r\n"),
        PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062)),
    )
    assert mirror.flush() == 1
    assert mirror.flush() == 0  # nothing changed since
    store.close()
    again = BindingMirror(Store(tmp_path))
    (binding,) = again.all()
    assert binding.remote == ("192.0.2.50", 5062)
    assert binding.contact == "sip:101@192.0.2.50:5062"


def test_a_registrar_echoing_the_contact_in_another_spelling_keeps_the_binding():
    """RFC 3261 §19.1.4: host case, IPv6 compression and `transport=UDP` do not make another URI
    (issue 13's inputs); the mirror used to drop these bindings."""
    flow = PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062))
    for sent, echoed in [
        ("<sip:101@phone-a.example.com:5062>", "<sip:101@PHONE-A.Example.COM:5062>"),
        ("<sip:101@[2001:db8::a]:5062>", "<sip:101@[2001:DB8:0:0::A]:5062>"),
        ("<sip:101@192.0.2.50:5062;transport=udp>", "<sip:101@192.0.2.50:5062;transport=UDP>"),
    ]:
        mirror = BindingMirror()
        mirror.update(register(3600, sent), ok(f"Contact: {echoed};expires=600\r\n"), flow)
        (binding,) = mirror.all()
        assert 595 <= binding.expires_in() <= 600, (sent, echoed)


def test_a_contact_the_200_does_not_list_follows_the_register_and_is_logged(caplog):
    """§10.2.4: a 200 without our contact (only entries we cannot parse) keeps the binding for the
    Expires the REGISTER asked, with a log line; the unreadable entries are named in the log."""
    caplog.set_level(logging.INFO, logger="vaxelbox.edge.bindings")
    flow = PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062))
    mirror = BindingMirror()
    mirror.update(register(300), ok("Contact: <sip:GW#5550199#0046855501@192.0.2.44>;expires=300\r\n"), flow)
    (binding,) = mirror.all()
    assert 295 <= binding.expires_in() <= 300
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "GW#5550199#0046855501" in logged
    assert "does not list sip:101@192.0.2.50:5062" in logged


def test_an_expires_in_other_digits_is_malformed_and_the_default_applies():
    """A REGISTER's or a 200's Expires of '²' once reached int() (ValueError out of update); '٥'
    was read as 5 s. Both are malformed: the binding is kept for the default 3600 s."""
    flow = PhoneFlow(("192.0.2.1", 5060), ("192.0.2.50", 5062))
    for written in ("\u00b2", "\u0665"):
        unlisted = BindingMirror()  # the 200 does not list the contact: kept as the REGISTER asked
        unlisted.update(register(written), ok(""), flow)
        listed = BindingMirror()  # listed without its expires: the 200's Expires, else the REGISTER's
        listed.update(register(written), ok(f"Expires: {written}\r\nContact: {CONTACT}\r\n"), flow)
        for mirror in (unlisted, listed):
            (binding,) = mirror.all()
            assert 3595 <= binding.expires_in() <= 3600, written
