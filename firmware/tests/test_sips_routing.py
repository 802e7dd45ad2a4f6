"""A SIPS request leaves only over TLS, on every hop (RFC 3261 §26.2.2, RFC 5630), without sockets:
the proxy core's rule and refusal, and the target chain that applies them to each branch's flow.
End to end through the edge with sipp and Kamailio: test_sips_edge.py."""

from dataclasses import dataclass, field

import pytest
from vaxelbox.routing.chain import RequestContext, ResponseChain, Target
from vaxelbox.routing.forking import EdgeAddresses, Forking
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.proxy import needs_tls, sips_refusal
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import parse_uri

LAN, WAN, LAN_TLS = ("192.0.2.1", 5060), ("198.51.100.1", 5062), ("192.0.2.1", 5061)
ADDRESSES = EdgeAddresses(LAN, WAN, LAN_TLS)


class FakeFlow(Flow):
    def __init__(self, transport: str, local: tuple[str, int], remote: tuple[str, int]) -> None:
        super().__init__(local, remote)
        self.transport, self.reliable = transport, transport != "udp"

    def send(self, data: bytes) -> None:
        raise AssertionError("the target chain sends through the stack")


@dataclass
class FakeStack:
    sent: list[tuple[Request, Flow]] = field(default_factory=list)

    def send_request(self, request, flow, on_response, on_timeout) -> None:
        self.sent.append((request, flow))

    def release(self, running) -> None:
        pass  # the fork lets go of a branch after its final response: nothing held here


def request(uri: str, via: str = "TLS 192.0.2.10:5061") -> Request:
    message = parse_message(
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK-s1\r\nMax-Forwards: 70\r\n"
        "From: <sips:101@example.net>;tag=f\r\nTo: <sips:102@example.net>\r\nCall-ID: sips@x\r\n"
        "CSeq: 1 INVITE\r\nContact: <sips:101@192.0.2.10>\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


PHONE_TLS = FakeFlow("tls", LAN_TLS, ("192.0.2.10", 40001))
PHONE_TCP = FakeFlow("tcp", LAN, ("192.0.2.20", 40002))
PHONE_UDP = FakeFlow("udp", LAN, ("192.0.2.30", 5060))
CLOUD = {name: FakeFlow(name, WAN, ("203.0.113.5", 5061)) for name in ("udp", "tcp", "tls")}


@pytest.mark.parametrize(
    ("uri", "secure"),
    [
        ("sips:102@example.net", True),
        ("SIPS:102@example.net", True),  # schemes are case-insensitive
        ("sip:102@example.net", False),
        ("sip:102@example.net;transport=tls", False),  # TLS on the last hop only: RFC 5630 §3.1.2
        ("tel:+46855501234", False),
    ],
)
def test_a_sips_request_uri_asks_for_tls_on_every_hop(uri, secure):
    assert needs_tls(request(uri)) is secure


def test_the_refusal_is_480_sips_not_allowed_with_warn_code_380():
    invite = request("sips:102@example.net")
    response = sips_refusal(invite, "192.0.2.1:5061")
    assert (response.status, response.reason) == (480, "SIPS Not Allowed")
    assert response.get("Warning") == '380 192.0.2.1:5061 "SIPS Not Allowed"'
    assert response.to_tag  # a final response of ours: the caller's ACK matches it
    assert response.get("Via") == invite.get("Via")
    parsed = parse_message(response.to_bytes())  # and it is a well-formed response
    assert isinstance(parsed, Response)
    assert parsed.status == 480


def fork(uri: str, came_on: Flow, side, targets: list[Flow]) -> tuple[FakeStack, list[Response]]:
    """Fork an INVITE for `uri` that arrived on `came_on` to one target per flow."""
    stack, answers = FakeStack(), []
    forking = Forking(stack, ADDRESSES, lambda delay, callback: None, ResponseChain([]))  # type: ignore[arg-type]
    context = RequestContext(request(uri), came_on, side, Mode.ONLINE)
    chosen = [Target("wan" if f.local == WAN else "lan", f, parse_uri(uri), f.transport) for f in targets]
    forking.fork(context, chosen, answers.append)
    return stack, answers


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_phones_sips_call_is_refused_when_the_cloud_is_not_tls(transport):
    stack, answers = fork("sips:102@example.net", PHONE_TLS, "lan", [CLOUD[transport]])
    assert stack.sent == []  # nothing left for the cloud
    (answer,) = answers
    assert answer.status == 480
    assert answer.get("Warning") == '380 192.0.2.1:5061 "SIPS Not Allowed"'  # our TLS address


def test_a_phones_sips_call_goes_to_a_tls_cloud():
    stack, answers = fork("sips:102@example.net", PHONE_TLS, "lan", [CLOUD["tls"]])
    ((sent, flow),) = stack.sent
    assert flow is CLOUD["tls"]
    assert str(sent.uri) == "sips:102@example.net"
    assert answers == []


@pytest.mark.parametrize("phone", [PHONE_TCP, PHONE_UDP], ids=["tcp", "udp"])
def test_the_clouds_sips_request_is_not_sent_to_a_phone_without_tls(phone):
    stack, answers = fork("sips:102@192.0.2.20", CLOUD["tls"], "wan", [phone])
    assert stack.sent == []
    (answer,) = answers
    assert answer.status == 480
    assert answer.get("Warning") == '380 198.51.100.1:5062 "SIPS Not Allowed"'  # our WAN address


def test_a_fork_keeps_only_the_contacts_reached_over_tls():
    stack, answers = fork("sips:102@example.net", CLOUD["tls"], "wan", [PHONE_UDP, PHONE_TLS, PHONE_TCP])
    assert [flow for _, flow in stack.sent] == [PHONE_TLS]
    assert answers == []


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_a_sip_request_goes_over_any_transport(transport):
    stack, answers = fork("sip:102@example.net", PHONE_UDP, "lan", [CLOUD[transport]])
    assert [flow for _, flow in stack.sent] == [CLOUD[transport]]
    assert answers == []
