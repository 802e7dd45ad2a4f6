"""What real registrars and PBXs send, relayed (issue 13): each input the issue handed us is a test,
against Kamailio as the cloud and sipp phones, through the edge in this process.

The kind: the edge refused or dropped messages for header fields it does not need to route them, and
compared contacts as text. Now a proxy validates what it uses (RFC 3261 §16.3 step 1) and compares
URIs as §19.1.4 says.
"""

import asyncio
import socket

import pytest
from peers import DOMAIN, USERS, Kamailio, free_port, phone
from sip_corpus import CORPUS
from test_edge_relay import registered
from vaxelbox.edge.service import Edge, EdgeSettings
from vaxelbox.sip.digest import authorization
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transport import TransportLayer

CLOUD_HOST = "127.0.0.3"
GATEWAY_CONTACT = "<sip:GW#5550199#0046855501@192.0.2.44>"  # another device's binding, '#' unescaped


@pytest.fixture
def kamailio(tmp_path):
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio").start()
    yield cloud
    cloud.stop()


@pytest.fixture
async def edge(kamailio):
    cloud = f"sip:{kamailio.address}:{kamailio.port};transport=tcp"
    edge = Edge(EdgeSettings(lan=("127.0.0.1", 0), wan=("127.0.0.2", 0), proxies=[cloud]))
    await edge.start()
    yield edge
    await edge.stop()


def register_directly(kamailio: Kamailio, user: str, contact: str) -> str:
    """REGISTER `contact` for `user` straight at the cloud (digest answered); its status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]

        def send(cseq: int, authorization_line: str = "") -> str:
            sock.sendto(
                (
                    f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-gw{cseq};rport\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=gw\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
                    f"Call-ID: gw-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 300\r\n"
                    f"{authorization_line}Content-Length: 0\r\n\r\n"
                ).encode(),
                (kamailio.address, kamailio.port),
            )
            return sock.recv(4096).decode()

        challenge = next(
            line.split(":", 1)[1].strip()
            for line in send(1).split("\r\n")
            if line.lower().startswith("www-authenticate")
        )
        credentials = authorization(challenge, "REGISTER", f"sip:{DOMAIN}", user, USERS[user])
        return send(2, f"Authorization: {credentials}\r\n").split("\r\n")[0]


async def test_a_registrar_200_listing_an_unparseable_binding_reaches_the_phone(edge, kamailio, tmp_path):
    """The cloud's 200 lists the phone's Contact and a gateway's `sip:GW#...@` binding of the same
    user. It used to be dropped whole (the phone retransmitted and never registered); now it is
    relayed and the mirror keeps the phone's binding."""
    assert await asyncio.to_thread(register_directly, kamailio, "101", GATEWAY_CONTACT) == "SIP/2.0 200 OK"
    anna = await phone("register.xml", edge.addresses.lan, "101", tmp_path)
    await anna.finish()  # sipp fails on a missing 200
    await registered(edge, "101")
    (binding,) = edge.bindings.all()
    assert binding.remote[0] == "127.0.0.1"
    assert edge.transports.stats["dropped_responses"] == 0


async def test_a_call_with_an_unquoted_non_ascii_display_name_rings_the_phone(edge, kamailio, tmp_path):
    """`From: Åsa Öberg <sip:5550123@example.com>` from the cloud: the edge answered 400 and the
    phone never rang; the display name is not the edge's business, so the call goes through."""
    bjorn = await phone(
        "register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="answer.xml", hold=8
    )
    await registered(edge, "102")
    caller = await phone(
        "call_raw_display.xml",
        (kamailio.address, kamailio.port),
        "pstn",
        tmp_path,
        callee="102",
        password="-",
    )
    await caller.finish()
    assert edge.transports.stats["bad_requests"] == 0
    bjorn.process.kill()
    await bjorn.process.wait()


class ContactReader:
    """A transaction user that reads the Contact of each request (as a registrar does) and says OK."""

    def __init__(self, stack: SipStack) -> None:
        self.stack = stack

    def admit(self, message, flow) -> bool:
        return True

    def on_request(self, transaction, request) -> None:
        _ = request.contacts
        self.stack.respond(transaction, make_response(request, 200, "OK"))

    def on_cancel(self, invite, cancel) -> None:
        pass

    def on_stray(self, message, flow) -> None:
        pass


async def test_a_malformed_field_read_later_still_gets_a_400_that_says_which():
    """RFC 4475's regbadct (a REGISTER Contact with headers outside <>) parses, since the forwarding
    path does not need Contact; the moment a registrar reads it, the transaction layer answers 400
    with the reason, as it would have at the door."""
    transports = TransportLayer(lambda message, flow: None)
    stack = SipStack(transports)
    stack.user = ContactReader(stack)
    address = await transports.listen_udp("127.0.0.1", 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.settimeout(3)
            client.sendto((CORPUS / "regbadct.dat").read_bytes(), address)
            reply = await asyncio.to_thread(client.recv, 4096)
    finally:
        await transports.close()
    assert reply.startswith(b"SIP/2.0 400 Bad Request (a URI with headers must be enclosed in <>)")
    assert transports.stats["malformed"] == 1
