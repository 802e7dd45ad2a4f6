"""A SIPS request is refused, never downgraded, when its next hop is not TLS (RFC 3261 §26.2.2,
RFC 5630), end to end: sipp phones through the edge to Kamailio (the cloud, over TCP).

Addresses as in test_phone_tls.py (phones and the LAN side on 127.0.0.1, the
WAN side on 127.0.0.2, Kamailio on 127.0.0.3); a TLS phone is sipp behind its
own TLS client (`PhoneTls`: Debian's sipp has no TLS). The refusal is 480 with
warn-code 380 "SIPS Not Allowed" (RFC 5630 §5.3), from the edge: without the
rule the phone's call would reach the cloud over TCP (which answers 404, nobody
being registered) and the cloud's call would reach a phone over TCP (which
answers it). Unit tests of the rule: test_sips_routing.py.
"""

import re

from peers import phone
from test_edge_relay import registered
from test_phone_tls import PhoneTls, edge, kamailio, messages, site_pki  # noqa: F401 (fixtures, as test_phone_tls has them)

WARNING = re.compile(r'^Warning: 380 (\S+) "SIPS Not Allowed"', re.MULTILINE)


async def test_a_tls_phones_sips_call_is_refused_when_the_cloud_is_reached_over_tcp(edge, site_pki, tmp_path):  # noqa: F811
    tls_address = edge.addresses.lan_tls
    assert tls_address is not None
    async with PhoneTls(tls_address, site_pki.ca_certificate) as anna_tls:
        anna = await phone(
            "register_call_480.xml", anna_tls.address, "101", tmp_path, callee="102", transport="t1",
            keys={"scheme": "sips"},
        )  # fmt: skip
        await anna.finish(timeout=15)
    assert anna_tls.handshakes == 1  # Anna's REGISTER and INVITE came over TLS
    log = messages(anna.workdir)
    assert re.search(r"^SIP/2.0 480 SIPS Not Allowed", log, re.MULTILINE), log[-2000:]
    warning = WARNING.search(log)
    assert warning is not None, log[-2000:]
    assert warning[1] == f"127.0.0.1:{tls_address[1]}"  # said by the edge, at the address Anna used
    assert "SIP/2.0 404" not in log  # the cloud never saw the INVITE (a bare "404" can be in a timestamp)


async def test_the_clouds_sips_request_is_refused_for_a_phone_on_tcp(edge, tmp_path):  # noqa: F811
    """Bo registers a SIPS Contact over plain TCP; the cloud, calling him, addresses that Contact:
    the edge does not carry it to Bo over TCP but answers 480 / 380, which the cloud relays."""
    bo = await phone(
        "register_sips_wait.xml", edge.addresses.lan, "102", tmp_path, transport="t1",
        answers="answer.xml", hold=8,
    )  # fmt: skip
    try:
        await registered(edge, "102")
        anna = await phone(
            "register_call_480.xml", edge.addresses.lan, "101", tmp_path, callee="102",
            keys={"scheme": "sip"},
        )  # fmt: skip
        await anna.finish(timeout=15)
    finally:
        if bo.process.returncode is None:
            bo.process.kill()
        await bo.process.wait()
    assert "INVITE sips:102" not in messages(bo.workdir)  # nothing reached Bo
    warning = WARNING.search(messages(anna.workdir))
    assert warning is not None, messages(anna.workdir)[-2000:]
    assert warning[1] == f"127.0.0.2:{edge.addresses.wan[1]}"  # said by the edge's WAN side
