"""`vaxelbox phones`, `enrol`, `activity` and `pairing-code` act on the store of the agent that is
running, not on one of their own (issue 19, item 10).

The reproduction: `make run` keeps its state in `.vaxelbox-data/`, yet `vaxelbox enrol open` in
another terminal printed "Enrolment open until ..." after opening a window in (and creating)
`~/.local/state/vaxelbox`, which no agent reads, and `vaxelbox phones` showed 0 devices. Here the
agent runs as `make run` starts it (`vaxelbox run --data D`, free loopback ports) and the commands
are typed as the README's "Provision your first phone" shows them, without --data, in a shell whose
HOME and state directory are the test's own.
"""

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from agent_process import AgentProcess
from peers import free_port
from vaxelbox.agent import runtime
from vaxelbox.site import demo_site_text
from vaxelbox.store import Store

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
YEALINK = "00:15:65:4a:a9:37"  # the demo site's reception phone (anna)


def shell_env(tmp_path: Path) -> dict[str, str]:
    """A person's other terminal: the commands on PATH, their own home and state directory, and the
    runtime directory the test's agents record themselves in."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "home" / "state"),
        "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run"),
        "COLUMNS": "80",
    }


def default_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "state" / "vaxelbox"


def vaxelbox(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "vaxelbox"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=shell_env(tmp_path),
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_agent(tmp_path: Path, data: Path) -> tuple[AgentProcess, int]:
    """`make run`'s agent on `data`; returns it and its provisioning HTTP port."""
    http = free_port("127.0.0.1")
    agent = AgentProcess(tmp_path, "--data", str(data), "--http-port", str(http), env=shell_env(tmp_path))
    try:
        agent.wait_notification("READY", "1", timeout=30)
    except BaseException:
        agent.close()
        raise
    return agent, http


def yealink_asks(http: int) -> None:
    """A Yealink asks for its configuration, as the README's curl does: the agent records it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}/{YEALINK.replace(':', '')}.cfg",
        headers={"User-Agent": f"Yealink SIP-T54W 96.86.0.100 {YEALINK}"},
    )
    with contextlib.suppress(urllib.error.HTTPError):  # a 404 too: the agent has seen the phone
        urllib.request.urlopen(request, timeout=10).close()


def readme_commands() -> list[list[str]]:
    """The `vaxelbox` lines of the README's "Provision your first phone" block, as written."""
    section = (REPO / "README.md").read_text().split("## Provision your first phone")[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block
    return [
        shlex.split(line, comments=True) for line in block[1].splitlines() if line.startswith("vaxelbox ")
    ]


@pytest.fixture
def agent_on_d(tmp_path):
    agent, http = start_agent(tmp_path, tmp_path / "D")
    try:
        yield agent, http, tmp_path / "D"
    finally:
        agent.stop()


def test_the_readme_commands_without_data_act_on_the_running_agents_store(agent_on_d, tmp_path):
    _agent, http, data = agent_on_d
    yealink_asks(http)
    commands = readme_commands()
    assert [c[:2] for c in commands] == [["vaxelbox", "phones"]] * 2 + [["vaxelbox", "enrol"]]
    listed, assigned, opened = (ok(vaxelbox(tmp_path, *command[1:])) for command in commands)
    assert "Devices seen (1)" in listed, listed
    assert YEALINK in listed
    assert "80:5e:c0:11:22:33 assigned to fredrik." in assigned
    assert opened.startswith("Enrolment open until ")
    # All of it happened in D, the agent's store, ...
    status = json.loads(ok(vaxelbox(tmp_path, "enrol", "status", "--json", "--data", str(data))))
    assert status["open"] is True
    rows = json.loads(ok(vaxelbox(tmp_path, "phones", "--json", "--data", str(data))))
    assert {row["mac"]: row["assigned"] for row in rows}[YEALINK] == "anna"
    # ... and nothing was made in the user's state directory, which no agent reads.
    assert not default_dir(tmp_path).exists()


def test_enrol_and_pairing_code_without_data_are_the_agents(agent_on_d, tmp_path):
    _agent, _, data = agent_on_d
    assert ok(vaxelbox(tmp_path, "enrol", "open", "--minutes", "5")).startswith("Enrolment open until ")
    assert json.loads(ok(vaxelbox(tmp_path, "enrol", "status", "--json", "--data", str(data))))["open"]
    code = ok(vaxelbox(tmp_path, "pairing-code")).strip()
    assert code == ok(vaxelbox(tmp_path, "pairing-code", "--data", str(data))).strip()
    assert ok(vaxelbox(tmp_path, "activity")).startswith("Active activities (0)")
    assert not default_dir(tmp_path).exists()


def test_after_the_agent_stops_a_command_without_data_refuses_and_creates_nothing(tmp_path):
    agent, _ = start_agent(tmp_path, tmp_path / "D")
    try:
        recorded = list((tmp_path / "run").glob("agent-*.json"))
    finally:
        assert agent.stop() == 0
    assert recorded, "the agent did not record itself"
    assert not list((tmp_path / "run").glob("agent-*.json")), "the agent left its record"
    for command in (["phones"], ["enrol", "open", "--minutes", "5"], ["pairing-code"], ["activity"]):
        refused = vaxelbox(tmp_path, *command)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert refused.stderr.startswith(f"no agent state at {default_dir(tmp_path)}: is the agent running?")
        assert refused.stdout == ""
    assert not default_dir(tmp_path).exists()


def test_with_no_agent_running_the_default_store_is_used_and_named(tmp_path):
    Store(default_dir(tmp_path)).close()  # an agent ran once without --data
    result = vaxelbox(tmp_path, "enrol", "status")
    assert ok(result) == "Enrolment closed.\n"
    assert result.stderr == f"no agent is running; using the state it left in {default_dir(tmp_path)}\n"


def test_a_data_directory_without_agent_state_is_refused_not_created(tmp_path):
    missing = tmp_path / "typo"
    refused = vaxelbox(tmp_path, "phones", "assign", YEALINK, "anna", "--data", str(missing))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"no agent state at {missing}: is it the agent's --data?")
    assert not missing.exists()


def test_with_two_agents_running_a_command_asks_which(tmp_path):
    first, _ = start_agent(tmp_path, tmp_path / "A")
    try:
        second, _ = start_agent(tmp_path, tmp_path / "B")
        try:
            refused = vaxelbox(tmp_path, "phones")
            chosen = vaxelbox(tmp_path, "enrol", "status", "--data", str(tmp_path / "B"))
        finally:
            second.stop()
    finally:
        first.stop()
    assert refused.returncode == 1
    assert refused.stderr.startswith("2 agents are running here (pid ")
    assert f"on {tmp_path / 'A'}" in refused.stderr
    assert f"on {tmp_path / 'B'}" in refused.stderr
    assert "pass --data with the one you mean" in refused.stderr
    assert ok(chosen) == "Enrolment closed.\n"


def test_a_killed_agents_record_is_ignored_and_pruned_by_the_next(tmp_path):
    agent, _ = start_agent(tmp_path, tmp_path / "D")
    try:
        (record,) = (tmp_path / "run").glob("agent-*.json")
    finally:
        agent.signal(signal.SIGKILL)
        agent.close()  # reaps it
    assert record.exists()  # SIGKILL leaves it ...
    refused = vaxelbox(tmp_path, "phones")  # ... but no command takes a dead agent's word
    assert refused.returncode == 1
    assert str(default_dir(tmp_path)) in refused.stderr
    again, _ = start_agent(tmp_path, tmp_path / "E")
    try:
        assert not record.exists()
        assert ok(vaxelbox(tmp_path, "enrol", "status")) == "Enrolment closed.\n"  # E's
    finally:
        again.stop()


def test_the_runtime_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert runtime.runtime_dir() == Path("/run/vaxelbox")  # the service's, whatever the shell says
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert runtime.runtime_dir() == tmp_path / "xdg" / "vaxelbox"
    monkeypatch.setenv(runtime.RUNTIME_ENV, str(tmp_path / "mine"))
    assert runtime.runtime_dir() == tmp_path / "mine"


def test_the_systemd_unit_gives_the_agent_its_runtime_directory():
    unit = (REPO / "firmware" / "systemd" / "vaxelbox.service").read_text()
    assert f"RuntimeDirectory={runtime.ROOT_RUNTIME_DIR.name}\n" in unit
    assert runtime.ROOT_RUNTIME_DIR.parent == Path("/run")


def test_the_help_says_which_store_the_commands_use(tmp_path):
    for command in (["phones"], ["enrol"], ["activity"], ["pairing-code"]):
        shown = " ".join(ok(vaxelbox(tmp_path, *command, "--help")).split())
        assert "the running agent's data directory (--data DIR picks another)" in shown, command


def test_assign_says_the_open_enrolment_window_lets_it_in_now(tmp_path):
    """The reproduction: `phones assign` printed "It fetches its configuration in the next enrolment
    window: vaxelbox enrol open" while a window was open, and the phone enrolled at its next fetch."""
    data = tmp_path / "data"
    store = Store(data)
    store.sites.apply(demo_site_text(), "demo site")
    store.close()
    first, second = "0c:38:3e:07:e1:98", "0c:38:3e:07:e1:99"  # never seen; their vendor named
    assert ok(
        vaxelbox(tmp_path, "phones", "assign", first, "fredrik", "--vendor", "fanvil", "--data", str(data))
    ).splitlines()[-1] == ("It fetches its configuration in the next enrolment window: vaxelbox enrol open")
    opened = ok(vaxelbox(tmp_path, "enrol", "open", "--minutes", "10", "--data", str(data)))
    until = re.search(r"Enrolment open until (\S+) for", opened)[1]
    assert ok(
        vaxelbox(tmp_path, "phones", "assign", second, "fredrik", "--vendor", "fanvil", "--data", str(data))
    ).splitlines()[-1] == (f"It gets its configuration at its next request: enrolment is open until {until}.")
    unknown = ok(vaxelbox(tmp_path, "phones", "assign", "0c:38:3e:07:e1:97", "fredrik", "--data", str(data)))
    assert unknown.splitlines()[-1] == (  # no vendor named: the open window is said, not "open one"
        f"Enrolment is open until {until}: it gets its configuration at a request that tells its vendor."
    )


def test_assign_to_a_misspelt_user_names_the_users(tmp_path):
    """It said `phones[10].lines[0]: unknown user 'fredirk'`: a path into a site the installer never
    wrote. Now as `vaxelbox activity set` says it (vaxelctl gets the same words from the appliance)."""
    data = tmp_path / "data"
    store = Store(data)
    store.sites.apply(demo_site_text(), "demo site")
    store.close()
    refused = vaxelbox(tmp_path, "phones", "assign", "0c:38:3e:07:e1:98", "fredirk", "--data", str(data))
    assert refused.returncode == 1
    assert refused.stderr.startswith("no user 'fredirk' in the site (anna, bjorn, "), refused.stderr
