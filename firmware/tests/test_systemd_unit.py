"""The shipped systemd unit is one systemd accepts, and starts the agent the way the agent expects."""

import shutil
import subprocess
import sys
from pathlib import Path

import vaxelbox.cli

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "vaxelbox.service"


def test_systemd_analyze_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd package"
    # verify needs ExecStart's binary to exist; point it at this checkout's agent.
    agent = str(Path(sys.executable).with_name("vaxelbox"))
    unit = tmp_path / "vaxelbox.service"
    unit.write_text(UNIT.read_text().replace("/opt/vaxelbox/bin/vaxelbox", agent))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "vaxelbox.service" not in result.stderr, result.stderr  # any warning names the unit


def test_unit_uses_flags_the_agent_has():
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    flags = [word for word in exec_start.split() if word.startswith("--")]
    params = {p.opts[0] for p in vaxelbox.cli.typer.main.get_command(vaxelbox.cli.app).commands["run"].params}
    assert set(flags) <= params, set(flags) - params
    assert "Type=notify" in UNIT.read_text()
