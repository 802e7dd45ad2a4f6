"""`vaxelctl dhcp-hints`: per-vendor options, and snippets the real DHCP servers accept."""

import json
import subprocess

from test_vaxelctl import vaxelctl


def test_json_lists_every_vendor_with_urls_on_the_appliance():
    result = vaxelctl("dhcp-hints", "192.0.2.1", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["vendor"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"yealink", "snom", "poly", "grandstream", "gigaset", "fanvil"}
    for vendor, row in rows.items():
        assert row["options"], f"{vendor}: no DHCP option at all"
        for value in row["options"].values():
            assert "192.0.2.1" in value
    assert "160" in rows["poly"]["options"]


def test_dnsmasq_accepts_its_snippet(tmp_path):
    result = vaxelctl("dhcp-hints", "192.0.2.1", "--format", "dnsmasq")
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "vaxelbox.conf"
    conf.write_text(result.stdout)
    check = subprocess.run(
        ["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert "syntax check OK" in check.stderr


def test_isc_dhcpd_accepts_its_snippet(tmp_path):
    result = vaxelctl("dhcp-hints", "192.0.2.1", "--http-port", "8080", "--format", "isc")
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "dhcpd.conf"
    conf.write_text(
        result.stdout + "subnet 192.0.2.0 netmask 255.255.255.0 { range 192.0.2.100 192.0.2.200; }\n"
    )
    check = subprocess.run(
        ["dhcpd", "-t", "-4", "-cf", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert "http://192.0.2.1:8080" in result.stdout


def test_bad_address_is_refused_plainly():
    result = vaxelctl("dhcp-hints", "office-router")
    assert result.returncode == 2
    assert "is not an IP address" in result.stderr
