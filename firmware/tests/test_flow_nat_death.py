"""A phone whose TCP connection died behind a NAT does not keep a live flow (issue 13, part 4;
RFC 5626 §4.4.1), end to end against real peers in a network namespace the test creates.

The edge runs here, its LAN side on one end of a veth pair (198.18.0.0/15, the
benchmarking range, a /30 of it per test run); a sipp phone registers over TCP
from a namespace on the other end, through the edge to Kamailio (the cloud, on
loopback). Then the phone's side silently disappears: its end of the link goes
down, no FIN, no RST, as when a NAT forgets its mapping or a phone loses power.
The edge's TCP keepalive (shortened by `Limits`, the same setting the agent
uses with 30 s / 5 s / 3 probes) finds the connection dead, closes the flow,
marks the binding unreachable and logs one line naming the flow; a call to
that user is then answered 480 at once instead of being sent down a dead
connection. The cloud side (our pings, its pongs) is in test_flow_liveness.py.
"""

import asyncio
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers import DOMAIN, Kamailio, Phone, free_port, phone
from test_edge_relay import registered
from test_phone_tls import messages
from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.online import PhoneLocator
from vaxelbox.edge.service import Edge, EdgeSettings
from vaxelbox.sip.message import Request, parse_message
from vaxelbox.sip.transport import Limits, StreamFlow, TransportLayer

CLOUD_HOST = "127.0.0.3"
# Found dead within 1 + 1 x 2 = 3 s of silence (the appliance: 30 + 5 x 3 = 45 s).
FAST_KEEPALIVE = Limits(keepalive_idle=1, keepalive_interval=1, keepalive_probes=2)


@dataclass(frozen=True)
class Link:
    """A namespace joined to this one by a veth pair: our end, its end, its interface."""

    namespace: str
    interface: str  # the far end, inside `namespace`
    edge_address: str  # our end, in this namespace
    far_address: str

    def cut(self) -> None:
        """The far end goes down: nothing more crosses, and nobody is told."""
        _ip("-n", self.namespace, "link", "set", self.interface, "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def namespace_link(role: str, network: str) -> Iterator[Link]:
    """A namespace for `role` (a few letters) joined to this one by a veth pair on a /30 of
    `network` (198.18 or 198.19: 198.18.0.0/15, the benchmarking range) chosen by our process id,
    so two runs at once do not collide; removed, pass or fail."""
    assert os.geteuid() == 0, "network namespace tests need root (run make test as root)"
    tag = os.getpid() % 16384
    prefix, last = f"{network}.{tag // 64}", (tag % 64) * 4
    link = Link(f"vx-{role}-{tag}", f"vx{role}p{tag}", f"{prefix}.{last + 1}", f"{prefix}.{last + 2}")
    ours = f"vx{role}e{tag}"
    _ip("netns", "add", link.namespace)
    try:
        _ip("link", "add", ours, "type", "veth", "peer", "name", link.interface, "netns", link.namespace)
        _ip("addr", "add", f"{link.edge_address}/30", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        _ip("-n", link.namespace, "addr", "add", f"{link.far_address}/30", "dev", link.interface)
        _ip("-n", link.namespace, "link", "set", link.interface, "up")
        yield link
    finally:
        subprocess.run(["ip", "link", "del", ours], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", link.namespace], check=False, capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    with namespace_link("nat", "198.18") as made:
        yield made


@pytest.fixture
def kamailio(tmp_path) -> Iterator[Kamailio]:
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio").start()
    yield cloud
    cloud.stop()


@asynccontextmanager
async def running_edge(kamailio: Kamailio, link: Link, limits: Limits) -> AsyncIterator[Edge]:
    """The edge with its LAN side on our end of `link`, the cloud on loopback over TCP."""
    settings = EdgeSettings(
        lan=(link.edge_address, free_port(link.edge_address)),
        wan=("127.0.0.2", 0),
        proxies=[f"sip:{kamailio.address}:{kamailio.port};transport=tcp"],
        limits=limits,
    )
    edge = Edge(settings)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()


async def bo_over_tcp(edge: Edge, link: Link, tmp_path: Path) -> Phone:
    """Bo (102), a sipp phone at the far end of `link`, registering over TCP through the edge and
    answering calls for 30 s."""
    return await phone(
        "register_wait.xml", edge.addresses.lan, "102", tmp_path, transport="t1",
        local=link.far_address, netns=link.namespace, answers="answer.xml", hold=30,
    )  # fmt: skip


@pytest.fixture
async def edge(kamailio, link) -> AsyncIterator[Edge]:
    async with running_edge(kamailio, link, FAST_KEEPALIVE) as running:
        yield running


async def test_a_phone_gone_behind_a_nat_is_found_dead_and_not_called(edge, link, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="vaxelbox.edge.service")
    aor = f"sip:102@{DOMAIN}"
    bo = await bo_over_tcp(edge, link, tmp_path)
    try:
        await registered(edge, "102")
        ((binding, flow),) = edge.bindings.contacts_of(aor)
        assert isinstance(flow, StreamFlow)  # Bo's own TCP connection, live
        assert flow.alive
        assert (binding.transport, binding.remote[0]) == ("tcp", link.far_address)

        link.cut()
        cut = time.monotonic()
        while flow.alive and time.monotonic() - cut < FAST_KEEPALIVE.keepalive_window + 3:
            await asyncio.sleep(0.05)
        found_dead = time.monotonic() - cut
        assert not flow.alive, "the dead phone's connection is still open"
        assert found_dead <= FAST_KEEPALIVE.keepalive_window + 1.5, found_dead

        # The binding stays until it expires, but nothing reaches it: no flow, marked unreachable.
        assert edge.bindings.contacts_of(aor) == [(binding, None)]
        assert edge.bindings.unreachable(binding.contact)
        assert edge.transports.stats["flows_lost"] == 1
        lines = [r.getMessage() for r in caplog.records if "flow failed" in r.getMessage()]
        assert len(lines) == 1, lines
        assert all(name in lines[0] for name in (repr(flow), aor, binding.contact)), lines[0]

        # A call to Bo now: through the cloud, which still lists him, back to us, refused at once.
        started = time.monotonic()
        anna = await phone(
            "register_call_480.xml", edge.addresses.lan, "101", tmp_path, callee="102",
            local=link.edge_address, keys={"scheme": "sip"},
        )  # fmt: skip
        await anna.finish(timeout=15)
        assert time.monotonic() - started < 5  # 480 from us, not a timeout on a dead connection
    finally:
        if bo.process.returncode is None:
            bo.process.kill()
        await bo.process.wait()
    assert "INVITE sip:102" not in "".join(p.read_text() for p in bo.workdir.glob("*_messages.log"))


async def test_a_call_sent_to_a_phone_that_just_vanished_fails_within_the_window(kamailio, link, tmp_path):
    """Bo vanishes and the cloud's call for him comes at once, before keepalive would probe: our
    INVITE sits unacknowledged on the dead connection, where TCP keepalive never probes.
    TCP_USER_TIMEOUT closes it within the same window, the INVITE's transaction fails, and the
    caller hears so in seconds, not after Timer B (32 s) or TCP's retransmissions (about 15 min)."""
    limits = Limits(keepalive_idle=3, keepalive_interval=1, keepalive_probes=1)  # window 4 s
    aor = f"sip:102@{DOMAIN}"
    async with running_edge(kamailio, link, limits) as edge:
        bo = await bo_over_tcp(edge, link, tmp_path)
        try:
            await registered(edge, "102")
            ((_, flow),) = edge.bindings.contacts_of(aor)
            assert flow is not None
            link.cut()
            started = time.monotonic()
            anna = await phone(
                "register_call_fails.xml", edge.addresses.lan, "101", tmp_path, callee="102",
                local=link.edge_address, keys={"scheme": "sip"},
            )  # fmt: skip
            await anna.finish(timeout=20)
            failed_after = time.monotonic() - started
        finally:
            if bo.process.returncode is None:
                bo.process.kill()
            await bo.process.wait()
        assert not flow.alive
        assert failed_after < limits.keepalive_window + 2, failed_after
        # The INVITE did go out on the dead connection (a 480 would mean keepalive was first).
        heads = re.findall(r"^SIP/2.0 ([3-6]\d\d) (.*?)\r?\n\r?\n", messages(anna.workdir), re.M | re.S)
        finals = [status for status, head in heads if re.search(r"^CSeq: 1 INVITE", head, re.M)]
        assert finals in (["408"], ["503"]), finals
        assert edge.bindings.unreachable(edge.bindings.contacts_of(aor)[0][0].contact)


class LostFlow(StreamFlow):
    """A phone's connection as the mirror sees it, without a socket; `alive` until the test says."""

    def __init__(self) -> None:
        super().__init__(TransportLayer(lambda message, flow: None), "tcp", outbound=False)
        self.remote, self.is_alive = ("192.0.2.20", 40123), True

    @property
    def alive(self) -> bool:
        return self.is_alive


def invite(uri: str) -> Request:
    message = parse_message(
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\n"
        f"From: <sip:101@{DOMAIN}>;tag=a\r\nTo: <sip:102@{DOMAIN}>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


def test_a_contact_without_transport_is_not_tried_over_udp_once_its_connection_died():
    """A phone that registered over TCP with a Contact naming no transport: once its connection is
    lost, the cloud's request for it is not sent over UDP to the address behind the NAT (which
    reaches nobody, or somebody else) but answered 480 (edge.online.FromCloud)."""
    mirror, flow = BindingMirror(), LostFlow()
    contact = "sip:102@192.0.2.20:5060"
    mirror.grant(f"sip:102@{DOMAIN}", contact, flow, 300, "Yealink SIP-T46U")
    udp = StreamFlow(TransportLayer(lambda message, flow: None), "udp", outbound=True)
    locate = PhoneLocator(mirror, lambda transport, address: udp if transport == "udp" else None)
    assert locate(invite(contact), None) is flow
    flow.is_alive = False
    assert mirror.flow_lost(flow) == [mirror.get(f"sip:102@{DOMAIN}", contact)]
    assert mirror.unreachable(contact)
    assert locate(invite(contact), None) is None
    # It registers again (a new connection): reachable again.
    again = LostFlow()
    mirror.grant(f"sip:102@{DOMAIN}", contact, again, 300, "Yealink SIP-T46U")
    assert not mirror.unreachable(contact)
    assert locate(invite(contact), None) is again


# -- the cloud's side: our pings, its pongs (RFC 5626 §4.4.1) ------------------------------------------


@pytest.fixture
def cloud_link() -> Iterator[Link]:
    with namespace_link("cl", "198.19") as made:
        yield made


async def test_a_cloud_whose_pongs_stop_is_a_health_signal(cloud_link, tmp_path, caplog):
    """Kamailio (the cloud) in a namespace over TCP answers the edge's pings; its link then goes
    down silently. The next ping gets no pong: the connection is closed, logged, and the relay's
    cloud signal says the cloud missed an answer (the agent's health monitor listens to it)."""
    caplog.set_level(logging.WARNING, logger="vaxelbox.sip.transport")
    cloud = Kamailio(
        cloud_link.far_address, 5060, tmp_path / "kamailio", netns=cloud_link.namespace
    ).start()  # its own namespace: any port is free there
    edge = Edge(
        EdgeSettings(
            lan=("127.0.0.1", 0),
            wan=(cloud_link.edge_address, 0),
            proxies=[f"sip:{cloud.address}:{cloud.port};transport=tcp"],
            limits=Limits(pong_timeout=0.3),
        )
    )
    signals: list[bool] = []
    try:
        await edge.start()
        assert edge.relay is not None
        assert edge.upstream is not None
        edge.relay.on_cloud_signal = signals.append
        flow = await edge.upstream.flow()
        # A tick every 20 ms: a ping every 30 ticks (0.6 s), pongs checked every tick.
        maintenance = asyncio.create_task(edge.maintain(interval=0.02))
        await asyncio.sleep(1.4)  # two pings, two pongs
        assert flow.alive
        assert (signals, edge.transports.stats["pong_missing"]) == ([], 0)

        cloud_link.cut()
        cut = time.monotonic()
        while flow.alive and time.monotonic() - cut < 3:
            await asyncio.sleep(0.02)
        assert not flow.alive, "the silent cloud's connection is still open"
        assert time.monotonic() - cut < 0.6 + 0.3 + 0.5  # the next ping, its timeout, slack
        assert signals == [False]
        assert edge.transports.stats["pong_missing"] == 1
        assert any(f"no pong from tcp {cloud.address}:{cloud.port}" in r.getMessage() for r in caplog.records)
        maintenance.cancel()
    finally:
        await edge.stop()
        cloud.stop()
