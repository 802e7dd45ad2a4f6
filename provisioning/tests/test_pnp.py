"""SIP PnP: the responder answers each vendor's SUBSCRIBE shape, stays silent for strangers.

The sans-I/O responder is driven directly; test_pnp_netns.py runs it for real
on multicast inside network namespaces.
"""

import pytest
from phoneprov.pnp import PnpResponder
from phoneprov.vendors import load_vendors
from vaxelbox.sip.message import Request, Response, parse_message

BASE = "https://192.0.2.1"
PHONE = ("192.0.2.50", 40123)
PNP_VENDORS = [v for v in load_vendors().values() if v.pnp]


def subscribe(mac_user: str, vendor: str, model: str = "X1", port: int = 40123, extra: str = "") -> bytes:
    return (
        f"SUBSCRIBE sip:{mac_user}@224.0.1.75 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.50:{port};branch=z9hG4bK1234;rport\r\n"
        f"From: <sip:{mac_user}@224.0.1.75>;tag=abc\r\n"
        f"To: <sip:{mac_user}@224.0.1.75>\r\n"
        f"Call-ID: pnp-{mac_user}-{vendor}\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:192.0.2.50:{port}>\r\n"
        "Max-Forwards: 70\r\n"
        f'Event: ua-profile;profile-type="device";vendor="{vendor}";model="{model}";version="1.0"\r\n'
        f"{extra}"
        "Expires: 0\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def responder(admitted=("0015654aa937",)) -> PnpResponder:
    return PnpResponder(load_vendors(), lambda mac: mac in admitted, BASE, ("192.0.2.1", 5070))


def test_some_vendors_speak_pnp():
    assert {"yealink", "snom"} <= {v.id for v in PNP_VENDORS}


@pytest.mark.parametrize("vendor", PNP_VENDORS, ids=lambda v: v.id)
@pytest.mark.parametrize("form", ["MAC%3a", "MAC%3A", "MAC"])
def test_each_vendor_and_uri_form_gets_200_then_notify_with_url(vendor, form):
    mac = "0015654aa937"
    event_vendor = vendor.pnp.event_vendors[0]
    out = responder().on_datagram(subscribe(form + mac, event_vendor, "T54W"), PHONE, 0.0)
    assert len(out) == 2
    ok, notify = (parse_message(d.data) for d in out)
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.to.tag
    assert out[0].to == PHONE  # rport: back to the source port
    assert isinstance(notify, Request)
    assert notify.method == "NOTIFY"
    assert out[1].to == ("192.0.2.50", 40123)
    assert notify.get("Content-Type") == "application/url"
    assert notify.get("Event") == "ua-profile"
    assert notify.call_id == ok.call_id
    assert notify.from_.tag == ok.to.tag
    expected = vendor.pnp.url.format(base=BASE, mac=mac, model="T54W")
    assert notify.body.decode() == expected
    assert expected.startswith(BASE)


def test_strangers_get_silence():
    r = responder()
    assert r.on_datagram(subscribe("MAC%3a001565000001", "Yealink"), PHONE, 0.0) == []  # not ours
    assert r.on_datagram(subscribe("MAC%3a0015654aa937", "Acme"), PHONE, 0.0) == []  # unknown vendor
    assert (
        r.on_datagram(
            subscribe("MAC%3a0015654aa937", "Yealink").replace(b"ua-profile", b"presence"), PHONE, 0
        )
        == []
    )
    assert r.on_datagram(b"garbage\r\n\r\n", PHONE, 0.0) == []
    assert (
        r.on_datagram(subscribe("MAC%3a0015654aa937", "Yealink").replace(b"Via:", b"Vja:"), PHONE, 0.0) == []
    )


def test_retransmission_repeats_the_200_but_not_the_notify_and_rate_limit_holds():
    r = responder()
    first = r.on_datagram(subscribe("MAC%3a0015654aa937", "Yealink"), PHONE, 0.0)
    again = r.on_datagram(subscribe("MAC%3a0015654aa937", "Yealink"), PHONE, 0.5)
    assert len(first) == 2
    assert [d.data for d in again] == [first[0].data]
    answered = 0
    for i in range(30):
        shape = subscribe("MAC%3a0015654aa937", "Yealink").replace(b"Call-ID: pnp", f"Call-ID: {i}".encode())
        answered += bool(r.on_datagram(shape, PHONE, 1.0 + i / 100))
    assert answered < 12
