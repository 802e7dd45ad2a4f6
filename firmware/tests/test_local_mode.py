"""Local survivable mode end to end: the `vaxelbox run` process between sipp phones and a Kamailio
cloud that dies (killed), or that was never there. Real peers only: sipp phones, Kamailio."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest
from agent_process import AgentProcess
from peers import DOMAIN, SCENARIOS, USERS, Kamailio, Phone, free_port, phone, tool

DAVID_PASSWORD = "pw-104-secret"  # a user only the appliance knows (not in the test cloud)
# An office whose users are the test cloud's users (the same credentials online and locally).
SITE = f"""
[site]
name = "Lokalt kontor"

[cloud]
domain = "{DOMAIN}"
proxies = ["sip:127.0.0.3:@CLOUD_PORT@;transport=tcp"]

[local]
hold_down = 4

[main]
number = "08-465 004 00"
entry = "group:reception"

[[groups]]
id = "reception"
name = "Reception"
extension = "200"
members = ["anna", "bjorn"]
ring_time = 10
overflow = "user:cecilia"

[[groups]]
id = "kedja"
name = "Kedja"
extension = "300"
strategy = "sequential"
members = [{{ user = "anna", ring_time = 5 }}, "bjorn"]
ring_time = 10

[[users]]
id = "anna"
name = "Anna Lindqvist"
extension = "101"
direct_number = "08-465 004 01"
sip = {{ user = "101", password = "{USERS["101"]}" }}

[[users]]
id = "bjorn"
name = "Björn Åkesson"
extension = "102"
sip = {{ user = "102", password = "{USERS["102"]}" }}
forwards = {{ busy = "user:cecilia" }}
vip = ["08-465 004 01"]

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

[[users]]
id = "david"
name = "David Öberg"
extension = "104"
sip = {{ user = "104", password = "{DAVID_PASSWORD}" }}

[[users]]
id = "erik"
name = "Erik Ek"
extension = "105"
sip = {{ user = "105", password = "{DAVID_PASSWORD}" }}
forwards = {{ always = "user:david" }}

[[users]]
id = "frida"
name = "Frida Falk"
extension = "106"
sip = {{ user = "106", password = "{DAVID_PASSWORD}" }}
forwards = {{ no_answer = "user:david", no_answer_after = 5 }}

[[groups]]
id = "kvall"
name = "Kvällsjour"
extension = "400"
members = ["bjorn"]
schedule = "kontorstid"
closed = "user:david"

[[schedules]]
id = "kontorstid"
name = "Kontorstid"
weekly = {{ mon = ["08:00-17:00"], tue = ["08:00-17:00"], wed = ["08:00-17:00"], thu = ["08:00-17:00"], fri = ["08:00-17:00"] }}
@TRUNK@
"""


@pytest.fixture
def cloud(tmp_path):
    kamailio = Kamailio("127.0.0.3", free_port("127.0.0.3"), tmp_path / "kamailio").start()
    yield kamailio
    kamailio.stop()


class Office:
    """The agent with the local site, its LAN address, and the phones' workdir."""

    def __init__(self, tmp_path, cloud_port: int, trunk: tuple[str, int] | None = None, env=None) -> None:
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        site = tmp_path / "site.toml"
        trunk_table = f'[fallback_trunk]\nuri = "sip:{trunk[0]}:{trunk[1]};transport=udp"\n' if trunk else ""
        site.write_text(SITE.replace("@CLOUD_PORT@", str(cloud_port)).replace("@TRUNK@", trunk_table))
        self.tmp = tmp_path
        self.agent = AgentProcess(
            tmp_path, "--site", str(site), "--data", str(tmp_path / "data"),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
            "--cloud", f"sip:127.0.0.3:{cloud_port};transport=tcp", env=env,
        )  # fmt: skip

    async def ready(self) -> None:
        await asyncio.to_thread(self.agent.wait_notification, "READY", "1")

    async def mode(self, new: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if changes := [e for e in self.agent.events("mode") if e.get("new") == new]:
                return changes[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no mode change to {new} within {timeout}s\n{self.agent.output()[-5000:]}")

    def phone(self, scenario: str, user: str, **kwargs):
        if user in ("104", "105", "106"):  # users only the appliance knows
            kwargs.setdefault("password", DAVID_PASSWORD)
        return phone(scenario, self.lan, user, self.tmp, **kwargs)

    async def stop(self) -> None:
        await asyncio.to_thread(self.agent.stop)


async def hang_up(phone_: Phone) -> None:
    """End a phone still holding its registration, and reap it (no process outlives its test)."""
    phone_.process.kill()
    await phone_.process.wait()


def received(phone_: Phone, method: str) -> int:
    """How many `method` requests a sipp phone received (from its -trace_msg log)."""
    log = "".join(p.read_text(errors="replace") for p in phone_.workdir.glob("*_messages.log"))
    return len(re.findall(rf"message received \[\d+\] bytes :\s+{method} ", log))


async def heard(phone_: Phone, expected: dict[str, int], timeout: float = 10) -> dict[str, int]:
    """How many of each request method in `expected` `phone_` received ({method: count}), polled
    every 0.1 s until the counts equal `expected` or `timeout` seconds pass; the caller asserts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {method: received(phone_, method) for method in expected}
        if counts == expected or time.monotonic() >= deadline:
            return counts
        await asyncio.sleep(0.1)


# The 200 a phone's REGISTER with credentials (CSeq 2: the first was challenged) got, in its log.
REGISTERED = r"message received \[\d+\] bytes :\s+SIP/2\.0 200 [^\n]*\n(?:[^\n]+\n)*?CSeq: 2 REGISTER"


def log_of(phone_: Phone) -> str:
    """Every message a sipp phone sent and received so far (its -trace_msg log)."""
    return "".join(p.read_text(errors="replace") for p in phone_.workdir.glob("*_messages.log"))


async def until_registered(*phones: Phone, timeout: float = 10) -> None:
    """Returns once each of `phones` got its REGISTER answered 200 (polled every 50 ms): then the
    appliance holds its binding (it answered, or relayed the cloud's 200, after taking it).

    Raises AssertionError naming a phone still unregistered after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for phone_ in phones:
        while not re.search(REGISTERED, log := log_of(phone_)):
            assert time.monotonic() < deadline, f"phone {phone_.user} never registered\n{log[-3000:]}"
            await asyncio.sleep(0.05)


async def ended(phone_: Phone) -> None:
    """End a register_wait.xml phone whose part is over, before its hold runs out (saves the test
    the rest of the hold), first checking what its exit status would have said: it registered (sipp
    ignores how its out-of-call answers went, so that is all the status says).

    Raises AssertionError if the phone never got its REGISTER answered 200."""
    log = log_of(phone_)
    try:
        assert re.search(REGISTERED, log), f"phone {phone_.user} never registered\n{log[-3000:]}"
    finally:
        await hang_up(phone_)


@pytest.fixture
async def office(tmp_path, cloud):
    running = Office(tmp_path, cloud.port)
    try:
        await running.ready()
        yield running
    finally:
        await running.stop()


async def offline(tmp_path, **kwargs) -> Office:
    """An office whose cloud never answers (nothing listens there): local mode within seconds."""
    running = Office(tmp_path, free_port("127.0.0.3"), **kwargs)
    try:
        await running.ready()
        await running.mode("local")
    except BaseException:
        await running.stop()  # the caller never gets it to stop
        raise
    return running


@pytest.fixture
async def offline_office(tmp_path):
    running = await offline(tmp_path)
    yield running
    await running.stop()


async def test_the_cloud_dies_and_the_office_keeps_calling(office, cloud):
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=20)
    await until_registered(bjorn)  # registered through the cloud, mirrored by the edge
    killed = time.time()
    cloud.stop()
    change = await office.mode("local")
    failover = time.time() - killed
    print(f"failover: local mode {failover:.2f} s after the cloud was killed")
    assert failover <= 3.5, f"local mode after {failover:.1f} s"
    assert change["old"] == "online"
    # Anna registers locally (401, then 200) and calls Björn, who registered before the outage.
    anna = await office.phone("local_call.xml", "101", callee="102")
    await anna.finish()
    await hang_up(bjorn)
    assert not [e for e in office.agent.events() if e.get("level") == "error"]


async def test_local_register_needs_the_right_password(offline_office, tmp_path):
    anna = await offline_office.phone("register.xml", "101")
    await anna.finish()
    wrong = await phone(
        "register_refused.xml", offline_office.lan, "102", tmp_path, password="not-bjorns-password"
    )
    await wrong.finish()
    registrations = [e for e in offline_office.agent.events() if "SIP auth failed" in str(e.get("event"))]
    assert registrations, "a refused registration is logged for fail2ban"


async def test_a_parallel_group_rings_both_and_the_first_answer_wins(offline_office):
    anna = await offline_office.phone("register_wait.xml", "101", answers="answer.xml", hold=12)
    bjorn = await offline_office.phone("register_wait.xml", "102", answers="ring.xml", hold=12)
    await until_registered(anna, bjorn)
    cecilia = await offline_office.phone("local_call.xml", "103", callee="200")
    await cecilia.finish()
    await asyncio.sleep(0.5)
    # Both rang at once; anna answered, so bjorn's ringing was cancelled.
    assert (received(anna, "INVITE"), received(anna, "BYE")) == (1, 1)
    assert (received(bjorn, "INVITE"), received(bjorn, "CANCEL")) == (1, 1)
    for phone_ in (anna, bjorn):
        await hang_up(phone_)


async def test_a_sequential_group_rings_in_member_order(offline_office):
    anna = await offline_office.phone("register_wait.xml", "101", answers="ring.xml", hold=16)
    bjorn = await offline_office.phone("register_wait.xml", "102", answers="answer.xml", hold=16)
    await until_registered(anna, bjorn)
    started = time.monotonic()
    cecilia = await offline_office.phone("local_call.xml", "103", callee="300")
    await cecilia.finish()
    assert time.monotonic() - started >= 5  # anna's 5 s first
    assert await heard(anna, {"INVITE": 1, "CANCEL": 1}) == {"INVITE": 1, "CANCEL": 1}
    assert await heard(bjorn, {"INVITE": 1, "BYE": 1}) == {"INVITE": 1, "BYE": 1}
    await ended(anna)
    await ended(bjorn)


async def test_busy_forwards_and_an_empty_group_overflows(offline_office):
    bjorn = await offline_office.phone("register_wait.xml", "102", answers="busy.xml", hold=14)
    cecilia = await offline_office.phone("register_wait.xml", "103", answers="answer.xml", hold=14)
    await until_registered(bjorn, cecilia)
    anna = await offline_office.phone("local_call.xml", "101", callee="102")  # bjorn busy -> cecilia
    await anna.finish()
    assert received(bjorn, "INVITE") == 1
    assert received(cecilia, "BYE") == 1
    # Reception (anna, bjorn): anna calls it, bjorn is busy -> overflow to cecilia, who is still reachable.
    await ended(bjorn)
    await ended(cecilia)


async def test_a_closed_schedule_sends_calls_to_its_closed_target(tmp_path):
    julafton = "2026-12-24T10:00:00+01:00"  # a Thursday, and a de-facto holiday
    office = await offline(tmp_path, env={"VAXELBOX_NOW": julafton})
    try:
        bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=8)
        david = await office.phone("register_wait.xml", "104", answers="answer.xml", hold=8)
        await until_registered(bjorn, david)
        anna = await office.phone("local_call.xml", "101", callee="400")
        await anna.finish()
        assert await heard(david, {"INVITE": 1, "BYE": 1}) == {"INVITE": 1, "BYE": 1}
        assert received(bjorn, "INVITE") == 0
        await ended(bjorn)  # it was registered, and reachable: the schedule, not bjorn, said no
        await ended(david)
    finally:
        await office.stop()


async def test_an_external_call_leaves_through_the_fallback_trunk(tmp_path):
    trunk_address = ("127.0.0.4", free_port("127.0.0.4"))
    trunk = await asyncio.create_subprocess_exec(
        tool("sipp"), "-sf", str(SCENARIOS / "trunk.xml"), "-i", trunk_address[0], "-p", str(trunk_address[1]),
        "-m", "1", "-timeout", "25s", "-timeout_error", "-nostdin", "-trace_msg", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    office = await offline(tmp_path, trunk=trunk_address)
    try:
        anna = await office.phone("local_call.xml", "101", callee="0701740650")
        await anna.finish()
        output, _ = await asyncio.wait_for(trunk.communicate(), 10)
        assert trunk.returncode == 0, output.decode()[-2000:]
        trace = "".join(p.read_text() for p in tmp_path.glob("trunk*_messages.log"))
        assert "INVITE sip:+46701740650@127.0.0.4" in trace
        assert "P-Asserted-Identity: <sip:+46846500401@127.0.0.4>" in trace  # anna's direct number
        assert "Proxy-Authorization" not in trace  # the phone's credentials end at the appliance
        assert "BYE sip:trunk@127.0.0.4" in trace  # the dialog goes on through the trunk
    finally:
        if trunk.returncode is None:
            trunk.kill()
        await office.stop()


async def test_a_call_up_when_the_cloud_dies_hangs_up_cleanly(office, cloud):
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=20)
    await until_registered(bjorn)
    anna = await office.phone("register_call_hold.xml", "101", callee="102", hold=7)  # BYE after 7 s
    await asyncio.sleep(2.5)  # the call is up, through the cloud
    assert received(bjorn, "INVITE") == 1
    cloud.stop()
    await office.mode("local")
    await anna.finish()  # its BYE was answered 200 ...
    assert received(bjorn, "BYE") == 1  # ... by bjorn, reached past the dead cloud
    await hang_up(bjorn)


async def test_an_activity_forwards_and_a_vip_rings_through(offline_office, tmp_path):
    vaxelbox = [sys.executable, "-m", "vaxelbox", "activity"]
    data = ["--data", str(tmp_path / "data")]
    done = subprocess.run([*vaxelbox, "set", "bjorn", "lunch", *data], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "bjorn: Lunch (lunch) until" in done.stdout
    listed = subprocess.run(
        [*vaxelbox, *data], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}
    )
    assert "│ bjorn │ lunch    │ 20" in listed.stdout, listed.stdout  # the time under "until", said once
    assert "until 20" not in listed.stdout, listed.stdout
    bjorn = await offline_office.phone("register_wait.xml", "102", answers="answer.xml", hold=14)
    cecilia = await offline_office.phone("register_wait.xml", "103", answers="answer.xml", hold=14)
    await until_registered(bjorn, cecilia)
    david = await offline_office.phone("local_call.xml", "104", callee="102")  # bjorn at lunch -> cecilia
    await david.finish()
    anna = await offline_office.phone("local_call.xml", "101", callee="102")  # anna is bjorn's VIP
    await anna.finish()
    assert await heard(bjorn, {"INVITE": 1}) == {"INVITE": 1}
    assert await heard(cecilia, {"INVITE": 1}) == {"INVITE": 1}
    await ended(bjorn)
    await ended(cecilia)


async def test_always_and_no_answer_forwards(offline_office):
    david = await offline_office.phone("register_wait.xml", "104", answers="answer.xml", hold=16)
    frida = await offline_office.phone("register_wait.xml", "106", answers="ring.xml", hold=16)
    await until_registered(david, frida)
    anna = await offline_office.phone("local_call.xml", "101", callee="105")  # erik: always -> david
    await anna.finish()
    started = time.monotonic()
    bjorn = await offline_office.phone("local_call.xml", "102", callee="106")  # frida: 5 s, then david
    await bjorn.finish()
    assert time.monotonic() - started >= 5
    assert await heard(david, {"INVITE": 2}) == {"INVITE": 2}
    assert await heard(frida, {"INVITE": 1, "CANCEL": 1}) == {"INVITE": 1, "CANCEL": 1}
    await ended(david)
    await ended(frida)


def vaxelctl(config, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


async def test_vaxelctl_shows_the_mode_and_the_calls_in_progress(offline_office, tmp_path):
    ready = offline_office.agent.events("agent ready")[0]
    coap = next(a.split()[-1] for a in ready["listening"] if a.startswith("management coap "))
    data = str(tmp_path / "data")
    code = subprocess.run(
        [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", data], capture_output=True, text=True
    ).stdout.strip()
    laptop = tmp_path / "laptop"
    vaxelctl(laptop, "pair", coap, "--code", code, "--name", "Lisa")
    status = json.loads(vaxelctl(laptop, "status", "--json"))
    assert (status["mode"], status["mode_reason"]) == ("local", "the cloud stopped answering")
    assert status["back_online_at"] is None  # the cloud never answers: no hold-down runs
    bjorn = await offline_office.phone("register_wait.xml", "102", answers="answer.xml", hold=10)
    await until_registered(bjorn)
    anna = await offline_office.phone("local_call_hold.xml", "101", callee="102", hold=5)
    await asyncio.sleep(2.5)
    calls = json.loads(vaxelctl(laptop, "calls", "--json"))["calls"]
    assert [(c["caller"], c["callee"], c["state"], c["mode"]) for c in calls] == [
        ("anna", "102", "up", "local")
    ]
    assert "anna" in vaxelctl(laptop, "calls")
    await anna.finish()
    assert json.loads(vaxelctl(laptop, "calls", "--json"))["calls"] == []
    await hang_up(bjorn)


async def test_112_is_routed_before_authentication_and_without_a_trunk_fails_at_once(offline_office):
    """A phone with a wrong password still gets an answer for 112 (no 407): here 503, because this
    office has no fallback trunk, at once and with the reason; the agent warned about it at start."""
    started = time.monotonic()
    caller = await offline_office.phone("emergency_call.xml", "101", callee="112", password="wrong")
    await caller.finish()
    assert time.monotonic() - started < 5
    trace = "".join(p.read_text(errors="replace") for p in caller.workdir.glob("*_messages.log"))
    assert "no emergency route in local mode" in trace
    assert "SIP/2.0 407" not in trace  # the status line: bare digits can be in a timestamp
    assert offline_office.agent.events("local mode has no emergency route")
