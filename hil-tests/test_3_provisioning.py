"""Suite 3, provisioning: a phone on the LAN (curl with a real Yealink User-Agent) gets its
configuration during an enrolment window; an unassigned MAC gets the bootstrap only."""

import json
import tempfile
from pathlib import Path

from vaxelbox.site import demo_site_text, parse_site

YEALINK = ("0015654aa937", "Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37")
UNASSIGNED = ("805ec0998877", "Yealink SIP-T46U 108.86.0.20 80:5e:c0:99:88:77")


def curl(lab, url: str, user_agent: str, *extra: str) -> tuple[int, str]:
    result = lab.run("curl", "-sS", "-A", user_agent, "-w", "\n%{http_code}", *extra, url)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def site_ca(lab) -> Path:
    status, pem = curl(lab, f"http://{lab.board_lan}/ca.pem", "curl/8")
    assert status == 200
    path = Path(tempfile.mkdtemp()) / "ca.pem"
    path.write_text(pem)
    return path


def test_assigned_phone_gets_its_configuration_in_the_window(lab, installer):
    opened = lab.vaxelctl(installer, "enrol", "open", "--minutes", "5", "--json")
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["open"] is True
    mac, agent = YEALINK
    status, body = curl(lab, f"https://{lab.board_lan}/{mac}.cfg", agent, "--cacert", str(site_ca(lab)))
    assert status == 200
    anna = parse_site(demo_site_text(), "demo").user("anna")
    assert f"account.1.password = {anna.sip.password.get_secret_value()}" in body
    assert f"account.1.outbound_proxy.1.address = {lab.board_lan}" in body
    assert "local_time.start_time = 3/5/7/2" in body  # last Sunday of March, 02:00


def test_unassigned_phone_gets_only_the_bootstrap(lab):
    mac, agent = UNASSIGNED
    status, body = curl(lab, f"http://{lab.board_lan}/{mac}.cfg", agent)
    assert status == 200
    for secret in parse_site(demo_site_text(), "demo").secrets():
        assert secret not in body
    assert f"static.auto_provision.server.url = https://{lab.board_lan}/" in body


def test_the_board_recorded_both_phones(lab, installer):
    result = lab.vaxelctl(installer, "phones", "--json")
    assert result.returncode == 0, result.stderr
    seen = {row["mac"]: row for row in json.loads(result.stdout)}
    assert seen["00:15:65:4a:a9:37"]["enrolled"] is True
    assert seen["80:5e:c0:99:88:77"]["assigned"] is None
