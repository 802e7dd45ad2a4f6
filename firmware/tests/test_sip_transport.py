"""Transports over real loopback sockets: UDP, TCP and TLS, junk handling, limits, flows."""

import asyncio
import socket
import ssl

import pytest
from peers import make_certificate
from vaxelbox.sip.framing import FramingError, Ping, Pong, StreamFramer
from vaxelbox.sip.message import Request
from vaxelbox.sip.transport import Flow, Limits, SourceLimiter, TransportLayer

OPTIONS = (
    "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 192.0.2.99:5060;branch=z9hG4bK-{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@example.net>;tag=p\r\nTo: <sip:edge@127.0.0.1>\r\n"
    "Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def options(n: int = 1, transport: str = "UDP") -> bytes:
    return OPTIONS.format(n=n, transport=transport).encode()


class Recorder:
    def __init__(self):
        self.messages = []
        self.arrived = asyncio.Event()

    def __call__(self, message, flow):
        self.messages.append((message, flow))
        self.arrived.set()


@pytest.fixture
async def udp_layer():
    recorder = Recorder()
    layer = TransportLayer(recorder)
    address = await layer.listen_udp("127.0.0.1", 0)
    yield layer, address, recorder
    await layer.close()


def udp_client(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2)
    return sock


async def test_udp_request_arrives_with_its_flow_and_received_stamped(udp_layer):
    _layer, address, recorder = udp_layer
    with udp_client() as client:
        client.sendto(options(), address)
        await asyncio.wait_for(recorder.arrived.wait(), 2)
        message, flow = recorder.messages[0]
        assert isinstance(message, Request)
        assert flow.remote == client.getsockname()
        via = message.vias[0]
        assert via.params["received"] == "127.0.0.1"
        assert via.params["rport"] == str(client.getsockname()[1])
        flow.send(b"reply")
        assert client.recv(100) == b"reply"


async def test_malformed_request_gets_400_with_the_reason_and_is_counted(udp_layer):
    layer, address, recorder = udp_layer
    with udp_client() as client:
        client.sendto(options().replace(b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS"), address)
        reply = await asyncio.to_thread(client.recv, 4096)
    assert reply.startswith(b"SIP/2.0 400 CSeq number out of range\r\n")
    assert b"\r\nCall-ID: probe-1\r\n" in reply  # echoed so the sender can match it
    assert layer.stats["bad_requests"] == 1
    assert recorder.messages == []


async def test_unknown_version_gets_505(udp_layer):
    _, address, _ = udp_layer
    with udp_client() as client:
        client.sendto(options().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), address)
        reply = await asyncio.to_thread(client.recv, 4096)
    assert reply.startswith(b"SIP/2.0 505 ")


async def test_malformed_response_and_garbage_are_dropped_silently(udp_layer, caplog):
    """Silently toward the peer; the log says why a response was dropped (issue 13)."""
    layer, address, recorder = udp_layer
    with udp_client() as client:
        client.sendto(b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP x\r\n\r\n", address)
        client.sendto(b"\x16\x03\x01 not sip at all", address)
        client.sendto(options(2), address)
        await asyncio.wait_for(recorder.arrived.wait(), 2)
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(4096)  # nothing came back for the two junk datagrams
    assert layer.stats["dropped_responses"] == 1
    assert layer.stats["bad_requests"] == 1  # garbage without a Via: counted, not answered
    assert len(recorder.messages) == 1
    (line,) = [r.getMessage() for r in caplog.records if "response dropped" in r.getMessage()]
    assert "status code" in line


async def test_oversize_datagram_gets_513():
    layer = TransportLayer(Recorder(), Limits(max_message=1000))
    address = await layer.listen_udp("127.0.0.1", 0)
    try:
        with udp_client() as client:
            big = options().replace(
                b"Content-Length: 0\r\n", b"X-Pad: " + b"a" * 1200 + b"\r\nContent-Length: 0\r\n"
            )
            client.sendto(big, address)
            reply = await asyncio.to_thread(client.recv, 4096)
        assert reply.startswith(b"SIP/2.0 513 Message Too Large")
    finally:
        await layer.close()


async def test_a_flooding_source_is_limited_and_others_still_get_through():
    recorder = Recorder()
    layer = TransportLayer(recorder, Limits(rate=50, burst=50))
    address = await layer.listen_udp("127.0.0.1", 0)
    try:
        # Limits are per source address: the phone sits on another loopback address.
        with udp_client("127.0.0.1") as flooder, udp_client("127.0.0.2") as phone:
            for n in range(300):
                flooder.sendto(options(n), address)
                if n % 20 == 0:
                    await asyncio.sleep(0.001)  # let the edge read, so the kernel buffer is not what drops
            phone.sendto(options(1000), address)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if any(m.call_id == "probe-1000" for m, _ in recorder.messages):
                    break
        assert any(m.call_id == "probe-1000" for m, _ in recorder.messages)
        assert layer.stats["rate_limited"] > 200
    finally:
        await layer.close()


def test_source_limiter_refills_and_forgets_old_sources():
    limiter = SourceLimiter(Limits(rate=10, burst=2, tracked_sources=3))
    assert [limiter.allow("a", now=0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("a", now=0.1)  # one token back after 100 ms
    for n in range(10):
        limiter.allow(f"spoofed-{n}", now=1)
    assert len(limiter._buckets) == 3


def test_stream_framer_cuts_by_content_length_across_segments():
    framer = StreamFramer()
    message = options(1, "TCP").replace(b"Content-Length: 0", b"Content-Length: 5") + b"hello"
    events = framer.feed(message[:10]) + framer.feed(message[10:] + message[:3]) + framer.feed(message[3:])
    assert [e.data for e in events] == [message, message]


def test_stream_framer_keepalives_and_errors():
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [Ping()]
    assert framer.feed(b"\r\n") == [Pong()]
    no_length = options(1, "TCP").replace(b"Content-Length: 0\r\n", b"")
    assert framer.feed(no_length) == [FramingError("a stream message needs exactly one Content-Length")]
    assert framer.feed(options()) == []  # a failed stream stays failed: the connection is closed
    small = StreamFramer(max_size=100)
    assert isinstance(small.feed(options())[0], FramingError)


async def test_tcp_messages_keepalive_and_framing_error_close_the_connection():
    recorder = Recorder()
    layer = TransportLayer(recorder)
    host, port = await layer.listen_stream("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(options(1, "TCP") + options(2, "TCP")[:40])
        writer.write(options(2, "TCP")[40:] + b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"  # pong
        assert [m.call_id for m, _ in recorder.messages] == ["probe-1", "probe-2"]
        flow = recorder.messages[0][1]
        assert flow.transport == "tcp"
        assert flow.reliable
        assert layer.stream_flow("tcp", flow.remote) is flow
        writer.write(b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the edge
        await asyncio.sleep(0.05)
        assert layer.stream_flow("tcp", flow.remote) is None
        assert layer.stats["framing_errors"] == 1
        writer.close()
    finally:
        await layer.close()


async def test_connect_reuses_one_connection_for_concurrent_callers():
    server = TransportLayer(Recorder())
    address = await server.listen_stream("127.0.0.1", 0)
    client = TransportLayer(Recorder())
    try:
        flows = await asyncio.gather(*(client.connect("tcp", address) for _ in range(5)))
        assert len({f.id for f in flows}) == 1
        assert await client.connect("tcp", address) is flows[0]
        assert client.ping_outbound() == 1
    finally:
        await client.close()
        await server.close()


async def test_tls_server_and_client(tmp_path):
    cert = make_certificate(tmp_path, "edge.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, tmp_path / "key.pem")
    client_context = ssl.create_default_context(cafile=str(cert))
    recorder = Recorder()
    server = TransportLayer(recorder)
    address = await server.listen_stream("127.0.0.1", 0, tls=server_context)
    client = TransportLayer(Recorder())
    try:
        flow = await client.connect("tls", address, tls=client_context, server_name="edge.test")
        flow.send(options(7, "TLS"))
        await asyncio.wait_for(recorder.arrived.wait(), 2)
        message, server_flow = recorder.messages[0]
        assert message.call_id == "probe-7"
        assert server_flow.transport == "tls"
    finally:
        await client.close()
        await server.close()


async def test_the_trusted_cloud_is_not_rate_limited():
    recorder = Recorder()
    layer = TransportLayer(recorder, Limits(rate=10, burst=10))
    layer.trusted = lambda address: address == "127.0.0.3"
    address = await layer.listen_udp("127.0.0.1", 0)
    try:
        with udp_client("127.0.0.3") as cloud:
            for n in range(100):
                cloud.sendto(options(n), address)
                if n % 20 == 0:
                    await asyncio.sleep(0.001)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(recorder.messages) == 100:
                    break
        assert len(recorder.messages) == 100
        assert layer.stats["rate_limited"] == 0
    finally:
        await layer.close()


class Phone(Flow):
    """A UDP flow to a phone for the stamping tests: its remote is where the datagram came from."""

    transport, reliable = "udp", False

    def send(self, data: bytes) -> None:
        pass


def test_a_udp_request_is_stamped_with_where_it_came_from_in_its_top_via_only():
    """§18.2.1 received and RFC 3581 rport in the top Via; the parsed top Via is the stamped one (the
    transaction reads it next, without parsing the line again: issue 12), the others untouched."""
    from vaxelbox.sip.message import parse_message
    from vaxelbox.sip.transport import stamp_received

    request = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\n"
        b"Via: SIP/2.0/UDP z;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n"
        b"Call-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    assert isinstance(request, Request)
    stamp_received(request, Phone(("192.0.2.1", 5060), ("192.0.2.5", 4000)))
    stamped = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=4000;received=192.0.2.5"
    assert request.to_bytes().split(b"\r\n")[1:3] == [
        f"Via: {stamped}".encode(),
        b"Via: SIP/2.0/UDP z;branch=z9hG4bKy",
    ]
    assert str(request.top_via) == stamped
    assert [str(via) for via in request.vias] == [stamped, "SIP/2.0/UDP z;branch=z9hG4bKy"]


def test_a_link_local_phone_is_stamped_with_its_zone_and_every_via_still_parses():
    """A datagram from a link-local IPv6 phone comes from `fe80::...%eth0` (recvfrom's host names the
    zone): stamped as received=, it must read back (was: `vias` raised), zone kept for the reply."""
    from vaxelbox.sip.message import parse_message
    from vaxelbox.sip.transport import stamp_received

    request = parse_message(
        b"REGISTER sip:office.example SIP/2.0\r\nVia: SIP/2.0/UDP [fe80::a:1]:5060;branch=z9hG4bKx;rport\r\n"
        b"From: <sip:101@office.example>;tag=1\r\nTo: <sip:101@office.example>\r\n"
        b"Call-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"
    )
    assert isinstance(request, Request)
    stamp_received(request, Phone(("fe80::1", 5060), ("fe80::a:1%eth0", 5060)))
    stamped = "SIP/2.0/UDP [fe80::a:1]:5060;branch=z9hG4bKx;rport=5060;received=fe80::a:1%eth0"
    again = parse_message(request.to_bytes())
    assert [str(via) for via in request.vias] == [str(via) for via in again.vias] == [stamped]
    assert again.top_via.params["received"] == "fe80::a:1%eth0"
