"""Board files: every shipped board loads, bad ones are refused with the field, the agent reads them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from vaxelbox.agent.options import OptionsError, RunOptions, parse_host_port
from vaxelbox.hw.board import BoardError, load_board

BOARDS = Path(__file__).resolve().parents[2] / "boards"


@pytest.mark.parametrize("name", ["rpi-4b", "rpi-cm4-dual-nic", "nanopi-r5s", "simboard"])
def test_shipped_board_loads(name):
    board = load_board(BOARDS / f"{name}.yaml")
    assert board.name == name
    assert board.interfaces.lan
    assert board.console.baud > 0


def test_nanopi_console_runs_at_1500000_baud():
    assert load_board(BOARDS / "nanopi-r5s.yaml").console.baud == 1_500_000


def test_bad_board_names_the_field(tmp_path):
    text = (BOARDS / "rpi-4b.yaml").read_text().replace("  lan: eth0\n", "  lan: eth0 with spaces\n")
    text = text.replace("kind: gpio", "kind: gpoi")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(BoardError) as caught:
        load_board(tmp_path / "bad.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "interfaces.lan: String should match pattern '^[A-Za-z0-9_.@-]{1,15}$'",
        "button: Input tag 'gpoi' found using 'kind' does not match any of the expected tags: 'gpio', 'input'",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ninterfaces: [lan: eth0\n")
    with pytest.raises(BoardError) as caught:
        load_board(tmp_path / "bad.yaml")
    assert str(caught.value.problems[0]).startswith("line 3, column 1: YAML syntax:")


def test_agent_takes_lan_address_and_data_dir_from_the_board(tmp_path):
    # The loopback interface exists on every Linux machine, so a board naming it is real here.
    text = (
        (BOARDS / "rpi-4b.yaml").read_text().replace("lan: eth0", "lan: lo").replace("wan: eth1", "wan: lo")
    )
    text = text.replace("data_dir: /var/lib/vaxelbox", f"data_dir: {tmp_path}/data")
    (tmp_path / "lo.yaml").write_text(text)
    options = RunOptions.resolve(board_file=tmp_path / "lo.yaml")
    assert str(options.lan) == "127.0.0.1:5060"
    assert str(options.wan) == "127.0.0.1:5062"  # the cloud's side: another port on a one-armed board
    assert options.data_dir == tmp_path / "data"


def test_flags_override_the_board(tmp_path):
    options = RunOptions.resolve(
        board_file=BOARDS / "simboard.yaml",
        data_dir=tmp_path,
        lan="[::1]:5070",
        wan="[::1]:5072",
        cloud="sip:192.0.2.10",
    )
    assert (str(options.lan), str(options.wan)) == ("[::1]:5070", "[::1]:5072")
    assert (options.data_dir, options.cloud_override) == (tmp_path, "sip:192.0.2.10")


def test_missing_board_interface_is_a_clear_error():
    with pytest.raises(OptionsError, match="LAN interface 'lan0' does not exist here"):
        RunOptions.resolve(board_file=BOARDS / "simboard.yaml")


def on_loopback(tmp_path: Path) -> Path:
    """The simulated board with both its interfaces on `lo`."""
    text = (
        (BOARDS / "simboard.yaml").read_text().replace("lan: lan0", "lan: lo").replace("wan: wan0", "wan: lo")
    )
    (tmp_path / "lo.yaml").write_text(text)
    return tmp_path / "lo.yaml"


def test_the_board_interfaces_give_the_sip_addresses(tmp_path):
    options = RunOptions.resolve(board_file=on_loopback(tmp_path))
    assert (str(options.lan), str(options.wan)) == ("127.0.0.1:5060", "127.0.0.1:5062")


def test_a_board_interface_without_ipv4_is_a_clear_error(tmp_path):
    """In a fresh network namespace `lo` exists but is down, with no address yet."""
    if os.geteuid() != 0:
        raise AssertionError("network namespace tests need root (run make test as root)")
    name = f"vx-board-{os.getpid() % 100000}"
    probe = (
        "import sys; from vaxelbox.agent.options import OptionsError, RunOptions\n"
        "try: RunOptions.resolve(board_file=sys.argv[1])\n"
        "except OptionsError as e: print(e)\n"
    )
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", probe, str(on_loopback(tmp_path))],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    assert done.stdout.strip() == "board simboard: LAN interface 'lo' has no IPv4 address yet", done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:5080", "192.0.2.1:5080"),
        ("192.0.2.1", "192.0.2.1:5060"),
        ("[2001:db8::1]", "[2001:db8::1]:5060"),
    ],
)
def test_lan_address_forms(text, expected):
    assert str(parse_host_port(text)) == expected


@pytest.mark.parametrize("text", ["lan.example:5060", "192.0.2.1:0", "192.0.2.1:http"])
def test_bad_lan_address(text):
    with pytest.raises(OptionsError, match="--lan"):
        parse_host_port(text)
