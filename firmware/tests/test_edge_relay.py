"""The edge between real peers: sipp phones on the LAN side, Kamailio as the cloud PBX on the WAN side.

Addresses: phones on 127.0.0.1, the edge's LAN side on 127.0.0.1 and its WAN
side on 127.0.0.2, Kamailio on a free port of 127.0.0.3, over TCP. Every scenario is a
sipp file in peers/sipp; sipp fails the test on any unexpected message.
"""

import asyncio
import socket
import subprocess

import pytest
from peers import DOMAIN, Kamailio, free_port, phone, tool
from test_local_mode import ended
from vaxelbox.edge.service import Edge, EdgeSettings

CLOUD_HOST = "127.0.0.3"


@pytest.fixture
def kamailio(tmp_path):
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio").start()
    yield cloud
    cloud.stop()


@pytest.fixture
async def edge(kamailio, tmp_path):
    cloud = f"sip:{kamailio.address}:{kamailio.port};transport=tcp"
    edge = Edge(EdgeSettings(lan=("127.0.0.1", 0), wan=("127.0.0.2", 0), proxies=[cloud]))
    await edge.start()
    yield edge
    await edge.stop()


async def registered(edge: Edge, user: str, timeout: float = 10) -> None:
    aor = f"sip:{user}@{DOMAIN}"
    for _ in range(int(timeout / 0.05)):
        if any(b.aor == aor for b in edge.bindings.all()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{aor} never registered; mirror: {edge.bindings.all()}")


def cloud_locations(kamailio: Kamailio) -> str:
    return subprocess.run(
        [tool("kamcmd"), "-s", f"unix:{kamailio.workdir}/kamailio_ctl", "ul.dump"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip


async def test_register_with_digest_through_the_edge_mirrors_the_binding(edge, kamailio, tmp_path):
    anna = await phone("register.xml", edge.addresses.lan, "101", tmp_path)
    await anna.finish()
    (binding,) = edge.bindings.all()
    assert binding.aor == f"sip:101@{DOMAIN}"
    assert binding.transport == "udp"
    assert binding.remote[0] == "127.0.0.1"
    assert binding.user_agent.startswith("Yealink")
    assert 290 <= binding.expires_in() <= 300
    locations = cloud_locations(kamailio)
    assert f"127.0.0.2:{edge.addresses.wan[1]}" in locations  # the cloud stored our Path


async def test_call_between_two_phones_through_the_cloud(edge, tmp_path):
    bo = await phone("register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="answer.xml")
    await registered(edge, "102")
    anna = await phone("register_call.xml", edge.addresses.lan, "101", tmp_path, callee="102")
    await anna.finish()
    await ended(bo)  # registered; its part (answering) is over: not the rest of its 5 s hold


async def test_busy_callee(edge, tmp_path):
    bo = await phone("register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="busy.xml")
    await registered(edge, "102")
    anna = await phone("register_call_busy.xml", edge.addresses.lan, "101", tmp_path, callee="102")
    await anna.finish()
    await ended(bo)  # registered; its part (answering) is over: not the rest of its 5 s hold


async def test_unknown_number_gets_404(edge, tmp_path):
    anna = await phone("register_call_404.xml", edge.addresses.lan, "101", tmp_path, callee="199")
    await anna.finish()


async def test_cancel_while_ringing(edge, tmp_path):
    bo = await phone("register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="ring.xml")
    await registered(edge, "102")
    anna = await phone("register_cancel.xml", edge.addresses.lan, "101", tmp_path, callee="102")
    await anna.finish()
    await ended(bo)  # registered; its part (answering) is over: not the rest of its 5 s hold


async def test_cloud_reaches_a_tcp_phone_through_its_flow(edge, tmp_path):
    bo = await phone(
        "register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="answer.xml", transport="t1"
    )
    await registered(edge, "102")
    (binding,) = edge.bindings.all()
    assert binding.transport == "tcp"
    anna = await phone("register_call.xml", edge.addresses.lan, "101", tmp_path, callee="102")
    await anna.finish()
    await ended(bo)  # registered; its part (answering) is over: not the rest of its 5 s hold


async def test_reregister_refreshes_and_unregister_removes_the_binding(edge, kamailio, tmp_path):
    port = free_port("127.0.0.1")
    first = await phone("register.xml", edge.addresses.lan, "101", tmp_path, port=port, expires=120)
    await first.finish()
    (before,) = edge.bindings.all()
    assert 110 <= before.expires_in() <= 120
    again = await phone("register.xml", edge.addresses.lan, "101", tmp_path, port=port, expires=600)
    await again.finish()
    (after,) = edge.bindings.all()
    assert after.contact == before.contact
    assert 590 <= after.expires_in() <= 600
    gone = await phone("register.xml", edge.addresses.lan, "101", tmp_path, port=port, expires=0)
    await gone.finish()
    assert edge.bindings.all() == []
    assert "sip:101@" not in cloud_locations(kamailio)


def udp_request(method: str, target: tuple[str, int], source: str, user_agent: str, uri: str = "") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"{method} {uri or f'sip:100@{DOMAIN}'} SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-a{port}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:x@{DOMAIN}>;tag=x\r\nTo: <sip:100@{DOMAIN}>\r\n"
                f"Call-ID: scan-{port}\r\nCSeq: 1 {method}\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            target,
        )
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


async def test_scanner_is_banned_silently_with_a_fail2ban_line(edge, caplog):
    lan = edge.addresses.lan
    assert await asyncio.to_thread(udp_request, "OPTIONS", lan, "127.0.0.9", "friendly-scanner") == b""
    assert "SIP scanner banned: source=127.0.0.9 user_agent=friendly-scanner seconds=600" in caplog.text
    # Banned: an innocent-looking request from there is ignored too, and never reaches the cloud.
    assert await asyncio.to_thread(udp_request, "INVITE", lan, "127.0.0.9", "Yealink SIP-T46U") == b""
    # Another source is served as usual: the edge answers OPTIONS addressed to itself.
    ok = await asyncio.to_thread(
        udp_request, "OPTIONS", lan, "127.0.0.1", "Yealink SIP-T46U", uri=f"sip:{lan[0]}:{lan[1]}"
    )
    assert ok.startswith(b"SIP/2.0 200 OK")
    assert edge.transports.stats["refused"] == 2


async def test_wan_side_accepts_only_the_cloud(edge, caplog):
    assert await asyncio.to_thread(udp_request, "INVITE", edge.addresses.wan, "127.0.0.2", "Kamailio") == b""
    assert "refused: source=127.0.0.2 is not the cloud, on the WAN side" in caplog.text


async def test_a_late_2xx_from_the_cloud_is_forwarded_statelessly_to_the_phone(edge):
    """A 200 that matches no transaction any more (a retransmission after it ended) still
    reaches the phone, by the Via below ours (RFC 3261 §16.7 step 10)."""
    wan_host, wan_port = edge.addresses.wan
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone_sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cloud_sock,
    ):
        phone_sock.bind(("127.0.0.1", 0))
        phone_sock.settimeout(2)
        cloud_sock.bind(("127.0.0.3", 0))  # the cloud's address: admitted on the WAN side
        phone_port = phone_sock.getsockname()[1]
        late = (
            "SIP/2.0 200 OK\r\n"
            f"Via: SIP/2.0/UDP {wan_host}:{wan_port};branch=z9hG4bK-gone.1;rport\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{phone_port};branch=z9hG4bK-phone;rport={phone_port};received=127.0.0.1\r\n"
            f"From: <sip:101@{DOMAIN}>;tag=a\r\nTo: <sip:102@{DOMAIN}>;tag=b\r\nCall-ID: late@x\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        cloud_sock.sendto(late, edge.addresses.wan)
        forwarded = await asyncio.to_thread(phone_sock.recv, 4096)
    assert forwarded.startswith(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:")
    assert b"z9hG4bK-gone" not in forwarded  # our Via is gone
