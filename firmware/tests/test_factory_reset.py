"""Factory reset: `vaxelbox factory-reset` on a data directory, the real agent asked by it, and the
companion's button held past its long press (real MicroPython on a pty, as in test_companion_link.py;
the long press set to LONG_PRESS_S here, its 10 s proven on a simulated clock in mcu/scenarios.py)."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess
from test_companion_link import SimCompanion, simulated_companion, wait_for
from typer.testing import CliRunner
from vaxelbox.agent.factory_reset import REQUEST_NAME, take_request
from vaxelbox.agent.runtime import sole_agent
from vaxelbox.cli import app
from vaxelbox.site import demo_site_text
from vaxelbox.store import Store

LONG_PRESS_S = 3  # the simulated companion's long press (sim.mjs --long-press-ms); the red LED
# blinks from FEEDBACK_MS (2 s) and is steady from here, as from 10 s on a board
IDENTITY = {"mgmt/serial": "VXB-0000CAFE\n", "mgmt/pairing-code": "ABCD-EFGH-JKLM\n"}
STATE = (
    "mgmt/installers/lisa/secret",
    "mgmt/pairing-attempts",
    "pki/ca.pem",
    "firmware/bundle",
    "firmware/state.json",
    "templates/yealink/y000000000000.cfg",
)


def filled(data: Path) -> Path:
    """A data directory as an agent leaves it: a store (with its WAL), installers, PKI, firmware."""
    store = Store(data)
    store.sites.apply(demo_site_text(), "demo site")
    store.devices.open_enrolment(30)
    for relative, text in [*IDENTITY.items(), *((r, "state") for r in STATE)]:
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_text(text)
    store.close()
    (data / "vaxelbox.db-wal").write_bytes(b"")  # as a killed agent leaves them
    (data / "vaxelbox.db-shm").write_bytes(b"")
    return data


@pytest.fixture
def no_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAXELBOX_RUNTIME_DIR", str(tmp_path / "run"))  # no agent records here


def remaining(data: Path) -> set[str]:
    return {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()}


def test_refused_without_yes_when_nobody_can_confirm(tmp_path, no_agent):
    data = filled(tmp_path / "data")
    before = remaining(data)
    result = CliRunner().invoke(app, ["factory-reset", "--data", str(data)], env={"COLUMNS": "80"})
    assert result.exit_code == 1, result.output
    assert "not confirmed" in result.output
    assert "--yes" in result.output
    assert remaining(data) == before


def test_yes_wipes_the_state_and_keeps_the_boards_identity(tmp_path, no_agent):
    data = filled(tmp_path / "data")
    (data / "firmware-signing.pub").write_text("key")
    result = CliRunner().invoke(app, ["factory-reset", "--yes", "--data", str(data)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert remaining(data) == {"mgmt/serial", "mgmt/pairing-code", "firmware-signing.pub"}
    assert {r: (data / r).read_text() for r in IDENTITY} == IDENTITY
    audit = [json.loads(line) for line in result.stderr.splitlines() if '"audit"' in line]
    assert [(a["action"], a["result"], a["stage"]) for a in audit] == [("factory-reset", "ok", "wiped")]
    assert "vaxelbox.db" in audit[0]["removed"]
    assert "pki" in audit[0]["removed"]


def test_a_directory_an_agent_holds_is_not_wiped_under_it(tmp_path, no_agent):
    """An agent that started after the command looked for one, or that could not write its record:
    it holds the directory all the same (vaxelbox.agent.runtime.sole_agent), and nothing goes."""
    data = filled(tmp_path / "data")
    before = remaining(data)
    with sole_agent(data):
        result = CliRunner().invoke(
            app, ["factory-reset", "--yes", "--data", str(data)], env={"COLUMNS": "80"}
        )
    assert result.exit_code == 1, result.output
    assert f"not reset: {data} is in use by another agent" in " ".join(result.output.split())
    assert remaining(data) == before


def test_a_stale_request_is_removed_and_not_acted_on(tmp_path):
    (tmp_path / REQUEST_NAME).write_text(json.dumps({"by": "root", "at": time.time() - 3600}))
    assert take_request(tmp_path) is None
    assert not (tmp_path / REQUEST_NAME).exists()
    (tmp_path / REQUEST_NAME).write_text(json.dumps({"by": "root", "at": time.time()}))
    assert take_request(tmp_path) == "root"


def vaxelbox(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`vaxelbox` as a person runs it on the appliance, beside the test's agent."""
    env = {**os.environ, "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run"), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "vaxelbox", *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_running_agent_wipes_and_starts_as_a_fresh_box_with_its_site(tmp_path):
    data = tmp_path / "data"
    site = tmp_path / "office.yaml"
    site.write_text(demo_site_text())
    agent = AgentProcess(tmp_path, "--data", str(data), "--site", str(site))
    try:
        agent.wait_notification("READY", "1", timeout=30)
        serial, code = (data / "mgmt/serial").read_text(), (data / "mgmt/pairing-code").read_text()
        ca = (data / "pki/ca.pem").read_bytes()
        assert vaxelbox(tmp_path, "enrol", "open", "--data", str(data)).returncode == 0
        refused = vaxelbox(tmp_path, "factory-reset", "--data", str(data))
        assert refused.returncode == 1
        assert "--yes" in refused.stderr
        assert agent.process.poll() is None
        assert not agent.events("factory reset done")

        result = vaxelbox(tmp_path, "factory-reset", "--yes", "--data", str(data))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "started again as a fresh box" in result.stdout
        agent.wait_notification("READY", "1", timeout=30)  # the fresh agent, same process
        done = agent.wait_event("factory reset done")
        assert "vaxelbox.db" in done["removed"]
        assert "pki" in done["removed"]
        audits = [e for e in agent.events("audit") if e["action"] == "factory-reset"]
        assert [e["stage"] for e in audits] == ["requested", "wiped"]
        assert audits[0]["installer_name"].startswith("vaxelbox factory-reset (")
        assert len(agent.events("agent ready")) == 2
        store = Store(data)
        try:
            active = store.sites.active()
            assert active is not None
            assert active.number == 1
            assert store.devices.enrolment() is None  # the window opened before the reset is gone
        finally:
            store.close()
        assert (data / "mgmt/serial").read_text() == serial
        assert (data / "mgmt/pairing-code").read_text() == code
        assert (data / "pki/ca.pem").read_bytes() != ca  # a new site CA
        assert not (data / REQUEST_NAME).exists()
        assert agent.stop() == 0
    finally:
        agent.close()


@pytest.fixture
def companion(tmp_path: Path) -> Iterator[SimCompanion]:
    with simulated_companion(tmp_path, "--long-press-ms", str(LONG_PRESS_S * 1000)) as running:
        yield running


def test_the_companions_long_press_resets_the_appliance(tmp_path, companion: SimCompanion):
    agent = AgentProcess(tmp_path, "--board", str(tmp_path / "board.yaml"))
    data = tmp_path / "data"
    try:
        agent.wait_event("companion ok", timeout=30)
        serial = (data / "mgmt/serial").read_text()
        store = Store(data)
        store.devices.open_enrolment(30)
        store.close()
        companion.press(LONG_PRESS_S + 0.5)  # the long press: the request; red steady
        done = agent.wait_event("factory reset done", timeout=10)
        assert "vaxelbox.db" in done["removed"]
        audits = [e for e in agent.events("audit") if e["action"] == "factory-reset"]
        assert [(e["stage"], e["installer_name"]) for e in audits] == [
            ("requested", "button"),
            ("wiped", "button"),
        ]
        wait_for(lambda: len(agent.events("companion hello")) >= 2, 15, "the fresh agent never said hello")
        assert "1" in [level for _, level in companion.events("red")], "red never lit"
        wait_for(lambda: companion.level("red") == "0", 5, "red still lit after the fresh agent's hello")
        assert (data / "mgmt/serial").read_text() == serial
        store = Store(data)
        assert store.devices.enrolment() is None
        store.close()
        assert "0" not in [level for _, level in companion.events("power")], "the board was power-cycled"
        assert agent.stop() == 0
    finally:
        agent.close()
