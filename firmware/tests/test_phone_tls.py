"""TLS from the phones to the appliance (issue 13, part 5), against real peers.

The edge's LAN TLS listener presents a certificate the site CA issued (the CA
provisioning creates and serves at /ca.pem); Kamailio plays the cloud over
TCP; `openssl s_client` checks the chain a phone sees. Addresses as in
test_edge_relay.py: phones and the LAN side on 127.0.0.1, the WAN side on
127.0.0.2, Kamailio on 127.0.0.3.

The phones are sipp, but Debian's sipp (sip-tester) is built without OpenSSL
(`-t l1` answers "To use a TLS transport you must compile SIPp with
OpenSSL"), so each sipp phone speaks TCP to its own TLS stack: `PhoneTls`,
Python's ssl (OpenSSL) as a phone's TLS client, which checks the edge's
certificate against the site CA and the address, as a provisioned phone does.
The edge sees a real TLS connection per phone; sipp's own Via and Contact say
TCP, which the edge does not rely on (it routes by the flow a request came on).
"""

import asyncio
import contextlib
import re
import ssl
import subprocess
from pathlib import Path

import pytest
from agent_process import AgentProcess
from cryptography import x509
from cryptography.x509.oid import NameOID
from peers import DOMAIN, Kamailio, free_port, make_certificate, phone, tool
from phoneprov.pki import ServerIdentity, ensure_site_pki
from test_edge_relay import registered
from test_local_mode import ended
from vaxelbox.edge.service import Edge, EdgeSettings, phone_tls_context

CLOUD_HOST = "127.0.0.3"


@pytest.fixture
def kamailio(tmp_path):
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio").start()
    yield cloud
    cloud.stop()


@pytest.fixture
def site_pki(tmp_path) -> ServerIdentity:
    return ensure_site_pki(tmp_path / "pki", "127.0.0.1")


@pytest.fixture
async def edge(kamailio, site_pki):
    cloud = f"sip:{kamailio.address}:{kamailio.port};transport=tcp"
    settings = EdgeSettings(
        lan=("127.0.0.1", 0),
        wan=("127.0.0.2", 0),
        proxies=[cloud],
        lan_tls=phone_tls_context(site_pki.certificate, site_pki.key),
        lan_tls_port=free_port("127.0.0.1"),
    )
    edge = Edge(settings)
    await edge.start()
    yield edge
    await edge.stop()


class PhoneTls:
    """One phone's TLS client: accepts sipp's TCP connection on `address` and carries it over TLS
    to the edge, checking the edge's certificate against `ca` (PEM) for the IP address it dials."""

    def __init__(self, edge: tuple[str, int], ca: Path) -> None:
        self.edge = edge
        self.context = ssl.create_default_context(cafile=str(ca))
        self.server: asyncio.Server | None = None
        self.address = ("127.0.0.1", 0)
        self.handshakes = 0

    async def __aenter__(self) -> "PhoneTls":
        self.server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _carry(self, sipp_in: asyncio.StreamReader, sipp_out: asyncio.StreamWriter) -> None:
        host, port = self.edge
        edge_in, edge_out = await asyncio.open_connection(host, port, ssl=self.context, server_hostname=host)
        self.handshakes += 1
        await asyncio.gather(_pipe(sipp_in, edge_out), _pipe(edge_in, sipp_out))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def s_client(address: tuple[str, int], *args: str) -> str:
    """`openssl s_client` to `address`, what it printed (stdout and stderr). In a thread: the edge
    shares this event loop and must answer the handshake."""
    result = await asyncio.to_thread(
        subprocess.run,
        [tool("openssl"), "s_client", "-connect", f"{address[0]}:{address[1]}", "-showcerts", *args],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip
    return (result.stdout + result.stderr).decode(errors="replace")


def messages(phone_workdir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in phone_workdir.glob("*_messages.log"))


async def test_tls_phones_register_and_call_each_other_through_the_cloud(edge, site_pki, tmp_path):
    tls_address = edge.addresses.lan_tls
    assert tls_address is not None
    async with (
        PhoneTls(tls_address, site_pki.ca_certificate) as bo_tls,
        PhoneTls(tls_address, site_pki.ca_certificate) as anna_tls,
    ):
        bo = await phone(
            "register_wait.xml", bo_tls.address, "102", tmp_path, transport="t1",
            answers="answer.xml", hold=6,
        )  # fmt: skip
        await registered(edge, "102")
        anna = await phone(
            "register_call.xml", anna_tls.address, "101", tmp_path, callee="102", transport="t1"
        )
        await anna.finish()
        await ended(bo)  # registered, answered: not the rest of its 6 s hold
    assert (bo_tls.handshakes, anna_tls.handshakes) == (1, 1)  # one connection each, kept for the call
    bindings = {b.aor: b for b in edge.bindings.all()}
    assert {bindings[f"sip:{u}@{DOMAIN}"].transport for u in ("101", "102")} == {"tls"}
    # The call from the cloud reached Bo on his own TLS connection, and both phones were told to
    # send their in-dialog requests to our TLS port, naming TLS (RFC 3261 §16.6 step 4, RFC 5658).
    # Bo's sipp Contact names a port it does not listen on: only his flow could reach him.
    ours = f"@127.0.0.1:{tls_address[1]};transport=tls;lr"
    for workdir in (anna.workdir, bo.workdir):
        lan_side = re.findall(r"<sip:[^>]*@127\.0\.0\.1:[^>]*>", _record_routes(messages(workdir)))
        assert len(lan_side) >= 2, lan_side
        assert all(ours in uri for uri in lan_side), lan_side
    assert re.search(r"^INVITE sip:102@", messages(bo.workdir), re.MULTILINE)
    bye_route = re.search(r"^BYE .*?^Route: <([^>]*)>", messages(anna.workdir), re.MULTILINE | re.DOTALL)
    assert bye_route is not None
    assert bye_route[1].endswith(ours[1:]), bye_route[1]  # Anna's BYE went to our TLS port


def _record_routes(log: str) -> str:
    return "\n".join(re.findall(r"^Record-Route:.*$", log, re.MULTILINE | re.IGNORECASE))


async def test_a_phone_sees_the_chain_to_the_site_ca(edge, site_pki):
    address = edge.addresses.lan_tls
    assert address is not None
    trusted = await s_client(address, "-CAfile", str(site_pki.ca_certificate), "-verify_return_error")
    assert "Verify return code: 0 (ok)" in trusted, trusted
    ca = x509.load_pem_x509_certificate(site_pki.ca_certificate.read_bytes())
    (ca_name,) = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert f"i:O = Vaxelbox, CN = {ca_name.value}" in trusted, trusted  # issued by the site CA
    assert "s:CN = 127.0.0.1" in trusted
    assert "Acceptable client certificate CA names" not in trusted  # we ask for no client certificate
    # Without the site CA the chain ends at a CA nobody else trusts: a phone must be given it.
    untrusted = await s_client(address, "-CAfile", str(make_certificate(site_pki.key.parent, "elsewhere")))
    assert re.search(r"Verify return code: (19|20|21) ", untrusted), untrusted


async def test_old_tls_versions_are_refused(edge):
    address = edge.addresses.lan_tls
    assert address is not None
    refused = await s_client(address, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "Cipher is (NONE)" in refused or "no protocols available" in refused, refused


async def test_the_agent_presents_the_ca_that_provisioning_hands_to_phones(tmp_path):
    """The real agent: SIP over TLS on --lan-tls-port with a chain to the CA that phones fetch from
    the provisioning server's /ca.pem (curl, as a phone fetches it), not a second CA."""
    tls_port, http_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    agent = AgentProcess(
        tmp_path,
        "--data",
        str(tmp_path / "data"),
        "--lan-tls-port",
        str(tls_port),
        "--http-port",
        str(http_port),
    )
    try:
        agent.wait_notification("READY", "1", timeout=20)
        ca = tmp_path / "fetched-ca.pem"
        await asyncio.to_thread(
            subprocess.run,
            [tool("curl"), "-sf", "-A", "Yealink SIP-T54W 96.86.0.100", "-o", str(ca),
             f"http://127.0.0.1:{http_port}/ca.pem"],
            check=True, timeout=10,
        )  # fmt: skip
        seen = await s_client(("127.0.0.1", tls_port), "-CAfile", str(ca), "-verify_return_error")
        assert "Verify return code: 0 (ok)" in seen, seen
        assert f"sip lan tls 127.0.0.1:{tls_port}" in agent.output()
    finally:
        agent.stop()
