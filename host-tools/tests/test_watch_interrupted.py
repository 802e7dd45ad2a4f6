"""A watch ended by Ctrl-C leaves nothing behind: `vaxelctl presence --watch` and `status --watch`
interrupted with SIGINT (it sends no deregistration), then state changes they would have heard of.

Real peers: the agent process on loopback, vaxelctl as subprocesses, `vaxelbox activity` beside the
agent. The watchers gone away must be dropped quietly (no error record, nothing in `status`'s
last_errors), and a watcher still running must go on hearing every change. A factory reset starts
the status's last_errors afresh.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_management import AT_A_TERMINAL, Appliance, ok, vaxelctl
from vaxelbox.site import demo_site_text
from vaxelctl.client import HOLD_WAIT

GONE = 2  # interrupted watchers per resource: a notification to one is always followed by another
WAIT = 10.0  # seconds a watcher may take to show a change


class Watch:
    """`vaxelctl WHAT --watch --json` as an installer runs it in a terminal: one state per line."""

    def __init__(self, config: Path, what: str) -> None:
        self.process = subprocess.Popen(
            [*AT_A_TERMINAL, what, "--watch", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"},
        )
        self._states: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._states.put(json.loads(line))

    def until(self, wanted: Callable[[Any], bool], why: str) -> Any:
        """The first state shown that `wanted` accepts; fails after WAIT seconds without one."""
        try:
            while not wanted(state := self._states.get(timeout=WAIT)):
                pass
        except queue.Empty:
            raise AssertionError(f"the watcher never showed {why}") from None
        return state

    def interrupt(self) -> None:
        """Ctrl-C: vaxelctl exits 130 and tells the appliance nothing."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(10) == 130

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def laptop(appliance: Appliance, name: str) -> Path:
    """A laptop paired with the appliance: its vaxelctl config. A watch holds its pairing (its OSCORE
    sequence numbers) until it ends, so watches that run side by side come from different laptops."""
    config = appliance.tmp / name
    code = (appliance.data / "mgmt/pairing-code").read_text().strip()  # as on the label
    ok(vaxelctl(config, "pair", appliance.address, "--code", code, "--name", name))
    return config


@pytest.fixture
def watches() -> Any:
    running: list[Watch] = []
    yield running
    for watch in running:
        watch.close()


def beside(appliance: Appliance, *args: str) -> None:
    """`vaxelbox ...` on the appliance, beside the agent (the store: a change the agent pushes)."""
    command = [sys.executable, "-m", "vaxelbox", *args, "--data", str(appliance.data)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def anna(state: dict[str, Any]) -> str | None:
    return next(row["activity"] for row in state["presence"] if row["user"] == "anna")


def error_records(appliance: Appliance) -> list[dict[str, Any]]:
    return [e for e in appliance.agent.events() if e.get("level") in ("error", "critical")]


def held(appliance: Appliance, resource: str) -> list[int]:
    """How many watchers aiocoap held for the resource, at each change of that number (debug)."""
    return [e["watchers"] for e in appliance.agent.events("coap watchers") if e["resource"] == resource]


def gone_local(appliance: Appliance) -> None:
    """Wait until the appliance has gone to local mode. It has no cloud here and goes local about a
    second after it starts, which presence and status show: a watcher started before that would be
    told, and an interrupted one dropped sooner than this test counts on (on Debian's Python,
    faster to start, vaxelctl was there first in most runs)."""
    deadline = time.monotonic() + WAIT
    while not any(event.get("new") == "local" for event in appliance.agent.events("mode")):
        assert time.monotonic() < deadline, "the appliance without a cloud never went to local mode"
        time.sleep(0.05)


def test_watchers_ended_by_ctrl_c_are_dropped_quietly_and_the_others_go_on(tmp_path, watches):
    appliance = Appliance(tmp_path, "--log-level", "DEBUG")
    try:
        laptops = [laptop(appliance, "lisa"), laptop(appliance, "maja")]
        gone_local(appliance)  # the change of mode is not one of those counted below
        for what in ("presence", "status"):  # GONE of each, side by side, then Ctrl-C
            gone = [Watch(config, what) for config in laptops]
            watches += gone
            for watch in gone:
                watch.until(lambda state: True, "the first state")
                watch.interrupt()
        presence, status = Watch(laptops[0], "presence"), Watch(laptops[1], "status")
        watches += [presence, status]
        version = status.until(lambda state: True, "the first state")["site_version"]
        presence.until(lambda state: anna(state) is None, "anna without an activity")

        beside(appliance, "activity", "set", "anna", "lunch")  # to the gone ones and the live one
        presence.until(lambda state: anna(state) == "Lunch", "anna at lunch")
        beside(appliance, "phones", "assign", "80:5e:c0:11:22:33", "fredrik")  # a new site version
        status.until(lambda state: state["site_version"] == version + 1, "the new site version")
        beside(appliance, "activity", "clear", "anna")  # the gone ones are gone: nothing goes to them
        presence.until(lambda state: anna(state) is None, "anna back")

        assert error_records(appliance) == []
        # Ctrl-C tells the appliance nothing: all were held until a change found the gone ones gone.
        for resource in ("vaxelbox.presence", "vaxelbox.status"):
            counts = held(appliance, resource)
            assert max(counts, default=0) == GONE + 1, (resource, counts)
            assert counts[-1] == 1, f"{resource}: {counts} (1: the live watcher alone)"
        presence.interrupt()
        status.interrupt()
        assert json.loads(ok(vaxelctl(laptops[0], "status", "--json")))["last_errors"] == []
    finally:
        appliance.stop()


def test_a_command_beside_a_watch_of_the_same_laptop_waits_for_it_then_names_it(tmp_path, watches):
    """The reproduction: with `status --watch` open, `vaxelctl mode local` in a second terminal said
    "another vaxelctl is using the pairing with ...: wait for it", which never ends while a watch
    runs. Now a command waits HOLD_WAIT s for the pairing, then names what holds it and how to stop it."""
    appliance = Appliance(tmp_path)
    try:
        config = laptop(appliance, "lisa")
        watch = Watch(config, "status")
        watches.append(watch)
        watch.until(lambda state: True, "the first state")
        started = time.monotonic()
        refused = vaxelctl(config, "mode", "local")
        assert time.monotonic() - started >= HOLD_WAIT
        assert refused.returncode == 1, refused.stderr
        said = " ".join(refused.stderr.split())
        assert f"another vaxelctl (pid {watch.process.pid}: vaxelctl status --watch --json) is using" in said
        assert "a --watch holds it until it ends (Ctrl-C in its terminal)" in said

        waiting = subprocess.Popen(  # the watch ends while this waits: it goes through
            [*AT_A_TERMINAL, "mode", "local"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"},
        )
        time.sleep(HOLD_WAIT / 3)
        watch.interrupt()
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err + out
    finally:
        appliance.stop()


def test_revoking_an_installer_ends_its_watch(tmp_path, watches):
    """The reproduction: `installers revoke` of an installer whose `status --watch` ran ("locks one
    out", says the README) left the watch running, and it went on hearing every change."""
    appliance = Appliance(tmp_path)
    try:
        lisa, maja = laptop(appliance, "lisa"), laptop(appliance, "maja")
        watch = Watch(lisa, "status")
        watches.append(watch)
        watch.until(lambda state: True, "the first state")
        rows = json.loads(ok(vaxelctl(maja, "installers", "--json")))
        ok(vaxelctl(maja, "installers", "revoke", next(r["id"] for r in rows if r["name"] == "lisa")))
        assert watch.process.wait(WAIT) == 4  # not paired: the appliance ended the observation
        assert "not paired with this appliance (or revoked)" in watch.process.stderr.read()
        maja_watch = Watch(maja, "status")  # the revoker's own watch is not touched
        watches.append(maja_watch)
        maja_watch.until(lambda state: True, "the first state")
        ok(
            vaxelctl(
                tmp_path / "olle", "pair", appliance.address, "--code", appliance.code(), "--name", "olle"
            )
        )
        ok(vaxelctl(tmp_path / "olle", "mode", "local"))
        maja_watch.until(lambda state: state["mode_reason"] == "forced local by an installer", "the drill")
    finally:
        appliance.stop()


def test_a_factory_reset_starts_the_status_errors_afresh(tmp_path):
    site = tmp_path / "site.toml"  # Appliance writes the demo site there
    appliance = Appliance(tmp_path, "--site", str(site))
    try:
        site.write_text("this is not a site")
        appliance.agent.signal(signal.SIGHUP)
        refused = appliance.agent.wait_event("site file refused; the running site stays")
        assert refused["level"] == "error"  # in the ring too: status shows it until the reset
        site.write_text(demo_site_text())  # the fresh box applies it

        env = {**os.environ, "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run")}
        reset = [sys.executable, "-m", "vaxelbox", "factory-reset", "--yes", "--data", str(appliance.data)]
        result = subprocess.run(reset, capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        appliance.agent.wait_notification("READY", "1", timeout=30)  # the fresh agent, same process

        config = laptop(appliance, "lisa")  # paired with the fresh box (the code on its label stays)
        status = json.loads(ok(vaxelctl(config, "status", "--json")))
        assert status["last_errors"] == []
        records = [json.loads(line) for line in ok(vaxelctl(config, "log", "--json")).splitlines()]
        assert records, "the fresh agent's own lines are there"
        assert not [r for r in records if r.get("level") == "error"]
    finally:
        appliance.stop()
