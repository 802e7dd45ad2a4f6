"""Every message of the RFC 4475 and RFC 5118 torture corpus gets the verdict its RFC gives.

The manifest says, per file, whether a compliant parser must accept the
message (valid=yes) or reject it (valid=no: a 400 or 505 for a request, a
silent drop for a response). The edge is a proxy, judged by RFC 3261 §16.3
step 1: a malformed field it does not use is no reason to reject. So a `no`
message is refused at parse when what is malformed is on the forwarding path
(start line, top Via, Call-ID, CSeq, From/To tags, Max-Forwards,
Content-Length), and otherwise relayed byte for byte (RELAYED: the field, and
why the edge does not need it) — with that field still refused whenever the
edge does read it (the transaction layer then answers 400, test_sip_stack).
For the accepted messages that test a specific parsing rule, the rule is
checked too.
"""

from pathlib import Path
from urllib.parse import unquote

import pytest
from sip_corpus import CORPUS, manifest
from vaxelbox.sip.errors import SipParseError, SipSyntaxError
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.uri import AbsoluteUri, SipUri
from vaxelbox.sip.via import parse_via

RFC4475 = [(row, CORPUS / f"{row['name']}.dat") for row in manifest(CORPUS / "manifest.tsv")]
RFC5118 = [
    (row, CORPUS / "rfc5118" / "wire" / f"{row['name']}.dat")
    for row in manifest(CORPUS / "rfc5118" / "manifest.tsv")
]
ALL = RFC4475 + RFC5118

# What we answer to each rejected request (RFC 4475's expected_response, narrowed to our choice).
STATUS = {"badvers": 505, "mismatch02": 400}
# `no` messages a proxy relays: the malformed field (a Message attribute, None for one the edge never
# parses) and why the edge does not need it (RFC 4475 allows a liberal proxy to forward these).
RELAYED = {
    "quotbal": ("to", "an unterminated quote in To's display name: only To's tag is used"),
    "baddate": (None, "a malformed Date: the edge never reads Date"),
    "regbadct": ("contacts", "a REGISTER Contact with headers outside <>: the registrar reads it (400 then)"),
    "badaspec": ("to", "white space inside To's <URI>: only To's tag is used"),
}


def test_the_corpus_is_complete():
    assert len(RFC4475) == 49
    assert len(RFC5118) == 12
    assert sum(row["valid"] == "yes" for row, _ in RFC4475) == 27


@pytest.mark.parametrize(("row", "path"), ALL, ids=[row["name"] for row, _ in ALL])
def test_verdict(row, path):
    data = path.read_bytes()
    if row["valid"] == "yes":
        message = parse_message(data)
        assert isinstance(message, Request | Response)
        # What we accept, we can write and read back to the same meaning.
        again = parse_message(message.to_bytes())
        assert again.start_line() == message.start_line()
        assert again.body == message.body
        assert [h.raw for h in again.headers if h.key != "content-length"] == [
            h.raw for h in message.headers if h.key != "content-length"
        ]
        return
    if row["name"] in RELAYED:
        message = parse_message(data)  # relayed byte for byte (Content-Length is always rewritten) ...
        received, written = (text.decode("utf-8", "surrogateescape") for text in (data, message.to_bytes()))
        assert all(
            h.raw in received and h.raw in written for h in message.headers if h.key != "content-length"
        )
        assert parse_message(message.to_bytes()).body == message.body
        field, _ = RELAYED[row["name"]]
        if field is not None:  # ... and refused whenever the edge reads the malformed field
            with pytest.raises(SipSyntaxError):
                getattr(message, field)
        return
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    error = caught.value
    if row["expected_response"].startswith("none"):
        assert not error.is_request, "a malformed response is dropped, never answered"
    else:
        assert error.is_request
        assert error.status == STATUS.get(row["name"], 400)
        assert error.reason


def parse(name: str, corpus: Path = CORPUS) -> Request | Response:
    return parse_message((corpus / f"{name}.dat").read_bytes())


def test_wsinv_folding_and_whitespace():
    message = parse("wsinv")
    assert message.cseq == (9, "INVITE")
    assert message.max_forwards == 68
    assert message.to.tag == "1918181833n"
    assert message.from_.display == '"J Rosenberg \\\\\\""'
    assert message.from_.tag == "98asjd8"
    assert [(v.transport, v.host, v.branch) for v in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.get("s") == ""
    assert message.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.get("NewFangledHeader") == "newfangled value continued newfangled value"
    (contact,) = message.contacts
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(message.body) == 150


def test_unknown_headers_are_kept_byte_exact():
    data = (CORPUS / "wsinv.dat").read_bytes()
    out = parse_message(data).to_bytes()
    assert b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n" in out
    assert b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in out


def test_intmeth_unusual_characters():
    message = parse("intmeth")
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert message.to.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert message.from_.display == "token1~` token2'+_ token3*%!.-"
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"


def test_esc01_escapes_are_not_decoded_twice():
    message = parse("esc01")
    assert message.uri.user == "sips%3Auser%40example.com"
    params = message.contacts[0].sip_uri.params
    assert params["n%61me"] == "v%61lue%25%34%31"  # kept as written; decoding is the user's job
    assert unquote(params["n%61me"]) == "value%41"  # and one decoding gives value%41, not valueA


def test_escnull_two_distinct_contacts():
    assert [c.sip_uri.user for c in parse("escnull").contacts] == ["%00", "%00%00"]


def test_esc02_percent_is_not_an_escape_in_methods_and_header_names():
    message = parse("esc02")
    assert message.method == "RE%47IST%45R"
    assert len(message.contacts) == 2
    assert message.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_ignores_octets_after_the_body():
    message = parse("dblreq")
    assert message.method == "REGISTER"
    assert message.body == b""


def test_semiuri_user_part_may_hold_semicolons():
    message = parse("semiuri")
    assert message.uri.user == "user;par=u%40example.net"
    assert message.uri.host == "example.com"


def test_transports_keeps_unknown_transport_tokens():
    assert [v.transport for v in parse("transports").vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_longreq_many_vias_and_long_values():
    message = parse("longreq")
    assert len(message.vias) == 34
    assert len(message.from_.tag) == 155


def test_mpart01_binary_body_by_content_length():
    body = parse("mpart01").body
    assert len(body) == 553
    assert body.count(b"\x00") == 2


def test_reason_phrases():
    assert parse("unreason").reason.startswith("= 2**3 * 5**2 ")
    assert "\u0441" in parse("unreason").reason  # Cyrillic, from UTF-8
    noreason = parse("noreason")
    assert (noreason.status, noreason.reason) == (100, "")


def test_inv2543_body_is_the_rest_of_the_datagram():
    message = parse("inv2543")
    assert message.get("Content-Length") is None
    assert message.body.startswith(b"v=0")
    assert message.max_forwards is None
    assert message.vias[0].branch is None


def test_unknown_schemes_are_accepted_as_opaque_uris():
    assert isinstance(parse("unkscm").uri, AbsoluteUri)
    unksm2 = parse("unksm2")
    assert str(unksm2.to.uri) == "isbn:2983792873"
    assert str(unksm2.contacts[0].uri) == "name:John_Smith"


def test_cparam_header_parameter_versus_uri_parameter():
    (header_param,) = parse("cparam01").contacts
    assert "unknownparam" in header_param.params
    assert "unknownparam" not in header_param.sip_uri.params
    (uri_param,) = parse("cparam02").contacts
    assert "unknownparam" in uri_param.sip_uri.params
    assert "unknownparam" not in uri_param.params


def test_regescrt_contact_keeps_its_escaped_header():
    (contact,) = parse("regescrt").contacts
    assert contact.sip_uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_zeromf_and_badbranch_parse():
    assert parse("zeromf").max_forwards == 0
    assert parse("badbranch").vias[0].branch == "z9hG4bK"


WIRE = CORPUS / "rfc5118" / "wire"


def test_rfc5118_ipv6_references():
    good = parse("ipv6-good", WIRE)
    assert isinstance(good.uri, SipUri)
    assert good.uri.host == "2001:db8::10"
    ambiguous = parse("port-ambiguous", WIRE)
    assert (ambiguous.uri.host, ambiguous.uri.port) == ("2001:db8::10:5070", None)
    unambiguous = parse("port-unambiguous", WIRE)
    assert (unambiguous.uri.host, unambiguous.uri.port) == ("2001:db8::10", 5070)
    assert parse("ipv6-bug-abnf-3-colons", WIRE).uri.host == "2001:db8::192.0.2.1"


def test_rfc5118_received_with_and_without_brackets():
    assert parse("via-received-param-with-delim", WIRE).vias[0].params["received"] == "[2001:db8::9:255]"
    assert parse("via-received-param-no-delim", WIRE).vias[0].params["received"] == "2001:db8::9:255"


@pytest.mark.parametrize("received", ["fe80::1%eth0", "[fe80::1%eth0]", "fe80::9:255%3"])
def test_a_received_address_with_a_zone_parses(received):
    """What the edge stamps for a link-local phone (RFC 4007 §11 zone), read back by the next hop."""
    via = parse_via(f"SIP/2.0/UDP [fe80::1]:5060;branch=z9hG4bK1;received={received};rport=5060")
    assert via.params == {"branch": "z9hG4bK1", "received": received, "rport": "5060"}


def test_rfc5118_mixed_addresses_in_vias():
    hosts = [(v.host, v.port) for v in parse("mult-ip-in-header", WIRE).vias]
    assert hosts == [("2001:db8::9:1", 6050), ("192.0.2.1", None), ("2001:db8::9:255", None)]
