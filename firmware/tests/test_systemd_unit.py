"""The shipped systemd units are ones systemd accepts, start the agent the way the agent expects,
and hand an agent that keeps failing to `vaxelbox fw trial-failed` before an update trial's deadline."""

import shutil
import subprocess
import sys
from pathlib import Path

import typer
import vaxelbox.cli
from vaxelbox.hw.board import load_board

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNIT = SYSTEMD / "vaxelbox.service"
TRIAL_FAILED = SYSTEMD / "vaxelbox-trial-failed.service"
BOARDS = Path(__file__).resolve().parents[2] / "boards"


def test_systemd_analyze_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd package"
    # verify needs ExecStart's binary to exist; point it at this checkout's agent.
    agent = str(Path(sys.executable).with_name("vaxelbox"))
    units = [tmp_path / shipped.name for shipped in (UNIT, TRIAL_FAILED)]
    for shipped, unit in zip((UNIT, TRIAL_FAILED), units, strict=True):
        unit.write_text(shipped.read_text().replace("/opt/vaxelbox/bin/vaxelbox", agent))
    result = subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert ".service" not in result.stderr, result.stderr  # any warning names its unit


def test_unit_uses_flags_the_agent_has():
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    flags = [word for word in exec_start.split() if word.startswith("--")]
    params = {p.opts[0] for p in vaxelbox.cli.typer.main.get_command(vaxelbox.cli.app).commands["run"].params}
    assert set(flags) <= params, set(flags) - params
    assert "Type=notify" in UNIT.read_text()


def settings(unit: Path) -> dict[str, str]:
    """`Key=value` lines of a unit file (each key once in ours)."""
    lines = [line for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_a_crash_loop_reaches_the_trial_failed_unit_before_the_deadline():
    """systemd gives up on an agent that fails at each start (OnFailure= runs only then, as the unit
    is restarted on failure): the start limit must be reached well before the real boards' update
    deadline, for an agent that dies even 5 s into each start, and the unit it hands over to ships."""
    agent = settings(UNIT)
    assert agent["Restart"] == "on-failure"
    assert agent["OnFailure"] == TRIAL_FAILED.name
    burst, interval = int(agent["StartLimitBurst"]), float(agent["StartLimitIntervalSec"])
    looping = (burst + 1) * (5 + float(agent["RestartSec"]))  # s until the start that is refused
    deadlines = [
        load_board(BOARDS / f"{name}.yaml").update.health_deadline for name in ("rpi-4b", "nanopi-r5s")
    ]
    assert looping <= interval
    assert looping < min(deadlines) / 2, (looping, deadlines)


def test_the_trial_failed_unit_runs_a_command_the_cli_has():
    """Its ExecStart is `vaxelbox fw trial-failed` with flags that command takes, once (oneshot)."""
    unit = settings(TRIAL_FAILED)
    assert unit["Type"] == "oneshot"
    words = unit["ExecStart"].split()
    assert words[:3] == ["/opt/vaxelbox/bin/vaxelbox", "fw", "trial-failed"]
    group = typer.main.get_command(vaxelbox.cli.app).commands["fw"]
    command = group.commands["trial-failed"]  # type: ignore[attr-defined]
    params = {opt for p in command.params for opt in p.opts}
    assert {w for w in words if w.startswith("--")} <= params


def test_outside_a_trial_the_agent_is_started_again_a_minute_later_for_ever():
    """After the start limit the agent is not left stopped (a passing fault heals) and the board is
    not rebooted: the failed state is reset and a one-minute timer starts the agent again."""
    posts = [
        line.split("=", 1)[1]
        for line in TRIAL_FAILED.read_text().splitlines()
        if line.startswith("ExecStartPost=")
    ]
    assert posts[0] == "/usr/bin/systemctl reset-failed vaxelbox.service"
    words = posts[1].split()
    assert words[0] == "/usr/bin/systemd-run"
    assert "--on-active=60" in words
    assert words[-3:] == ["/usr/bin/systemctl", "start", UNIT.name]
