"""The cloud_traffic counters (issue 17) count every packet the edge sends the cloud, stateless ones
too, and nothing it sends the fallback trunk.

The real edge (transports, stack, relay) on loopback; UDP sockets play the cloud (127.0.0.3), a
phone (127.0.0.1) and the fallback trunk (127.0.0.4), and record what reaches them.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from test_good_neighbour import ScriptedCloud, scripted_cloud, started_edge, wait_until
from vaxelbox.edge.service import Edge
from vaxelbox.routing.mode import Mode


@dataclass
class Office:
    edge: Edge
    cloud: ScriptedCloud
    cloud_port: int
    phone: ScriptedCloud
    phone_port: int
    trunk: ScriptedCloud
    trunk_port: int

    def packets(self) -> int:
        assert self.edge.upstream is not None
        return self.edge.upstream.footprint()["packets"]

    def from_phone(self, message: str) -> None:
        assert self.phone.transport is not None
        self.phone.transport.sendto(message.encode(), self.edge.addresses.lan)


@pytest.fixture
async def office() -> AsyncIterator[Office]:
    cloud, cloud_port, cloud_endpoint = await scripted_cloud("127.0.0.3")
    phone, phone_port, phone_endpoint = await scripted_cloud("127.0.0.1")
    trunk, trunk_port, trunk_endpoint = await scripted_cloud("127.0.0.4")
    phone.answer = trunk.answer = None  # they only listen
    edge = await started_edge(f"sip:127.0.0.3:{cloud_port};transport=udp")
    assert edge.relay is not None
    assert edge.upstream is not None
    edge.relay.is_trunk = lambda address: address == "127.0.0.4"
    await edge.upstream.flow()  # the upstream's own flow, as the prober opens it
    try:
        yield Office(edge, cloud, cloud_port, phone, phone_port, trunk, trunk_port)
    finally:
        await edge.stop()
        for endpoint in (cloud_endpoint, phone_endpoint, trunk_endpoint):
            endpoint.close()


def ack(office: Office, uri: str, route: str = "") -> str:
    return (
        f"ACK {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{office.phone_port};branch=z9hG4bK-ack{id(uri)};rport\r\n"
        f"{route}Max-Forwards: 70\r\nFrom: <sip:101@vaxel.example.net>;tag=a\r\n"
        "To: <sip:102@vaxel.example.net>;tag=b\r\nCall-ID: stray-ack@127.0.0.1\r\nCSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )


async def test_a_stray_ack_relayed_to_the_cloud_is_counted(office):
    """The ACK for a 2xx is forwarded statelessly (relay.on_stray), outside any transaction."""
    before = office.packets()
    office.from_phone(ack(office, f"sip:102@127.0.0.3:{office.cloud_port}"))
    await wait_until(lambda: office.cloud.received != [], 2, "the ACK reaches the cloud")
    assert [m for _, m in office.cloud.received] == ["ACK"]
    assert office.packets() == before + 1
    assert office.edge.upstream.footprint()["requests"]["other"] == 1


async def test_a_stray_response_relayed_to_the_cloud_is_counted(office):
    """A late 200 from a phone to a request the cloud sent through us (its transaction gone)."""
    lan_host, lan_port = office.edge.addresses.lan
    before = office.packets()
    office.from_phone(
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {lan_host}:{lan_port};branch=z9hG4bK-ours\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.3:{office.cloud_port};branch=z9hG4bK-cloud\r\n"
        "From: <sip:102@vaxel.example.net>;tag=c\r\nTo: <sip:101@vaxel.example.net>;tag=p\r\n"
        "Call-ID: late-200@cloud\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    await wait_until(lambda: office.cloud.received != [], 2, "the 200 reaches the cloud")
    assert [m for _, m in office.cloud.received] == ["response"]
    assert office.packets() == before + 1


async def test_answers_to_the_clouds_own_requests_are_counted(office):
    """The cloud asks the edge (OPTIONS to the edge itself): the answer leaves on the flow the
    request came in on, not one the upstream opened, and is a packet to the cloud all the same."""
    before = office.packets()
    host, port = office.edge.addresses.wan
    assert office.cloud.transport is not None
    office.cloud.transport.sendto(
        (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.3:{office.cloud_port};branch=z9hG4bK-cloudping;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:cloud@vaxel.example.net>;tag=k\r\nTo: <sip:edge@vaxel>\r\n"
            "Call-ID: cloud-ping@cloud\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        (host, port),
    )
    await wait_until(lambda: office.cloud.received != [], 2, "the answer reaches the cloud")
    assert [m for _, m in office.cloud.received] == ["response"]
    assert office.packets() == before + 1


async def test_the_fallback_trunk_is_not_the_cloud(office):
    """In local mode an ACK of a call that went out through the trunk goes to the trunk: it is not
    cloud traffic, and the counters do not move."""
    assert office.edge.relay is not None
    office.edge.relay.mode = lambda: Mode.LOCAL
    before = office.edge.upstream.footprint()
    office.from_phone(ack(office, f"sip:0701234567@127.0.0.4:{office.trunk_port}"))
    await wait_until(lambda: office.trunk.received != [], 2, "the ACK reaches the trunk")
    assert [m for _, m in office.trunk.received] == ["ACK"]
    await asyncio.sleep(0.1)
    assert office.cloud.received == []
    assert office.edge.upstream.footprint() == before


def test_the_counters_tell_requests_retransmissions_responses_and_keepalives_apart():
    """CloudTraffic alone: a packet each; requests by kind once per branch, again = retransmission."""
    from vaxelbox.edge.traffic import CloudTraffic

    traffic = CloudTraffic()
    invite = (
        b"INVITE sip:102@example.net SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5062;branch=z9hG4bK-t1\r\n\r\n"
    )
    for data in (b"\r\n\r\n", invite, invite, b"SIP/2.0 200 OK\r\nVia: x;branch=z9hG4bK-t1\r\n\r\n",
                 invite.replace(b"INVITE", b"BYE").replace(b"-t1", b"-t2")):  # fmt: skip
        traffic.sent(data, "127.0.0.3:5060/tcp")
    assert traffic.packets == 5
    assert dict(traffic.requests) == {"INVITE": 1, "other": 1}
    assert traffic.retransmissions == 1


def test_the_last_4096_first_sendings_are_remembered_and_older_ones_forgotten():
    """Retransmissions are recognised among the last _REMEMBERED requests sent (kept as one hash
    each, issue 12); a request older than that counts as a first sending again, and the memory of
    them stays at _REMEMBERED however many phones register."""
    from vaxelbox.edge import traffic as module

    traffic = module.CloudTraffic()

    def register(n: int) -> bytes:
        return (
            f"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5062;branch=z9hG4bK-{n}\r\n\r\n".encode()
        )

    for n in range(module._REMEMBERED + 10):
        traffic.sent(register(n), "cloud")
    assert traffic.requests["REGISTER"] == module._REMEMBERED + 10
    traffic.sent(register(module._REMEMBERED + 9), "cloud")  # the newest again: a retransmission
    traffic.sent(register(10), "cloud")  # the oldest still remembered
    assert traffic.retransmissions == 2
    traffic.sent(register(9), "cloud")  # forgotten: a first sending as far as the counters know
    assert traffic.requests["REGISTER"] == module._REMEMBERED + 11
    assert len(traffic._seen) == len(traffic._order) == module._REMEMBERED
