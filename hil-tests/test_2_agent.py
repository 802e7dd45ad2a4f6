"""Suite 2, the agent: running, /dev and /status over CoAP from the LAN, no secrets in its logs."""

import json
import sys

import cbor2
from vaxelbox.site import demo_site_text, parse_site

GET_DEV = """
import asyncio, aiocoap
async def main():
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    request = aiocoap.Message(code=aiocoap.GET, uri="coap://{board}/dev")
    print((await context.request(request).response).payload.hex())
asyncio.run(main())
"""


def test_agent_service_running(shell):
    lines, _, code = shell.run("pgrep -f 'vaxelbox run' | head -1")
    assert code == 0, lines
    assert lines[0].isdigit(), lines


def test_dev_answers_unauthenticated_from_the_lan(lab):
    result = lab.run(sys.executable, "-c", GET_DEV.format(board=lab.board_lan))
    assert result.returncode == 0, result.stderr
    device = cbor2.loads(bytes.fromhex(result.stdout.strip()))
    assert set(device) == {"model", "serial", "firmware"}


def test_status_over_oscore_from_the_lan(lab, installer):
    result = lab.vaxelctl(installer, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["site_version"] >= 1
    assert status["phones"]["in_site"] == 6


def test_logs_carry_no_secrets(lab, shell):
    log = lab.agent_log(shell)
    assert "agent ready" in log
    for secret in parse_site(demo_site_text(), "demo").secrets():
        assert secret not in log, "a site secret is in the agent log"
