"""Identification by evidence only, with the shipped vendor data (issue 14, part 1).

Each User-Agent below is a shape a current model sends (sources in each vendor's TOML); each
must name its own vendor and no other. File names alone never name a vendor.
"""

import pytest
from phoneprov.device import device_mac, is_device_mac
from phoneprov.identify import AssignedVendor, identify, parse_user_agent
from phoneprov.vendors import load_vendors

VENDORS = load_vendors()
NOBODY = AssignedVendor({})

# (User-Agent, vendor, model, MAC the User-Agent carries)
USER_AGENTS = [
    ("FileTransport PolyEdge-Edge_E450-UA/8.2.1.0321 Type/Application", "poly", "Edge_E450", None),
    ("FileTransport PolyEdge-Edge_E220-UA/8.1.0.2134 Type/Updater", "poly", "Edge_E220", None),
    ("FileTransport PolyCCX-CCX_500-UA/7.2.0.1234 Type/Application", "poly", "CCX_500", None),
    ("FileTransport PolycomVVX-VVX_450-UA/6.4.3.5156 Type/Application", "poly", "VVX_450", None),
    ("FileTransport PolycomVVX-VVX_410-UA/5.4.1.17597 Type/Updater", "poly", "VVX_410", None),
    (
        "FileTransport PolycomRealPresenceTrio-Trio_8800-UA/7.2.2.1094 Type/Application",
        "poly",
        "Trio_8800",
        None,
    ),
    ("Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37", "yealink", "T54W", "0015654aa937"),
    ("Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72", "yealink", "T31G", "805ec0d57d72"),
    ("Yealink SIP-T46U 108.86.0.20 00:15:65:00:00:01", "yealink", "T46U", "001565000001"),
    ("Yealink SIP VP-T49G 51.80.0.100 00:15:65:12:34:56", "yealink", "T49G", "001565123456"),
    ("Yealink W70B 146.85.0.40 80:5e:c0:aa:bb:01", "yealink", "W70B", "805ec0aabb01"),
    ("Yealink W80B 103.85.0.25 80:5e:c0:aa:bb:02", "yealink", "W80B", "805ec0aabb02"),
    ("Yealink W90DM 130.85.0.44 24:9a:d8:aa:bb:03", "yealink", "W90DM", "249ad8aabb03"),
    (
        "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413922D24 SIP/stack)",
        "snom",
        "D785",
        "000413922d24",
    ),
    (
        "Mozilla/4.0 (compatible; snom710-SIP 8.7.5.35 1.1.5-IFX-05.01.12 000413741767)",
        "snom",
        "710",
        "000413741767",
    ),
    ("Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)", "snom", "M900", "000413b60680"),
    ("Mozilla/4.0 (compatible; Snom M400 05.20.0001 000413c00001)", "snom", "M400", "000413c00001"),
    ("Mozilla/4.0 (compatible; snom M300 05.20.0001 000413c00002)", "snom", "M300", "000413c00002"),
    (
        "Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82865e6a",
        "grandstream",
        "GXP2170",
        "000b82865e6a",
    ),
    ("Grandstream Model HW GRP2614 SW 1.0.5.15 DevId c074ad0b63ee", "grandstream", "GRP2614", "c074ad0b63ee"),
    (
        "Grandstream Model HW HT801 V1.1A SW 1.0.17.5 DevId c074ad273a10",
        "grandstream",
        "HT801",
        "c074ad273a10",
    ),
    ("Fanvil X4U 2.10.2.6887 0c383e07e16c", "fanvil", "X4U", "0c383e07e16c"),
    ("Fanvil X6U Pro 0.0.10 0c383e2cd782", "fanvil", "X6U Pro", "0c383e2cd782"),
    ("Fanvil X5U-V2 2.12.16.17 0c383e557eb1", "fanvil", "X5U-V2", "0c383e557eb1"),
    ("Gigaset N870 IP PRO/83.V2.11.0+build.a546b3b;7C2F80E0D605", "gigaset", "N870 IP PRO", "7c2f80e0d605"),
    ("Gigaset N670 IP PRO/83.V2.39.0+build.2f2d7a1;589EC6123456", "gigaset", "N670 IP PRO", "589ec6123456"),
    ("Gigaset N720 DM PRO/70.108.00.000.000;7C2F80CA21E4", "gigaset", "N720 DM PRO", "7c2f80ca21e4"),
]

NOT_PHONES = [
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
    "python-requests/2.32.3",
    "Wget/1.21.4",
    "",
]


@pytest.mark.parametrize(("user_agent", "vendor", "model", "mac"), USER_AGENTS, ids=lambda v: str(v)[:40])
def test_each_current_user_agent_names_its_vendor_and_no_other(user_agent, vendor, model, mac):
    info = parse_user_agent(user_agent, VENDORS)
    assert info is not None
    assert (info.vendor, info.model, info.mac) == (vendor, model, mac)
    claimed = [v.id for v in VENDORS.values() if any(p.search(user_agent) for p in v.user_agents)]
    assert claimed == [vendor]


@pytest.mark.parametrize("user_agent", NOT_PHONES)
def test_browsers_and_tools_name_no_vendor(user_agent):
    assert parse_user_agent(user_agent, VENDORS) is None


def test_poly_edge_e450_is_poly_and_gets_its_master_not_fanvils_file():
    """The issue's input: the Edge E450's real User-Agent asking for <mac>.cfg."""
    ua = "FileTransport PolyEdge-Edge_E450-UA/8.2.1.0321 Type/Application"
    found = identify(ua, "/482567e45001.cfg", VENDORS, NOBODY)
    assert (found.device.vendor, found.device.model, found.device.mac) == (
        "poly",
        "Edge_E450",
        "482567e45001",
    )
    assert found.rule is not None
    assert (found.rule.template, found.rule.kind) == ("master.cfg", "common")


@pytest.mark.parametrize(
    "path",
    ["a0b1c2d3e4f5.cfg", "a0b1c2d3e4f5.xml", "cfga0b1c2d3e4f5.xml", "snomD785.htm", "y000000000000.cfg"],
)
def test_a_file_name_alone_names_no_vendor(path):
    """No User-Agent of a known shape, no site entry, no OUI of a vendor that uses the name: a
    Fanvil's, Yealink's or anyone's naming is not evidence."""
    found = identify("Acme-Phone/2.0", path, VENDORS, NOBODY)
    assert found.device.vendor is None
    assert found.rule is None


def test_oui_counts_only_with_a_file_name_its_vendor_uses():
    assert identify("", "0015654aa937.cfg", VENDORS, NOBODY).evidence == "oui"  # Yealink OUI, Yealink name
    found = identify("", "cfg0015654aa937.xml", VENDORS, NOBODY)  # Yealink OUI, Grandstream's name
    assert (found.device.vendor, found.rule) == (None, None)
    assert found.device.mac == "0015654aa937"  # recorded as unknown, with this MAC


def test_the_sites_vendor_is_the_installers_word():
    assigned = AssignedVendor({"a0b1c2d3e4f5": "poly"})
    found = identify("", "a0b1c2d3e4f5-vaxelbox.cfg", VENDORS, assigned)
    assert (found.device.vendor, found.evidence, found.rule.kind) == ("poly", "site", "device")
    # ... but a recognised User-Agent outranks it (the service then refuses the mismatch)
    fanvil = identify("Fanvil X4U 2.10.2.6887 a0b1c2d3e4f5", "a0b1c2d3e4f5.cfg", VENDORS, assigned)
    assert (fanvil.device.vendor, fanvil.evidence) == ("fanvil", "user-agent")


@pytest.mark.parametrize(
    ("user_agent", "path"),
    [
        ("Fanvil X4U 2.10.2.6887 0c383e07e16c", "000000000000.cfg"),
        ("Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37", "010203040506.cfg"),
        ("Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37", "ffffffffffff.cfg"),
        ("Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82865e6a", "cfg000000000000.xml"),
        ("", "000000000000.cfg"),
    ],
)
def test_phantom_macs_in_file_names_are_no_device(user_agent, path):
    found = identify(user_agent, path, VENDORS, NOBODY)
    assert found.device.mac in (
        None,
        "0015654aa937",
        "0c383e07e16c",
        "000b82865e6a",
    )  # the UA's, never the name's
    assert found.file_mac is None
    assert found.rule is None or found.rule.kind == "common"


def test_phantom_mac_in_a_user_agent_is_no_device():
    info = parse_user_agent("Yealink SIP-T54W 96.86.0.100 00:00:00:00:00:00", VENDORS)
    assert info is not None
    assert info.mac is None


@pytest.mark.parametrize(
    ("mac", "device"),
    [
        ("000000000000", False),
        ("ffffffffffff", False),
        ("01005e000001", False),
        ("333300000001", False),
        ("0015654aa937", True),
        ("0c383e07e16c", True),
    ],
)
def test_device_macs(mac, device):
    assert is_device_mac(mac) is device
    assert (device_mac(mac) is not None) is device


def test_poly_master_without_mac_records_nothing():
    ua = "FileTransport PolyEdge-Edge_E450-UA/8.2.1.0321 Type/Application"
    found = identify(ua, "000000000000.cfg", VENDORS, NOBODY)
    assert found.device.mac is None
    assert found.rule is not None
