"""Suite 4, the relay: sipp phones on the LAN register through the board to Kamailio (the cloud
PBX), call each other, and the board's binding mirror shows them."""

import asyncio
import json

import pytest
from peers import DOMAIN, phone

pytestmark = pytest.mark.lab_needs("HIL_CLOUD")


def test_two_phones_register_and_call_through_the_board(lab, installer, tmp_path):
    assert lab.cloud is not None, "this lab has no cloud PBX: set HIL_CLOUD"
    board = (lab.board_lan, 5060)

    async def call() -> None:
        callee = await phone(
            "register_wait.xml", board, "102", tmp_path, answers="answer.xml", hold=8,
            local=lab.phone_addresses[1], netns=lab.lan_namespace,
        )  # fmt: skip
        await asyncio.sleep(1.5)
        caller = await phone(
            "register_call.xml", board, "101", tmp_path, callee="102",
            local=lab.phone_addresses[0], netns=lab.lan_namespace,
        )  # fmt: skip
        await caller.finish()
        registrations = lab.vaxelctl(installer, "registrations", "--json")
        assert registrations.returncode == 0, registrations.stderr
        aors = {row["aor"] for row in json.loads(registrations.stdout)}
        assert {f"sip:101@{DOMAIN}", f"sip:102@{DOMAIN}"} <= aors
        await callee.finish()

    asyncio.run(call())
