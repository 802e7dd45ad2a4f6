"""`provisioning.phone_transport = "tls"`: every vendor's files send the phones to the appliance's
TLS port over TLS, and say how the phone trusts the site CA where the vendor can be told by file.

Setting names and value codes are the vendors' (provisioning/README.md, "SIP over TLS"); what is
checked here is that they land in the file each vendor reads, desk phones and DECT bases alike.
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from phoneprov.context import Appliance, Credentials, build_context
from phoneprov.device import Device
from phoneprov.render import Renderer
from phoneprov.vendors import load_vendors
from phones import DEMO_PHONES, DemoPhone
from vaxelbox.site import parse_site

APPLIANCE = Appliance("192.0.2.1", 5060, 80, 443, sip_tls_port=5061)
CREDENTIALS = Credentials("mac-user", "prov-credential-Zx9")
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBsiteCA\nAbCd==\n-----END CERTIFICATE-----\n"
DECT_BASES = [
    DemoPhone("yealink", "805ec0aabb01", "Yealink W70B 146.85.0.20", ("anna", "bjorn")),
    DemoPhone("snom", "000413b60680", "snom-m900/530", ("david", "elin")),
]
DECT_SITE = """
[[phones]]
mac = "80:5e:c0:aa:bb:01"
type = "dect"
vendor = "yealink"
model = "W70B"
handsets = ["anna", "bjorn"]

[[phones]]
mac = "00:04:13:b6:06:80"
type = "dect"
vendor = "snom"
model = "M900"
handsets = ["david", "elin"]
"""
# What puts each vendor's lines on TLS to the appliance's TLS port (regular expressions).
TLS_SETTINGS = {
    "yealink": [
        r"account\.1\.outbound_proxy\.1\.address = 192\.0\.2\.1\n",
        r"account\.1\.outbound_proxy\.1\.port = 5061\n",
        r"account\.1\.transport = 2\n",
        r"static\.security\.trust_certificates = 1\n",
        r"static\.trusted_certificates\.url = https://192\.0\.2\.1/ca\.pem\n",
    ],
    "snom": [r"<user_outbound idx=\"1\" perm=\"R\">192\.0\.2\.1:5061;transport=tls</user_outbound>"],
    "poly": [
        r'reg\.1\.outboundProxy\.address="192\.0\.2\.1"',
        r'reg\.1\.outboundProxy\.port="5061"',
        r'reg\.1\.outboundProxy\.transport="TLS"',
        r'sec\.TLS\.profileSelection\.SIP="PlatformProfile1"',
    ],
    "grandstream": [r"<P48>192\.0\.2\.1:5061</P48>", r"<P130>2</P130>"],
    "gigaset": [
        r'"SipProvider\.0\.OutboundProxyPort" value="5061"',
        r'"SipProvider\.0\.TransportProtocol" value="3"',
    ],
    "fanvil": [r"<ProxyPort>5061</ProxyPort>", r"<Transport>3</Transport>"],
}


@pytest.fixture
def tls_site(demo_text):
    text = demo_text.replace('srtp = "optional"', 'srtp = "optional"\nphone_transport = "tls"')
    assert text != demo_text
    return parse_site(text + DECT_SITE, "demo")


def device_file(site, phone: DemoPhone) -> str:
    """The phone's device file in full (with its secrets), as the service renders it."""
    vendor = load_vendors()[phone.vendor]
    assigned = site.phone(phone.mac)
    (path,) = phone.device_files()[:1]
    rule, match = vendor.rule_for(path)
    device = Device(phone.mac, phone.vendor, assigned.model, None)
    context = build_context(
        site, device, assigned, APPLIANCE, match.groupdict(), CREDENTIALS, assigned.type == "dect", CA_PEM
    )
    return Renderer().render(phone.vendor, rule, context)


@pytest.mark.parametrize("phone", DEMO_PHONES + DECT_BASES, ids=lambda p: f"{p.vendor}-{p.mac}")
def test_lines_reach_the_appliance_over_tls(tls_site, phone):
    text = device_file(tls_site, phone)
    for pattern in TLS_SETTINGS[phone.vendor]:
        assert re.search(pattern, text), f"{phone.vendor}: no {pattern!r} in\n{text}"
    assert "192.0.2.1:5060" not in text  # nothing left on the UDP/TCP port


def test_poly_is_given_the_site_ca_inline(tls_site):
    (poly,) = [p for p in DEMO_PHONES if p.vendor == "poly"]
    root = ET.fromstring(device_file(tls_site, poly).encode())
    (device,) = root.iter("device")
    assert device.get("device.sec.TLS.customCaCert1.set") == "1"
    assert device.get("device.sec.TLS.customCaCert1") == CA_PEM  # its line breaks survive XML


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_udp_sites_carry_no_tls_settings(demo_text, phone):
    text = device_file(parse_site(demo_text, "demo"), phone)
    tls_only = [p for p in TLS_SETTINGS[phone.vendor] if "address" not in p and "url" not in p]
    assert not [p for p in tls_only if re.search(p, text)]
    assert "customCaCert" not in text
    assert "trust_certificates" not in text


# How each vendor's file makes the phone trust the site CA (provisioning/README.md, "SIP over TLS"):
# by URL, inline, or not at all (then the README says how the installer installs it on the device).
CA_BODY = "MIIBsiteCAAbCd=="  # CA_PEM without its armour lines and line breaks


def yealink_trusts(text: str) -> bool:
    settings = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    return (
        settings.get("static.trusted_certificates.url") == "https://192.0.2.1/ca.pem"  # as the file came
        and settings.get("static.security.trust_certificates") == "1"
    )


def snom_trusts(text: str) -> bool:
    root = ET.fromstring(text.encode())
    return [(c.get("type"), c.text) for c in root.iter("certificate")] == [("base64", CA_BODY)]


def poly_trusts(text: str) -> bool:
    (device,) = ET.fromstring(text.encode()).iter("device")
    return device.get("device.sec.TLS.customCaCert1") == CA_PEM


CA_TRUST = {"yealink": yealink_trusts, "snom": snom_trusts, "poly": poly_trusts}
INSTALLED_OTHERWISE = ("grandstream", "gigaset", "fanvil")  # no verified file setting


def parses(vendor: str, text: str) -> None:
    """The file is what its vendor's parser reads: XML, or Yealink's `key = value` lines."""
    if vendor == "yealink":
        assert text.startswith("#!version:1.0.0.1"), text[:40]
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        assert all(" = " in line for line in lines), [line for line in lines if " = " not in line]
    else:
        ET.fromstring(text.encode())


@pytest.mark.parametrize("phone", DEMO_PHONES + DECT_BASES, ids=lambda p: f"{p.vendor}-{p.mac}")
def test_every_vendor_that_can_be_told_by_file_trusts_the_site_ca(tls_site, phone):
    text = device_file(tls_site, phone)
    parses(phone.vendor, text)
    if phone.vendor in INSTALLED_OTHERWISE:
        assert CA_BODY not in text.replace("\n", "")
        return
    assert CA_TRUST[phone.vendor](text), f"{phone.vendor}: the site CA is not trusted by\n{text}"


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_udp_sites_name_no_ca(demo_text, phone):
    text = device_file(parse_site(demo_text, "demo"), phone)
    parses(phone.vendor, text)
    assert phone.vendor not in CA_TRUST or not CA_TRUST[phone.vendor](text)


def test_vendors_without_a_file_setting_say_how_to_install_the_ca():
    """Each vendor whose file cannot carry the CA has its row in the README's TLS table saying where
    the installer puts it, and every row names the document its setting names rest on."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("How each vendor trusts the site CA:", 1)[1].split("\n\n", 2)[1]
    rows = {row.split("|")[1].strip().split()[0].lower(): row for row in table.splitlines()[2:]}
    assert set(rows) == {"yealink", "poly", "snom", "grandstream", "gigaset", "fanvil"}
    for vendor in INSTALLED_OTHERWISE:
        assert "web" in rows[vendor].lower(), rows[vendor]
    for vendor, row in rows.items():
        assert row.rstrip(" |").rsplit("|", 1)[1].strip(), f"{vendor}: no source named"
