"""SIP PnP for real: the agent in one network namespace, a phone multicasting in another.

No phone runs here, so `pnp_phone.py` plays one (it says so); the appliance
side is the real agent, joined to 224.0.1.75 on its LAN interface.
"""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_process import AgentProcess
from netns import ip, lan_pair
from phoneprov.vendors import load_vendors
from vaxelbox.site import demo_site_text

PHONE_SCRIPT = Path(__file__).with_name("pnp_phone.py")
HTTPS_PORT = 8443


PHONE_HOSTS = range(100, 140)  # each test multicasts from its own address: PnP is rate-limited per source


@pytest.fixture(scope="module")
def network():
    with lan_pair(("edge", "1"), ("phone", "50")) as pair:
        _, phone_ns = pair
        for host in PHONE_HOSTS:
            ip("-n", phone_ns.name, "addr", "add", f"192.0.2.{host}/24", "dev", phone_ns.interface)
        yield pair, itertools.cycle(f"192.0.2.{host}" for host in PHONE_HOSTS)


@pytest.fixture(scope="module")
def agent(network, tmp_path_factory):
    (edge, _), _ = network
    tmp = tmp_path_factory.mktemp("pnp")
    (tmp / "site.toml").write_text(demo_site_text())
    agent = AgentProcess(
        tmp,
        "--site",
        str(tmp / "site.toml"),
        "--data",
        str(tmp / "data"),
        "--lan",
        f"{edge.address}:5060",
        "--wan",
        f"{edge.address}:5062",
        "--cloud",
        f"sip:{edge.address}:5999;transport=tcp",
        "--http-port",
        "8080",
        "--https-port",
        str(HTTPS_PORT),
        wrap=edge.command,
    )
    try:
        agent.wait_notification("READY", "1", timeout=20)
        yield agent
    finally:
        agent.stop()


def phone(network, mac, vendor, form, model="T54W", timeout=2.0) -> dict:
    (_, phone_ns), addresses = network
    argv = [
        sys.executable,
        str(PHONE_SCRIPT),
        "--local",
        next(addresses),
        "--mac",
        mac,
        "--vendor",
        vendor,
        "--model",
        model,
        "--version",
        "1.0",
        "--form",
        form,
        "--timeout",
        str(timeout),
    ]
    result = subprocess.run(phone_ns.command(*argv), capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("form", ["lower", "upper", "bare"])
@pytest.mark.parametrize("vendor", [v for v in load_vendors().values() if v.pnp], ids=lambda v: v.id)
def test_assigned_phone_gets_the_https_url(network, agent, vendor, form):
    (edge, _), _ = network
    mac = "0015654aa937"  # assigned in the demo site
    got = phone(network, mac, vendor.pnp.event_vendors[0], form)
    assert got["status"] == 200
    assert got["content_type"] == "application/url"
    base = f"https://{edge.address}:{HTTPS_PORT}"
    assert got["notify"] == vendor.pnp.url.format(base=base, mac=mac, model="T54W")
    assert got["notify_from"] == edge.address


def test_unassigned_phone_outside_enrolment_gets_no_answer(network, agent):
    got = phone(network, "001565000001", "Yealink", "lower", timeout=1.0)
    assert got == {"status": None, "notify": None, "content_type": None, "notify_from": None}
