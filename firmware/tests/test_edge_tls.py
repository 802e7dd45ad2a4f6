"""TLS to the cloud against a real peer: Kamailio's TLS module with a certificate made for the test.

Phones speak UDP on the LAN; the edge reaches Kamailio over TLS, checking its
certificate, and Kamailio sends its requests for the phones back over that
same connection (RFC 5923 ;alias), as a cloud behind NAT would have to.
"""

import asyncio
import ssl

import pytest
from peers import Kamailio, free_port, phone
from test_local_mode import ended
from vaxelbox.edge.service import Edge, EdgeSettings


@pytest.fixture
def tls_cloud(tmp_path):
    cloud = Kamailio(
        "127.0.0.3", free_port("127.0.0.3"), tmp_path / "kamailio", tls_port=free_port("127.0.0.3")
    )
    cloud.start()
    yield cloud
    cloud.stop()


async def test_register_and_call_with_the_cloud_over_tls(tls_cloud, tmp_path):
    trust = ssl.create_default_context(cafile=str(tls_cloud.certificate))
    settings = EdgeSettings(
        lan=("127.0.0.1", 0),
        wan=("127.0.0.2", 0),
        proxies=[f"sips:{tls_cloud.address}:{tls_cloud.tls_port};transport=tls"],
        tls=trust,
    )
    edge = Edge(settings)
    await edge.start()
    try:
        bo = await phone(
            "register_wait.xml", edge.addresses.lan, "102", tmp_path, answers="answer.xml", hold=6
        )
        for _ in range(100):
            if edge.bindings.all():
                break
            await asyncio.sleep(0.05)
        anna = await phone("register_call.xml", edge.addresses.lan, "101", tmp_path, callee="102")
        await anna.finish()
        await ended(bo)  # registered, answered: not the rest of its 6 s hold
        flow = edge.upstream.ready_flow()
        assert flow is not None
        assert flow.transport == "tls"
        assert flow.remote == (tls_cloud.address, tls_cloud.tls_port)
        assert {b.transport for b in edge.bindings.all()} == {"udp"}
    finally:
        await edge.stop()


async def test_a_cloud_certificate_we_do_not_trust_is_refused(tls_cloud, tmp_path):
    edge = Edge(
        EdgeSettings(
            lan=("127.0.0.1", 0),
            wan=("127.0.0.2", 0),
            proxies=[f"sips:{tls_cloud.address}:{tls_cloud.tls_port};transport=tls"],
            tls=ssl.create_default_context(),  # the system's CAs: the test certificate is not among them
        )
    )
    await edge.start()
    try:
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            await edge.upstream.flow()
    finally:
        await edge.stop()
