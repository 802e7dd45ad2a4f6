"""The agent process end to end: start, reload on SIGHUP, refuse bad sites, stop cleanly."""

import signal
import subprocess

import pytest
from agent_process import AGENT_COMMAND, AgentProcess
from vaxelbox.site import demo_site
from vaxelbox.store import Store


@pytest.fixture
def agents():
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.close()


def start(agents, tmp_path, *args, env=None) -> AgentProcess:
    agent = AgentProcess(tmp_path, *args, env=env)
    agents.append(agent)
    return agent


def test_fresh_agent_runs_the_demo_site_and_stops_on_sigterm(agents, tmp_path):
    agent = start(agents, tmp_path, "--data", str(tmp_path / "data"))
    ready = agent.wait_notification("READY", "1")
    assert ready["STATUS"].startswith("site 'Revisionsbyrån Demo AB' version 1, cloud ")
    (announcement,) = agent.events("agent ready")
    lan, wan = announcement["lan"], announcement["wan"]
    listening = announcement["listening"]
    assert listening[0] == f"sip lan udp+tcp {lan}"
    assert listening[1].startswith(f"sip lan tls {lan.rsplit(':', 1)[0]}:")
    assert listening[2] == f"sip wan udp+tcp {wan}"
    assert [a.split()[:2] for a in announcement["listening"][3:]] == [
        ["provisioning", "http"],
        ["provisioning", "https"],
        ["management", "coap"],
        ["management", "coap+tcp"],
    ]
    assert agent.events("site active")[0]["origin"] == "demo site"
    assert agent.stop() == 0
    assert any(n.get("STOPPING") == "1" for n in agent.notifications)
    assert agent.events("agent stopped")


def test_sigint_stops_cleanly_too(agents, tmp_path):
    agent = start(agents, tmp_path, "--data", str(tmp_path / "data"))
    agent.wait_notification("READY", "1")
    agent.signal(signal.SIGINT)
    assert agent.process.wait(10) == 0


def test_sighup_applies_a_good_file_and_refuses_a_bad_one(agents, tmp_path, demo_with):
    site_file = tmp_path / "site.toml"
    site_file.write_text(demo_with('name = "Revisionsbyrån Demo AB"', 'name = "Kontor A"'))
    agent = start(agents, tmp_path, "--site", str(site_file), "--data", str(tmp_path / "data"))
    assert agent.wait_notification("READY", "1")["STATUS"].startswith("site 'Kontor A' version 1, cloud ")

    site_file.write_text(demo_with('members = ["anna", "bjorn"]', 'members = ["anna", "bjorn", "gustav"]'))
    agent.signal(signal.SIGHUP)
    agent.wait_notification("RELOADING", "1")
    assert agent.wait_notification("READY", "1")["STATUS"].startswith("site 'Kontor A' version 1, cloud ")
    refusals = [e["problem"] for e in agent.events("site refused")]
    assert refusals == ["groups[0].members[2]: unknown user 'gustav'"]
    assert agent.events("site file refused; the running site stays")[0]["running_version"] == 1

    site_file.write_text(demo_with('name = "Revisionsbyrån Demo AB"', 'name = "Kontor B"'))
    agent.signal(signal.SIGHUP)
    agent.wait_notification("RELOADING", "1")
    assert agent.wait_notification("READY", "1")["STATUS"].startswith("site 'Kontor B' version 2, cloud ")
    assert agent.stop() == 0

    store = Store(tmp_path / "data")
    assert store.sites.active().source == site_file.read_text()
    assert [v.number for v in store.sites.history()] == [2, 1]
    store.close()


def test_bad_site_at_first_start_is_refused_with_its_problems(agents, tmp_path, demo_with):
    site_file = tmp_path / "site.toml"
    site_file.write_text(demo_with('timezone = "Europe/Stockholm"', 'timezone = "Europe/Stokholm"'))
    agent = start(agents, tmp_path, "--site", str(site_file), "--data", str(tmp_path / "data"))
    assert agent.process.wait(10) == 2
    problems = [e["problem"] for e in agent.events("site refused")]
    assert problems == ["site.timezone: unknown time zone 'Europe/Stokholm' (e.g. Europe/Stockholm)"]
    assert any("no stored site to fall back to" in e["reason"] for e in agent.events("cannot start"))


def test_bad_site_after_a_reboot_keeps_the_stored_site_running(agents, tmp_path, demo_with):
    site_file = tmp_path / "site.toml"
    site_file.write_text(demo_with('name = "Revisionsbyrån Demo AB"', 'name = "Kontor A"'))
    first = start(agents, tmp_path, "--site", str(site_file), "--data", str(tmp_path / "data"))
    first.wait_notification("READY", "1")
    assert first.stop() == 0

    site_file.write_text("[site\nbroken")
    second = start(agents, tmp_path, "--site", str(site_file), "--data", str(tmp_path / "data"))
    assert second.wait_notification("READY", "1")["STATUS"].startswith("site 'Kontor A' version 1, cloud ")
    assert second.events("site refused")[0]["problem"].startswith("line 1, column 6: TOML syntax")
    assert second.stop() == 0


def test_watchdog_pings_while_the_event_loop_runs(agents, tmp_path):
    agent = start(agents, tmp_path, "--data", str(tmp_path / "data"), env={"WATCHDOG_USEC": "200000"})
    agent.wait_notification("READY", "1")
    for _ in range(3):
        agent.wait_notification("WATCHDOG", "1", timeout=1)
    assert agent.stop() == 0


def test_logs_never_carry_sip_passwords(agents, tmp_path, demo_text):
    site_file = tmp_path / "site.toml"
    site_file.write_text(demo_text)
    args = ("--site", str(site_file), "--data", str(tmp_path / "data"), "--log-level", "DEBUG")
    agent = start(agents, tmp_path, *args)
    agent.wait_notification("READY", "1")
    site_file.write_text(demo_text.replace('"anna", "bjorn"]', '"anna", "bjorn", "nobody"]'))
    agent.signal(signal.SIGHUP)  # a refused reload logs problems: still no secrets
    agent.wait_notification("RELOADING", "1")
    agent.wait_notification("READY", "1")
    assert agent.stop() == 0
    output = agent.output()
    assert "site active" in output
    assert "site refused" in output
    for secret in demo_site().secrets():
        assert secret not in output


def test_sighup_without_a_site_file_is_harmless(agents, tmp_path):
    agent = start(agents, tmp_path, "--data", str(tmp_path / "data"))
    agent.wait_notification("READY", "1")
    agent.signal(signal.SIGHUP)
    agent.wait_event("reload: no site file to read (started without --site)")
    assert agent.stop() == 0


def test_bad_flags_exit_2_with_the_reason(tmp_path):
    result = subprocess.run(
        [
            *AGENT_COMMAND,
            "--data",
            str(tmp_path),
            "--lan",
            "nohost:5060",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--lan 'nohost:5060': 'nohost' is not an IP address" in result.stderr


def test_unusable_data_directory_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vaxelbox.db").write_bytes(b"not a database" * 100)
    result = subprocess.run(
        [*AGENT_COMMAND, "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot open the data directory" in result.stderr
    assert "file is not a database" in result.stderr
