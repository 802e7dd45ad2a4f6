"""The agent process as the phones' SIP edge: `vaxelbox run` between sipp phones and a Kamailio cloud."""

import asyncio
import json
import sqlite3

import pytest
from agent_process import AgentProcess
from peers import DOMAIN, Kamailio, free_port, phone
from test_local_mode import ended, until_registered


@pytest.fixture
def cloud(tmp_path):
    kamailio = Kamailio("127.0.0.3", free_port("127.0.0.3"), tmp_path / "kamailio").start()
    yield kamailio
    kamailio.stop()


async def test_phones_register_and_call_through_the_agent(cloud, tmp_path):
    lan = ("127.0.0.1", free_port("127.0.0.1"))
    args = ["--data", str(tmp_path / "data"), "--lan", f"{lan[0]}:{lan[1]}",
            "--wan", f"127.0.0.2:{free_port('127.0.0.2')}", "--cloud", f"sip:{cloud.address}:{cloud.port};transport=tcp"]  # fmt: skip
    agent = AgentProcess(tmp_path, *args)
    try:
        await asyncio.to_thread(agent.wait_notification, "READY", "1")
        await asyncio.to_thread(agent.wait_notification, "STATUS", None)  # the first cloud state change
        assert any(e["new"] == "up" for e in agent.events("cloud state"))
        bo = await phone("register_wait.xml", lan, "102", tmp_path, answers="answer.xml", hold=6)
        await until_registered(bo)
        anna = await phone("register_call.xml", lan, "101", tmp_path, callee="102")
        await anna.finish()
        await ended(bo)  # registered, answered: not the rest of its 6 s hold
        await asyncio.sleep(1.2)  # the mirror is written to the store once a second
    finally:
        code = await asyncio.to_thread(agent.stop)
    assert code == 0
    db = sqlite3.connect(tmp_path / "data" / "vaxelbox.db")
    rows = db.execute("SELECT aor, transport, remote, user_agent FROM binding ORDER BY aor").fetchall()
    db.close()
    assert [(aor, transport) for aor, transport, _, _ in rows] == [
        (f"sip:101@{DOMAIN}", "udp"),
        (f"sip:102@{DOMAIN}", "udp"),
    ]
    assert json.loads(rows[0][2])[0] == "127.0.0.1"
    assert rows[0][3].startswith("Yealink")
    for secret in ("pw-101-secret", "pw-102-secret"):
        assert secret not in agent.output()
