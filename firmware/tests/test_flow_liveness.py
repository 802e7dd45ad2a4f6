"""Flows that are dead are known to be dead (issue 13, RFC 5626 §4.4.1): a connection of ours whose
ping gets no pong is closed and reported; Kamailio, which answers pings, keeps its connection; a
phone's connection is watched by TCP keepalive, so a phone gone behind a NAT is found dead."""

import asyncio
import logging
import socket

import pytest
from peers import Kamailio, free_port
from vaxelbox.sip.transport import Limits, TransportLayer

CLOUD_HOST = "127.0.0.3"


class Silent(asyncio.Protocol):
    """A peer that accepts the connection and then says nothing, ever (a dead NAT binding)."""


async def test_no_pong_closes_our_connection_and_reports_it(caplog):
    caplog.set_level(logging.WARNING, logger="vaxelbox.sip.transport")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Silent, "127.0.0.1", 0)
    layer = TransportLayer(lambda message, flow: None, Limits(pong_timeout=0.3))
    failed = []
    layer.on_flow_failed = failed.append
    try:
        flow = await layer.connect("tcp", server.sockets[0].getsockname()[:2])
        assert layer.ping_outbound() == 1
        assert layer.check_pongs() == []  # not overdue yet
        await asyncio.sleep(0.4)
        assert layer.check_pongs() == [flow]
        await asyncio.sleep(0.05)
        assert not flow.alive
        assert failed == [flow]
        assert layer.stats["pong_missing"] == 1
        assert any("no pong from tcp" in r.getMessage() for r in caplog.records)
    finally:
        await layer.close()
        server.close()


@pytest.fixture
def kamailio(tmp_path):
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio").start()
    yield cloud
    cloud.stop()


async def test_kamailio_answers_our_pings_and_keeps_its_connection(kamailio):
    layer = TransportLayer(lambda message, flow: None, Limits(pong_timeout=0.5))
    try:
        flow = await layer.connect("tcp", (kamailio.address, kamailio.port))
        for _ in range(3):
            layer.ping_outbound()
            await asyncio.sleep(0.7)
            assert layer.check_pongs() == []
        assert flow.alive
        assert layer.stats["pong_missing"] == 0
    finally:
        await layer.close()


async def test_a_phones_connection_is_watched_by_tcp_keepalive():
    layer = TransportLayer(lambda message, flow: None)
    host, port = await layer.listen_stream("127.0.0.1", 0)
    try:
        with socket.create_connection((host, port)) as client:
            client.sendall(b"\r\n\r\n")
            for _ in range(50):
                flows = list(layer._streams.values())
                if flows:
                    break
                await asyncio.sleep(0.02)
            (flow,) = flows
            sock = flow._connection.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    finally:
        await layer.close()
