"""The presence server end to end: the `vaxelbox run` process between sipp phones watching busy
lamps (Event: dialog) and a Kamailio cloud with its own presence server (presence,
presence_dialoginfo, pua_dialoginfo). Real peers only.

Each sipp watcher (peers/sipp/watch.xml) checks on its own that its lamp went through the expected
states in order, that every document is full and its version higher than the last, and that the
final NOTIFY terminates the subscription; it fails otherwise.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest
from agent_process import AgentProcess
from peers import DOMAIN, USERS, Kamailio, Phone, free_port, phone
from test_failback import FAST_RETURN
from test_local_mode import until_registered

LAMP = "idle,early,confirmed,terminated"
SITE = f"""
[site]
name = "Receptionen"

[cloud]
domain = "{DOMAIN}"
proxies = ["sip:127.0.0.3:@CLOUD_PORT@;transport=tcp"]

[local]
hold_down = 1

[main]
number = "08-465 004 00"
entry = "user:anna"

[[users]]
id = "anna"
name = "Anna Lindqvist"
extension = "101"
sip = {{ user = "101", password = "{USERS["101"]}" }}

[[users]]
id = "bjorn"
name = "Björn Åkesson"
extension = "102"
sip = {{ user = "102", password = "{USERS["102"]}" }}

[[users.activities]]
id = "lunch"
name = "Lunch"
number = 1
default_minutes = 60
forward = "user:cecilia"

[[users]]
id = "cecilia"
name = "Cecilia Berg"
extension = "103"
sip = {{ user = "103", password = "{USERS["103"]}" }}
"""


class Office:
    """The agent on the site above, with a LAN address that stays the same across restarts; back
    online within about 4 s of the cloud's return (FAST_RETURN and the site's 1 s hold-down)."""

    def __init__(self, tmp_path, cloud_port: int) -> None:
        self.tmp = tmp_path
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        self.wan = ("127.0.0.2", free_port("127.0.0.2"))
        self.site = tmp_path / "site.toml"
        self.site.write_text(SITE.replace("@CLOUD_PORT@", str(cloud_port)))
        self.cloud_port = cloud_port
        self.agent = self._start()

    def _start(self) -> AgentProcess:
        return AgentProcess(
            self.tmp, "--site", str(self.site), "--data", str(self.tmp / "data"),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"{self.wan[0]}:{self.wan[1]}",
            "--cloud", f"sip:127.0.0.3:{self.cloud_port};transport=tcp", env=FAST_RETURN,
        )  # fmt: skip

    async def ready(self) -> None:
        await asyncio.to_thread(self.agent.wait_notification, "READY", "1")

    async def restart(self) -> None:
        await asyncio.to_thread(self.agent.stop)
        self.agent = self._start()
        await self.ready()

    async def mode(self, new: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if [e for e in self.agent.events("mode") if e.get("new") == new]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no mode change to {new} within {timeout}s\n{self.agent.output()[-5000:]}")

    def phone(self, scenario: str, user: str, **kwargs) -> "asyncio.Future[Phone]":
        return phone(scenario, self.lan, user, self.tmp, **kwargs)

    def watcher(self, user: str, states: str = LAMP, timeout: float = 40) -> "asyncio.Future[Phone]":
        """A BLF key of `user`'s phone on Björn (102), expecting the lamp to go through `states`."""
        return self.phone("watch.xml", user, callee="102", keys={"states": states}, timeout=timeout)

    async def stop(self) -> None:
        await asyncio.to_thread(self.agent.stop)


@pytest.fixture
def cloud(tmp_path):
    kamailio = Kamailio("127.0.0.3", free_port("127.0.0.3"), tmp_path / "kamailio", presence=True).start()
    yield kamailio
    kamailio.stop()


@pytest.fixture
async def office(tmp_path, cloud):
    running = Office(tmp_path, cloud.port)
    try:
        await running.ready()
        yield running
    finally:
        await running.stop()


async def until(check, timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


def notifies(watcher: Phone) -> list[tuple[int, str]]:
    """(version, first state or 'idle') of each dialog-info NOTIFY a sipp watcher received."""
    log = "".join(p.read_text(errors="replace") for p in watcher.workdir.glob("*_messages.log"))
    found = []
    for message in re.split(r"message received \[\d+\] bytes :", log)[1:]:
        if not message.lstrip().startswith("NOTIFY "):
            continue
        version = re.search(r'<dialog-info[^>]*version="(\d+)"', message)
        state = re.search(r"<state[^>]*>\s*([a-z]+)", message)
        if version:
            found.append((int(version.group(1)), state.group(1) if state else "idle"))
    return found


async def call_bjorn(office: Office, scenario: str = "register_call.xml", hold: float = 1) -> None:
    anna = await office.phone(scenario, "101", callee="102", hold=hold)
    await anna.finish()


async def test_three_watchers_one_upstream_subscription_and_lamps_in_order(office, cloud):
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=25)
    watchers = [await office.watcher(user) for user in ("101", "103", "101")]
    await until(lambda: cloud.subscriptions("102") == 1, what="the appliance's one subscription to 102")
    await asyncio.sleep(1)
    assert cloud.subscriptions("102") == 1, "three phones watch Björn; the cloud sees one subscription"
    await call_bjorn(office)
    for watcher in watchers:
        await watcher.finish()
        versions = [v for v, _ in notifies(watcher)]
        assert versions == sorted(set(versions)), f"versions must only go up: {versions}"
    # Nobody watches any more: the upstream subscription is dropped.
    await until(lambda: cloud.subscriptions("102") == 0, what="the upstream subscription dropped")
    bjorn.process.kill()
    await bjorn.process.wait()


async def test_refreshes_stay_local(office, cloud):
    watcher = await office.phone("watch_refresh.xml", "101", callee="102", hold=1.5)
    await until(lambda: cloud.subscriptions("102") == 1, what="the upstream subscription")
    upstream = cloud.subscribes_received()
    await watcher.finish()
    assert received_refreshes(watcher) == 2
    # The two refreshes were answered by the appliance; only the unsubscribe of the upstream
    # subscription (nobody watches any more) reached the cloud.
    await until(lambda: cloud.subscriptions("102") == 0, what="the upstream subscription dropped")
    assert cloud.subscribes_received() == upstream + 1


def received_refreshes(watcher: Phone) -> int:
    """In-dialog SUBSCRIBEs with a non-zero Expires that the sipp watcher sent (its refreshes)."""
    log = "".join(p.read_text(errors="replace") for p in watcher.workdir.glob("*_messages.log"))
    sent = [m.split("message received")[0] for m in re.split(r"message sent \(\d+ bytes\):", log)[1:]]
    return sum(
        1
        for m in sent
        if m.lstrip().startswith("SUBSCRIBE ") and re.search(r"^To:.*;tag=", m, re.M)
        and re.search(r"^Expires: *[1-9]", m, re.M)
    )  # fmt: skip


async def test_lamps_follow_office_calls_through_an_outage_and_resubscribe_once(office, cloud, tmp_path):
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=40)
    await until_registered(bjorn)  # through the cloud: the binding the local mode rings
    watchers = [await office.watcher(user, timeout=60) for user in ("101", "103")]
    await until(lambda: cloud.subscriptions("102") == 1, what="the upstream subscription")
    cloud.stop()
    await office.mode("local")
    # Anna registers locally and calls Björn: the appliance's own view lights the lamps.
    await call_bjorn(office, "local_call.xml")
    for watcher in watchers:
        await watcher.finish()
    # The cloud comes back: one subscription per watched user, re-made after a jittered pause.
    again = Kamailio("127.0.0.3", cloud.port, tmp_path / "kamailio-again", presence=True).start()
    try:
        late = await office.watcher("101", states="idle,early", timeout=60)  # stays subscribed
        await office.mode("online", timeout=20)
        await until(lambda: again.subscriptions("102") == 1, timeout=40, what="the resubscription")
        await asyncio.sleep(2)
        assert again.subscriptions("102") == 1
        # The appliance first refreshes the subscription the old cloud granted (no orphan is left
        # where the cloud still holds it); this restarted cloud forgot it (481), so one new
        # subscription follows, challenged once.
        assert again.subscribes_received() == 3
        late.process.kill()
        await late.process.wait()
    finally:
        again.stop()
        bjorn.process.kill()
        await bjorn.process.wait()


async def test_subscriptions_lost_after_a_restart_never_happen_nor_version_regression(office, cloud):
    """Subscriptions lost after a restart and versions going backwards are classic failures: the
    watchers here stay subscribed across an agent restart and still see the call, versions rising."""
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=40)
    watchers = [await office.watcher(user, timeout=60) for user in ("101", "103")]
    await until(lambda: all(notifies(w) for w in watchers), what="the first NOTIFYs")
    before = [notifies(w)[-1][0] for w in watchers]
    await office.restart()
    await until(lambda: all(notifies(w)[-1][0] > b for w, b in zip(watchers, before, strict=True)),
                what="a NOTIFY after the restart")  # fmt: skip
    await call_bjorn(office)
    for watcher in watchers:
        await watcher.finish()
    # The subscription the appliance made before the restart got a 481 at the cloud's first NOTIFY:
    # no zombie is left there.
    await until(lambda: cloud.subscriptions("102") == 0, what="no upstream subscription left")
    bjorn.process.kill()
    await bjorn.process.wait()


def cli(*args: str, config=None) -> str:
    """vaxelbox or vaxelctl as an installer runs it (a subprocess, 200 columns)."""
    module = "vaxelctl.cli" if config else "vaxelbox.cli"
    env = {**os.environ, "COLUMNS": "200", **({"VAXELCTL_CONFIG": str(config)} if config else {})}
    result = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


async def test_presence_shows_activity_and_vaxelctl_shows_every_line(office, cloud, tmp_path):
    """Event: presence gets PIDF with the RPID activity (lunch is `meal`), pushed when the activity
    is set from the command line; `vaxelctl presence` shows each user's line, activity and end."""
    data = str(tmp_path / "data")
    presence = await office.phone("watch_presence.xml", "101", callee="102", keys={"activity": "<rpid:meal"})
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=20)
    watcher = await office.watcher("103")
    await until(lambda: cloud.subscriptions("102") == 1, what="the upstream subscription")
    cli("activity", "set", "bjorn", "lunch", "--minutes", "30", "--data", data)
    await presence.finish()  # it saw <rpid:meal> and unsubscribed
    ready = office.agent.events("agent ready")[0]
    coap = next(a.split()[-1] for a in ready["listening"] if a.startswith("management coap "))
    code = cli("pairing-code", "--data", data).strip()
    laptop = tmp_path / "laptop"
    cli("pair", coap, "--code", code, "--name", "Lisa", config=laptop)
    anna = await office.phone("register_call_hold.xml", "101", callee="102", hold=4)
    await until(lambda: _line(laptop, "bjorn") == "busy", what="bjorn busy in vaxelctl presence")
    rows = {r["user"]: r for r in json.loads(cli("presence", "--json", config=laptop))["presence"]}
    assert rows["bjorn"]["activity"] == "Lunch"
    assert 29 * 60 < rows["bjorn"]["until"] - time.time() <= 30 * 60
    assert (rows["bjorn"]["watchers"], rows["bjorn"]["cloud"]) == (1, "active")
    assert (rows["anna"]["line"], rows["cecilia"]["line"]) == ("busy", "idle")
    shown = cli("presence", config=laptop)
    assert "Lunch" in shown
    assert "busy" in shown
    await anna.finish()
    await watcher.finish()
    await until(lambda: _line(laptop, "bjorn") == "idle", what="bjorn idle again")
    bjorn.process.kill()
    await bjorn.process.wait()


def _line(laptop, user: str) -> str:
    rows = json.loads(cli("presence", "--json", config=laptop))["presence"]
    return next(r["line"] for r in rows if r["user"] == user)
