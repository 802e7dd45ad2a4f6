"""`vaxelctl dhcp-hints`: per-vendor options, and snippets the real DHCP servers accept."""

import json
import re
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


def test_help_names_the_options_it_emits_and_says_43_is_in_the_notes():
    """The help said "(options 66, 160, 114, 43)", yet option 43 is never emitted (vendor-encoded:
    phoneprov.dhcp describes it in the notes instead)."""
    from typer.testing import CliRunner
    from vaxelctl.cli import app

    runner = CliRunner(env={"COLUMNS": "80"})
    result = runner.invoke(app, ["dhcp-hints", "--help"])
    assert result.exit_code == 0, result.output
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    promised = re.search(r"it emits options ([0-9, and]+);", said)
    assert promised, said
    assert (
        "option 43 is vendor-encoded, so it is not emitted, and the notes say where a vendor reads it" in said
    )
    rows = json.loads(runner.invoke(app, ["dhcp-hints", "192.0.2.1", "--json"]).output)
    emitted = {int(number) for row in rows for number in row["options"]}
    assert set(map(int, re.findall(r"\d+", promised[1]))) == emitted
    assert any("43" in row["notes"] for row in rows)
