"""Local survivable mode end to end: the `vaxelbox run` process between sipp phones and a Kamailio
cloud that dies (killed), or that was never there. Real peers only: sipp phones, Kamailio."""

import asyncio
import time

import pytest
from agent_process import AgentProcess
from peers import DOMAIN, USERS, Kamailio, free_port, phone

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

[[users]]
id = "cecilia"
name = "Cecilia Berg"
extension = "103"
sip = {{ user = "103", password = "{USERS["103"]}" }}
"""


@pytest.fixture
def cloud(tmp_path):
    kamailio = Kamailio("127.0.0.3", free_port("127.0.0.3"), tmp_path / "kamailio").start()
    yield kamailio
    kamailio.stop()


class Office:
    """The agent with the local site, its LAN address, and the phones' workdir."""

    def __init__(self, tmp_path, cloud_port: int) -> None:
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        site = tmp_path / "site.toml"
        site.write_text(SITE.replace("@CLOUD_PORT@", str(cloud_port)))
        self.tmp = tmp_path
        self.agent = AgentProcess(
            tmp_path, "--site", str(site), "--data", str(tmp_path / "data"),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
            "--cloud", f"sip:127.0.0.3:{cloud_port};transport=tcp",
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
        return phone(scenario, self.lan, user, self.tmp, **kwargs)


@pytest.fixture
async def office(tmp_path, cloud):
    running = Office(tmp_path, cloud.port)
    await running.ready()
    yield running
    await asyncio.to_thread(running.agent.stop)


@pytest.fixture
async def offline_office(tmp_path):
    """An office whose cloud never answers (nothing listens there): local mode within seconds."""
    running = Office(tmp_path, free_port("127.0.0.3"))
    await running.ready()
    await running.mode("local")
    yield running
    await asyncio.to_thread(running.agent.stop)


async def test_the_cloud_dies_and_the_office_keeps_calling(office, cloud):
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=20)
    await asyncio.sleep(1.5)  # registered through the cloud, mirrored by the edge
    killed = time.time()
    cloud.stop()
    change = await office.mode("local")
    failover = time.time() - killed
    assert failover <= 4.5, f"local mode after {failover:.1f} s"
    assert change["old"] == "online"
    # Anna registers locally (401, then 200) and calls Björn, who registered before the outage.
    anna = await office.phone("local_call.xml", "101", callee="102")
    await anna.finish()
    bjorn.process.kill()
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
    await asyncio.sleep(1.0)
    cecilia = await offline_office.phone("local_call.xml", "103", callee="200")
    await cecilia.finish()
    for phone_ in (anna, bjorn):
        phone_.process.kill()
