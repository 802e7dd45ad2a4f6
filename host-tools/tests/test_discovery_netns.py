"""Discovery for real: the agent announces itself by mDNS in one network namespace, and vaxelctl
on an installer's laptop in another finds it, pairs and asks for its status."""

import json
import os
import subprocess
import sys

import pytest
from agent_process import AgentProcess
from netns import lan_pair
from vaxelbox.site import demo_site_text

COAP_PORT = 5683


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discovery")
    (tmp / "site.toml").write_text(demo_site_text())
    with lan_pair(("edge", "1"), ("laptop", "60")) as (edge, laptop):
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
            "--coap-port",
            str(COAP_PORT),
            wrap=edge.command,
        )
        try:
            agent.wait_notification("READY", "1", timeout=20)
            yield tmp, edge, laptop, agent
        finally:
            agent.stop()


def vaxelctl(tmp, laptop, *args: str) -> subprocess.CompletedProcess[str]:
    code = "from vaxelctl.cli import main; main()"
    return subprocess.run(
        laptop.command(sys.executable, "-c", code, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(tmp / "laptop-config")},
    )


def test_vaxelctl_discovers_pairs_and_reads_status(office):
    tmp, edge, laptop, agent = office
    found = vaxelctl(tmp, laptop, "discover", "--interface", laptop.address, "--json")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    serial = (tmp / "data" / "mgmt" / "serial").read_text().strip()
    assert [(r["serial"], r["address"], r["port"]) for r in rows] == [(serial, edge.address, COAP_PORT)]
    assert any(e.get("event") == "mDNS announced" for e in agent.events())
    code = subprocess.run(
        [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(tmp / "data")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    paired = vaxelctl(tmp, laptop, "pair", edge.address, "--code", code, "--name", "ladder")
    assert paired.returncode == 0, paired.stderr
    status = vaxelctl(tmp, laptop, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["phones"]["in_site"] == 6
