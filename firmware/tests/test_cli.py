"""The agent's own commands an installer or a newcomer uses: check files, print the demo, holidays."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vaxelbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaxelbox", *args], capture_output=True, text=True, timeout=60
    )


def test_demo_site_command_prints_a_valid_starting_point(tmp_path):
    printed = vaxelbox("demo-site").stdout
    (tmp_path / "site.toml").write_text(printed)
    result = vaxelbox("check-site", str(tmp_path / "site.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path}/site.toml: OK — Revisionsbyrån Demo AB")


def test_check_site_refuses_with_located_problems(tmp_path):
    (tmp_path / "site.toml").write_text(
        vaxelbox("demo-site").stdout.replace('mac = "00:0b:82:86:5e:6a"', 'mac = "01:0b:82:86:5e:6a"')
    )
    result = vaxelbox("check-site", str(tmp_path / "site.toml"))
    assert result.returncode == 1
    assert "phones[3].mac: '01:0b:82:86:5e:6a' is a multicast MAC address, not a device's" in result.stderr


def test_check_board():
    result = vaxelbox("check-board", str(REPO / "boards/simboard.yaml"))
    assert result.returncode == 0
    assert "LAN lan0, WAN wan0" in result.stdout


def test_holidays_command_lists_the_closed_days():
    result = vaxelbox("holidays", "2027")
    assert result.returncode == 0
    assert "2027-03-26" in result.stdout
    assert "Långfredagen" in result.stdout
    assert "2027-06-25" in result.stdout
    assert "Midsommarafton" in result.stdout


def test_unknown_schema_kind():
    result = vaxelbox("schema", "phone")
    assert result.returncode == 2
