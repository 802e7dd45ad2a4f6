"""What vaxelctl prints, as an installer (or a script) reads it: tables at 80 columns, --json on every
command, errors as JSON under --json, a group's -a reaching its subcommands, forgetting an appliance.

Real peers: the agent process on loopback (test_management.Appliance), phones seen through its
provisioning server by their real User-Agents, vaxelctl as a subprocess in an 80-column terminal.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from peers import free_port
from rich.cells import cell_len
from rich.console import Console
from test_management import Appliance, paired
from vaxelbox.tables import WHOLE_TOKEN
from vaxelctl import remote

# (bare MAC, User-Agent, file it asks for): phones and a DECT base as they introduce themselves
PHONES = [
    ("0015654aa937", "Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37", "0015654aa937.cfg"),
    ("000b82865e6a", "Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82865e6a", "cfg000b82865e6a.xml"),
    ("0c383e07e16c", "Fanvil X4U 2.10.2.6887 0c383e07e16c", "0c383e07e16c.cfg"),
    ("7c2f80e0d605", "Gigaset N870 IP PRO/83.V2.11.0+build.a546b3b;7C2F80E0D605", "7C2F80E0D605.xml"),
    ("805ec0112233", "Yealink SIP-T46U 108.86.0.20 80:5e:c0:11:22:33", "805ec0112233.cfg"),
]


def vaxelctl(
    config: Path, *args: str, stdin: str = "", columns: int = 80
) -> subprocess.CompletedProcess[str]:
    code = "from vaxelctl.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": str(columns)},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def colon(mac: str) -> str:
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


def assert_fits(output: str, columns: int = 80) -> None:
    """Nothing cut (…), no line wider than the terminal (the terminal would fold it again)."""
    assert "…" not in output, output
    widest = max((cell_len(line) for line in output.splitlines()), default=0)
    assert widest <= columns, f"a line of {widest} cells on a {columns}-column terminal:\n{output}"


def tokens(output: str) -> set[str]:
    """Every run of characters between spaces, table borders and commas."""
    return set(re.findall(r"[^\s│┃,()]+", output))


PHONE_COLUMNS = ["mac", "vendor", "model", "firmware", "ip", "assigned", "enrolled", "last_seen"]


def assert_short_tokens_whole(output: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Every header word, and every word of a cell up to WHOLE_TOKEN cells (an address, an IP, a
    vendor, a model, a version, a number, a time's date part), is on one line: none is broken."""
    shown = tokens(output)
    header = {word for column in columns for word in column.split("_")}
    assert header <= shown, (header - shown, output)
    for row in rows:
        words = {word for column in columns for word in tokens(remote._cell(row[column]))}
        short = {word for word in words if cell_len(word) <= WHOLE_TOKEN}
        assert short <= shown, (short - shown, output)


def assert_json_error(result: subprocess.CompletedProcess[str], exit_code: int, words: str) -> None:
    """The human line on stderr, the same line as JSON on stdout, the same exit code."""
    assert result.returncode == exit_code, result.stderr + result.stdout
    assert words in result.stderr
    error = json.loads(result.stdout)
    assert error == {"error": error["error"], "exit_code": exit_code}
    assert words in error["error"]


@pytest.fixture
def appliance(tmp_path):
    http = free_port("127.0.0.1")
    running = Appliance(tmp_path, "--http-port", str(http))
    for _mac, user_agent, file in PHONES:  # each phone asks once: the appliance has seen it
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/{file}", headers={"User-Agent": user_agent}
        )
        with contextlib.suppress(urllib.error.HTTPError):  # a refused file counts too: it was seen
            urllib.request.urlopen(request, timeout=10).close()
    yield running
    running.stop()


@pytest.fixture
def laptop(appliance, tmp_path):
    return paired(tmp_path / "laptop", appliance, "Lisa")


def test_tables_at_80_columns_keep_macs_users_and_names_whole(appliance, laptop, tmp_path):
    ok(vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    long_name = "Lisa Lindqvist-Åkesson@installer-laptop-reception"
    ok(
        vaxelctl(
            tmp_path / "other", "pair", appliance.address, "--code", appliance.code(), "--name", long_name
        )
    )

    phones = ok(vaxelctl(laptop, "phones"))
    assert_fits(phones)
    seen = json.loads(ok(vaxelctl(laptop, "phones", "--json")))
    assert {row["mac"] for row in seen} == {colon(mac) for mac, *_ in PHONES}
    for row in seen:  # each MAC on one line, each user whole
        assert any(row["mac"] in line for line in phones.splitlines()), phones
        assert set((row["assigned"] or "-").split(", ")) <= tokens(phones), phones
    assert_short_tokens_whole(phones, PHONE_COLUMNS, seen)  # was "yeali/nk", "T54/W", "127.0/.0.1"

    versions = ok(vaxelctl(laptop, "site", "versions"))
    assert_fits(versions)
    assert "80:5e:c0:11:22:33" in tokens(versions), versions  # in "assign 80:5e:c0:11:22:33 to fredrik"

    installers = ok(vaxelctl(laptop, "installers"))
    assert_fits(installers)
    assert any(long_name in line for line in installers.splitlines()), installers
    for row in json.loads(ok(vaxelctl(laptop, "installers", "--json"))):
        assert row["id"] in tokens(installers)

    assert ok(vaxelctl(laptop, "registrations")) == "registrations: none\n"


def test_dhcp_hints_table_fits_80_columns_and_json_is_the_same_as_format_json(tmp_path):
    shown = ok(vaxelctl(tmp_path, "dhcp-hints", "192.0.2.1"))
    assert_fits(shown)
    assert "http://192.0.2.1/" in tokens(shown)
    header = {"vendor", "option", "60", "starts", "with", "options", "notes"}  # was "option 60 st"
    assert header <= tokens(shown), shown
    as_json = json.loads(ok(vaxelctl(tmp_path, "dhcp-hints", "192.0.2.1", "--json")))
    assert as_json == json.loads(ok(vaxelctl(tmp_path, "dhcp-hints", "192.0.2.1", "--format", "json")))
    refused = vaxelctl(tmp_path, "dhcp-hints", "office-router", "--json")
    assert_json_error(refused, 2, "is not an IP address")


@pytest.mark.parametrize(
    ("title", "rows", "whole"),
    [
        (
            "Appliances",
            [
                {
                    "serial": "VXB-6F855CB8",
                    "address": "fe80::1c2b:3aff:fe4d:5e6f",
                    "port": 5683,
                    "model": "Vaxelbox CM4 dual-NIC carrier board",
                    "firmware": "0.1.0+build.20261122.a546b3b",
                }
            ],
            ["serial", "address"],
        ),
        (
            "registrations",
            [
                {
                    "aor": "sip:demo-101@demo.vaxel.example.net",
                    "contact": "<sip:demo-101@192.168.100.150:5060;transport=tcp;ob>;+sip.instance="
                    '"<urn:uuid:00000000-0000-1000-8000-0015654aa937>"',
                    "transport": "tcp",
                    "remote": "192.168.100.150:40512",
                    "expires_in": 3587,
                    "user_agent": "Yealink SIP-T54W 96.86.0.100",
                }
            ],
            ["aor"],
        ),
    ],
)
def test_tables_without_a_peer_here_fit_80_columns(monkeypatch, title, rows, whole):
    """discover needs mDNS off loopback, registrations a phone registered through the edge: their
    rows as the appliance sends them, through the same table code."""
    buffer = io.StringIO()
    monkeypatch.setattr(remote, "out", Console(file=buffer, width=80, soft_wrap=True))
    remote.table(rows, list(rows[0]), title)
    assert_fits(buffer.getvalue())
    for column in whole:
        assert any(rows[0][column] in line for line in buffer.getvalue().splitlines()), buffer.getvalue()
    assert_short_tokens_whole(buffer.getvalue(), list(rows[0]), rows)


def test_registrations_at_80_columns_are_records_with_every_short_token_whole(monkeypatch):
    """The reviewer's reproduction: "tran/spor/t", "exp/ire/s in", "127./0.0./1:50/71", the contact
    over four lines. The rows as Management.registrations sends them for a phone registered through
    the edge on loopback; no table keeps all their words whole at 80 columns, so records."""
    rows = [
        {
            "aor": f"sip:{user}@demo.vaxel.example.net",
            "contact": f"<sip:{user}@127.0.0.1:{port};transport=udp;ob>;+sip.instance="
            f'"<urn:uuid:00000000-0000-1000-8000-{mac}>"',
            "transport": "udp",
            "remote": f"127.0.0.1:{port}",
            "expires_in": expires,
            "user_agent": agent,
        }
        for user, port, mac, expires, agent in [
            ("101", 5071, "0015654aa937", 3587, "Yealink SIP-T54W 96.86.0.100"),
            ("102", 50712, "000b82865e6a", 59, "Grandstream GXP2170 1.0.11.85"),
        ]
    ]
    buffer = io.StringIO()
    monkeypatch.setattr(remote, "out", Console(file=buffer, width=80, soft_wrap=True))
    remote.table(rows, list(rows[0]), "registrations (2)")
    output = buffer.getvalue()
    assert_fits(output)
    assert_short_tokens_whole(output, list(rows[0]), rows)
    lines = [line.split() for line in output.splitlines()]
    for row in rows:  # a record's `name  value` lines
        assert ["aor", row["aor"]] in lines, output
        assert ["remote", row["remote"]] in lines, output
        assert ["expires", "in", str(row["expires_in"])] in lines, output


def test_every_promised_command_takes_json(appliance, laptop, tmp_path):
    pulled = json.loads(ok(vaxelctl(laptop, "site", "pull", "--json")))
    assert pulled["version"] == 1
    assert pulled["source"].startswith("# vaxelbox-site: version 1,")
    site = tmp_path / "site.toml"
    written = json.loads(ok(vaxelctl(laptop, "site", "pull", "-o", str(site), "--json")))
    assert (written["path"], written["mode"], site.read_text()) == (str(site), "0600", pulled["source"])
    assert "source" not in written  # where the site went, not its SIP passwords

    same = json.loads(ok(vaxelctl(laptop, "site", "diff", str(site), "--json")))
    assert (same["changed"], same["diff"], same["version"]) == (False, "", 1)
    site.write_text(site.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    changed = vaxelctl(laptop, "site", "diff", str(site), "--json")
    assert changed.returncode == 1  # as without --json: something would change
    assert '+name = "Lisas byrå"' in json.loads(changed.stdout)["diff"]

    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    keys = json.loads(ok(vaxelctl(tmp_path, "fw", "keygen", str(private), str(public), "--json")))
    assert keys == {"private_key": str(private), "public_key": str(public), "replaced": False}
    image, bundle = tmp_path / "image.bin", tmp_path / "image.bundle"
    image.write_bytes(os.urandom(4096))
    args = ["fw", "pack", str(image), "--key", str(private), "--version", "2.0", "-o", str(bundle), "--json"]
    args += ["--board", "simboard"]
    packed = json.loads(ok(vaxelctl(tmp_path, *args)))
    assert packed["bundle"] == str(bundle)
    assert (packed["version"], packed["boards"]) == ("2.0", ["simboard"])
    assert (packed["size"], packed["sha256"]) == (
        bundle.stat().st_size,
        hashlib.sha256(bundle.read_bytes()).hexdigest(),
    )
    assert packed["image"] == {"size": 4096, "sha256": hashlib.sha256(image.read_bytes()).hexdigest()}

    state = json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))
    assert (state["state"], state["state_name"]) == (0, "idle")  # LwM2M numbers, names beside them
    assert (state["result"], state["result_name"]) == (0, "none")

    other = tmp_path / "other"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    olle = next(
        r["id"] for r in json.loads(ok(vaxelctl(laptop, "installers", "--json"))) if r["name"] == "Olle"
    )
    assert json.loads(ok(vaxelctl(laptop, "installers", "revoke", olle, "--json")))["revoked"] == olle


def test_errors_under_json_are_json_on_stdout_with_the_same_exit_code(appliance, laptop, tmp_path):
    assert_json_error(vaxelctl(tmp_path / "new-laptop", "status", "--json"), 4, "not paired")
    assert_json_error(
        vaxelctl(laptop, "installers", "revoke", "nobody", "--json"), 1, "no installer 'nobody'"
    )
    assert_json_error(vaxelctl(laptop, "phones", "assign", "not-a-mac", "fredrik", "--json"), 2, "not a MAC")
    assert_json_error(vaxelctl(laptop, "mode", "holiday", "--json"), 2, "auto or local")
    assert_json_error(vaxelctl(laptop, "phones", "assign", "--json"), 2, "Missing argument")
    human = vaxelctl(laptop, "installers", "revoke", "nobody")
    assert (human.returncode, human.stdout) == (1, "")  # without --json: stderr only, as before


def test_a_groups_appliance_option_reaches_its_subcommands(appliance, laptop):
    elsewhere = "127.0.0.2:5683"  # not paired: the command must go there, and so refuse
    refused = vaxelctl(laptop, "phones", "-a", elsewhere, "assign", "80:5e:c0:11:22:33", "fredrik")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"not paired with {elsewhere}" in refused.stderr
    assert json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_version"] == 1  # nothing changed
    for group, *command in (
        ["enrol", "status"],
        ["fw", "status"],
        ["site", "versions"],
        ["installers", "revoke", "x"],
    ):
        result = vaxelctl(laptop, group, "-a", elsewhere, *command)
        assert result.returncode == 4, (group, result.stderr)
    assigned = ok(
        vaxelctl(
            laptop, "phones", "-a", appliance.address, "--json", "assign", "80:5e:c0:11:22:33", "fredrik"
        )
    )
    assert json.loads(assigned)["site_version"] == 2  # the group's --json reached assign too
    window = json.loads(ok(vaxelctl(laptop, "enrol", "-a", appliance.address, "--json", "status")))
    assert window["open"] is False


def test_forget_removes_the_pairing_only_when_confirmed(appliance, laptop):
    directory = next((laptop / "appliances").iterdir())
    declined = vaxelctl(laptop, "forget", appliance.address, stdin="n\n")
    assert declined.returncode == 1
    assert "nothing forgotten" in declined.stderr
    assert directory.exists()
    gone = json.loads(ok(vaxelctl(laptop, "forget", directory.name, "--yes", "--json")))
    assert gone["forgotten"] == directory.name
    assert not directory.exists()
    assert_json_error(vaxelctl(laptop, "status", "--json"), 4, "not paired with any appliance")
    assert_json_error(vaxelctl(laptop, "forget", appliance.address, "--json"), 4, "nothing to forget")
    again = vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code())
    assert again.returncode == 0, again.stderr  # forgetting is not the end: pair again
    said = ok(vaxelctl(laptop, "forget", appliance.address, stdin="yes\n"))
    assert f"Forgot {directory.name}" in said


def test_data_with_brackets_is_printed_as_it_is(appliance, laptop, tmp_path):
    """An installer's name, an unknown user: brackets in data are text, not rich markup (which hid
    "[bold]" and crashed on "[/]"), in tables, in the log and in errors."""
    name = "Olle [bold]B[/] [/]"
    ok(vaxelctl(tmp_path / "other", "pair", appliance.address, "--code", appliance.code(), "--name", name))
    assert name in ok(vaxelctl(laptop, "installers"))
    assert f"installer_name={name}" in ok(vaxelctl(laptop, "log"))
    refused = vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "[/]")
    assert refused.returncode == 1
    assert "no user '[/]' in the site" in refused.stderr


def test_status_names_overload_only_once_it_has_refused_something():
    from vaxelctl.remote import _load_line

    quiet = {"overloaded": False, "transactions": 12, "transaction_ceiling": 26214,
             "refused_overload": 0, "refused_full": 0, "overload_episodes": 0}  # fmt: skip
    assert _load_line(quiet) is None
    assert _load_line(None) is None  # an older appliance
    busy = quiet | {"overloaded": True, "transactions": 840, "refused_overload": 1520, "overload_episodes": 2}
    assert _load_line(busy) == (
        "  SIP overloaded now: 1520 new requests refused with 503 since start (2 episodes); "
        "840 of 26214 transactions"
    )
    full = quiet | {"refused_full": 7, "transactions": 26214}
    assert "7 at the ceiling" in _load_line(full)
