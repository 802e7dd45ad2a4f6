"""RFC 3263 resolution of the cloud against a DNS server this test runs on loopback.

The server answers from a small zone with dnspython's own message code; the
resolver under test is pointed at it alone, so no query leaves the machine.
"""

import asyncio

import dns.asyncresolver
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from vaxelbox.edge.resolver import CloudResolver, CloudTarget
from vaxelbox.edge.upstream import Upstream
from vaxelbox.sip.transport import TransportLayer

ZONE = {
    ("vaxel.example.net.", "NAPTR"): [
        '20 10 "s" "SIP+D2U" "" _sip._udp.vaxel.example.net.',
        '10 10 "s" "SIPS+D2T" "" _sips._tcp.vaxel.example.net.',
        '10 20 "s" "SIP+D2T" "" _sip._tcp.vaxel.example.net.',
        '30 10 "s" "SIP+SCTP" "" _sip._sctp.vaxel.example.net.',  # not ours: skipped
    ],
    ("_sips._tcp.vaxel.example.net.", "SRV"): [
        "10 50 5061 sbc1.vaxel.example.net.",
        "20 50 5061 sbc2.vaxel.example.net.",
    ],
    ("_sip._tcp.vaxel.example.net.", "SRV"): [
        "10 10 5060 sbc2.vaxel.example.net.",
        "10 90 5060 sbc1.vaxel.example.net.",
    ],
    ("_sip._udp.vaxel.example.net.", "SRV"): ["10 50 5060 sbc1.vaxel.example.net."],
    ("_sip._tcp.nonaptr.example.net.", "SRV"): ["10 50 5070 sbc1.vaxel.example.net."],
    ("sbc1.vaxel.example.net.", "A"): ["127.0.0.3"],
    ("sbc2.vaxel.example.net.", "A"): ["127.0.0.4"],
    ("sbc2.vaxel.example.net.", "AAAA"): ["::1"],
    ("plain.example.net.", "A"): ["127.0.0.5"],
}


class ZoneServer(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        kind = dns.rdatatype.to_text(question.rdtype)
        records = ZONE.get((question.name.to_text(), kind))
        if records:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", kind, *records))
        elif not any(name == question.name.to_text() for name, _ in ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def resolver():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(ZoneServer, local_addr=("127.0.0.1", 0))
    client = dns.asyncresolver.Resolver(configure=False)
    client.nameservers = ["127.0.0.1"]
    client.port = transport.get_extra_info("sockname")[1]
    client.timeout = client.lifetime = 2
    yield CloudResolver(client)
    transport.close()


def summary(targets: list[CloudTarget]) -> list[str]:
    return [f"{t.transport} {t.address}:{t.port} ({t.name})" for t in targets]


async def test_naptr_orders_transports_then_srv_orders_servers(resolver):
    assert summary(await resolver.resolve("sip:vaxel.example.net")) == [
        "tls 127.0.0.3:5061 (sbc1.vaxel.example.net)",
        "tls 127.0.0.4:5061 (sbc2.vaxel.example.net)",
        "tls ::1:5061 (sbc2.vaxel.example.net)",
        "tcp 127.0.0.3:5060 (sbc1.vaxel.example.net)",  # same priority: the heavier weight first
        "tcp 127.0.0.4:5060 (sbc2.vaxel.example.net)",
        "tcp ::1:5060 (sbc2.vaxel.example.net)",
        "udp 127.0.0.3:5060 (sbc1.vaxel.example.net)",
    ]


async def test_sips_uses_only_tls(resolver):
    targets = await resolver.resolve("sips:vaxel.example.net")
    assert {t.transport for t in targets} == {"tls"}


async def test_explicit_transport_goes_straight_to_srv(resolver):
    assert summary(await resolver.resolve("sip:vaxel.example.net;transport=udp")) == [
        "udp 127.0.0.3:5060 (sbc1.vaxel.example.net)"
    ]


async def test_without_naptr_srv_is_tried_per_transport(resolver):
    assert summary(await resolver.resolve("sip:nonaptr.example.net")) == [
        "tcp 127.0.0.3:5070 (sbc1.vaxel.example.net)"
    ]


async def test_explicit_port_means_addresses_only(resolver):
    assert summary(await resolver.resolve("sip:plain.example.net:5080;transport=tcp")) == [
        "tcp 127.0.0.5:5080 (plain.example.net)"
    ]
    assert summary(await resolver.resolve("sip:plain.example.net")) == [
        "udp 127.0.0.5:5060 (plain.example.net)"
    ]


async def test_ip_addresses_need_no_dns(resolver):
    assert summary(await resolver.resolve("sips:127.0.0.9")) == ["tls 127.0.0.9:5061 (127.0.0.9)"]


async def test_upstream_fails_over_to_the_next_srv_target(resolver):
    """sbc1 (127.0.0.3:5070) is down; the upstream moves on to sbc2, which answers."""
    server = TransportLayer(lambda message, flow: None)
    port = (await server.listen_stream("127.0.0.4", 0))[1]
    ZONE[("_sip._tcp.failover.example.net.", "SRV")] = [
        "10 50 5999 sbc1.vaxel.example.net.",
        f"20 50 {port} sbc2.vaxel.example.net.",
    ]
    client = TransportLayer(lambda message, flow: None)
    upstream = Upstream(
        client, ["sip:failover.example.net;transport=tcp"], ("127.0.0.2", 5062), resolver=resolver
    )
    try:
        flow = await upstream.flow()
        assert flow.remote == ("127.0.0.4", port)
        assert upstream.is_cloud("127.0.0.3")
        assert upstream.is_cloud("127.0.0.4")
    finally:
        del ZONE[("_sip._tcp.failover.example.net.", "SRV")]
        await client.close()
        await server.close()
