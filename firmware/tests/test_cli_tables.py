"""`vaxelbox`'s tables on an 80-column terminal: a MAC or a user is never cut or folded; and a
group's options reach its subcommands.

The CLI runs as a subprocess with COLUMNS set, as in an installer's terminal;
the devices it lists are in a real store, recorded as provisioning records them.
"""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phoneprov.book import Sighting
from rich.cells import cell_len
from rich.console import Console
from vaxelbox.site import demo_site_text
from vaxelbox.site.holidays import swedish_holidays
from vaxelbox.store import Store
from vaxelbox.tables import WHOLE_TOKEN, print_table

# (bare MAC, vendor, model, firmware): the demo site's six devices and one nobody assigned yet
DEVICES = [
    ("0015654aa937", "yealink", "T54W", "96.86.0.100"),
    ("000413922d24", "snom", "D785", "10.1.33.33"),
    ("64167f123456", "poly", "VVX 450", "6.4.3.5156"),
    ("000b82865e6a", "grandstream", "GXP2170", "1.0.11.85"),
    ("0c383e07e16c", "fanvil", "X4U", "2.10.2.6887"),
    ("7c2f80e0d605", "gigaset", "N870 IP PRO", "83.V2.11.0+build.a546b3b"),
    ("805ec0aabbcc", "yealink", "SIP-T46U", "108.86.0.20"),
]
USERS = ["anna", "bjorn", "cecilia", "david", "elin", "fredrik"]


def vaxelbox(*args: str, columns: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "vaxelbox", *args], capture_output=True, text=True, timeout=60, env=env
    )


def colon(mac: str) -> str:
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


def tokens(output: str) -> set[str]:
    """Every run of characters between spaces, table borders and commas."""
    return set(re.findall(r"[^\s│┃,]+", output))


def assert_fits(output: str, columns: int) -> None:
    """Nothing is cut (…) and no table line is wider than the terminal (which would fold it again);
    a sentence after the table may be, the terminal wraps it."""
    assert "…" not in output, output
    table = output.split("\nAssign one with:")[0]
    widest = max(cell_len(line) for line in table.splitlines())
    assert widest <= columns, f"a line of {widest} cells on a {columns}-column terminal:\n{output}"


@pytest.fixture
def office(tmp_path: Path) -> Path:
    """A data directory: the demo site active, every device seen by provisioning."""
    store = Store(tmp_path / "data")
    store.sites.apply(demo_site_text(), "demo site")
    for n, (mac, vendor, model, firmware) in enumerate(DEVICES):
        ua = f"{vendor} {model} {firmware}"
        seen = Sighting(mac, vendor, model, firmware, f"192.168.100.{150 + n}", ua, f"{mac}.cfg", time.time())
        store.devices.record(seen)
    return tmp_path / "data"


@pytest.mark.parametrize("columns", [80, 40])
def test_phones_keeps_every_mac_and_user_whole(office, columns):
    result = vaxelbox("phones", "--data", str(office), columns=columns)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, columns)
    lines = result.stdout.splitlines()
    for mac, *_ in DEVICES:
        assert any(colon(mac) in line for line in lines), f"{colon(mac)} is broken:\n{result.stdout}"
    words = set(re.findall(r"[\w:]+", result.stdout))
    for user in USERS:  # every demo user is on some device's line or handset
        assert user in words, f"{user} is broken:\n{result.stdout}"


def test_phones_at_80_columns_never_breaks_a_header_ip_vendor_model_firmware_or_date(office):
    """The reviewer's reproduction: "yeali/nk", "T54/W", "127.0/.0.1", headers split mid-word.

    Every header word and every word of a vendor, model, firmware, IP and last-seen time is on one
    line, whichever layout (table or records) the width allows."""
    result = vaxelbox("phones", "--data", str(office), columns=80)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, 80)
    shown = tokens(result.stdout)
    header = {"mac", "vendor", "model", "firmware", "ip", "assigned", "enrolled", "last", "seen"}
    assert header <= shown, result.stdout
    rows = json.loads(vaxelbox("phones", "--data", str(office), "--json", columns=80).stdout)
    assert len(rows) == len(DEVICES)
    for row in rows:
        expected = {*row["vendor"].split(), *row["model"].split(), row["firmware"], row["ip"]}
        expected |= set(row["last_seen"].split("T"))  # shown as "date time"
        assert expected <= shown, (expected - shown, result.stdout)


def test_phones_assigned_to_many_users_breaks_only_between_users(office):
    handsets = ["anna", "bjorn", "cecilia", "david", "elin", "fredrik"]
    assign = vaxelbox(
        "phones", "assign", "--dect", "7c:2f:80:e0:d6:05", *handsets, "--data", str(office), columns=80
    )
    assert assign.returncode == 0, assign.stderr
    result = vaxelbox("phones", "--data", str(office), columns=80)
    assert_fits(result.stdout, 80)
    words = set(re.findall(r"[\w:]+", result.stdout))
    assert set(handsets) <= words, result.stdout
    assert "7c:2f:80:e0:d6:05" in result.stdout


def test_the_phones_groups_data_option_reaches_assign(office, tmp_path):
    """`vaxelbox phones --data D assign ...` changes D's site, not the default data directory's."""
    home = tmp_path / "home"  # where the default data directory would be: kept empty
    env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    args = ["phones", "--data", str(office), "assign", "80:5e:c0:aa:bb:cc", "fredrik"]
    result = vaxelbox(*args, columns=80, env=env)
    assert result.returncode == 0, result.stderr
    assert Store(office).sites.active().origin == "assign 80:5e:c0:aa:bb:cc to fredrik"
    assert not home.exists()


@pytest.mark.parametrize("columns", [80, 40])
def test_holidays_are_never_cut(columns):
    result = vaxelbox("holidays", "2027", columns=columns)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, columns)
    for day in swedish_holidays(2027):
        assert day.day.isoformat() in result.stdout


MAC = st.builds(lambda b: ":".join(f"{x:02x}" for x in b), st.binary(min_size=6, max_size=6))
WORD = st.text("abcdefghijklmnopqrstuvwxyzåäö0123456789.-", min_size=1, max_size=12)
LONG = st.text("abcdef0123456789:;<>=@.-", min_size=WHOLE_TOKEN + 1, max_size=90)  # a SIP contact
FREE = st.lists(WORD | LONG, min_size=0, max_size=6).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(min_value=30, max_value=160),
    rows=st.lists(st.tuples(MAC, st.lists(WORD, min_size=1, max_size=4), FREE, FREE, FREE), max_size=6),
)
def test_any_table_keeps_whole_and_words_columns_unbroken(width, rows):
    """At any width: no line wider than the terminal, nothing cut, MACs whole, users' words whole,
    every header word and every short word of free text whole (only a longer word may fold)."""
    cells = [[mac, ", ".join(users), a, b, c] for mac, users, a, b, c in rows]
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, soft_wrap=True)
    columns = ["mac", "users", "model", "firmware", "last seen"]
    print_table(console, "Devices", columns, cells, whole={"mac"}, words={"users"})
    output = buffer.getvalue()
    assert_fits(output, width)
    found = tokens(output)
    if rows:
        assert {"mac", "users", "model", "firmware", "last", "seen"} <= found, output
    for mac, users, *free in rows:
        assert mac in found, output
        assert set(users) <= found, output
        short = {word for text in free for word in text.split() if len(word) <= WHOLE_TOKEN}
        assert short <= found, (short - found, output)
