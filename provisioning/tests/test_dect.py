"""DECT bases of all three vendors (issue 14, part 2), fetched with curl from a running agent as
each base: Yealink W70B (and W80B/W90, the same files), snom M900 (M300/M400 alike), Gigaset
N870. One account per handset, named for its user; the base's own settings; every file parses
before it leaves (the service checks it) and a bootstrap carries no secret."""

import re
import xml.etree.ElementTree as ElementTree

import pytest
from test_provisioning_http import Appliance

W70B = "Yealink W70B 146.85.0.40 80:5e:c0:aa:bb:01"
M900 = "Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)"
DECT_PHONES = """
[[phones]]
mac = "80:5e:c0:aa:bb:01"
type = "dect"
vendor = "yealink"
model = "W70B"
handsets = ["anna", "bjorn", "cecilia"]

[[phones]]
mac = "00:04:13:b6:06:80"
type = "dect"
vendor = "snom"
model = "M900"
handsets = ["david", "elin"]
"""


@pytest.fixture
def appliance(tmp_path, demo_text):
    running = Appliance(tmp_path, demo_text + DECT_PHONES)
    yield running
    running.agent.stop()


def passwords(appliance: Appliance, users: list[str]) -> list[str]:
    return [appliance.site.user(u).sip.password.get_secret_value() for u in users]


def test_yealink_w70b_gets_one_account_per_handset_and_names_them(appliance):
    status, common, _ = appliance.curl("http", "y000000000146.cfg", W70B)  # W70B's common file
    assert status == 200
    assert b"account." not in common
    status, boot, _ = appliance.curl("http", "805ec0aabb01.cfg", W70B)
    assert status == 200
    for secret in appliance.site.secrets():
        assert secret.encode() not in boot  # plain HTTP, no window: the bootstrap
    appliance.vaxelbox("enrol", "open", "--mac", "80:5e:c0:aa:bb:01")
    status, body, _ = appliance.curl("https", "805ec0aabb01.cfg", W70B)
    assert status == 200
    text = body.decode()
    settings = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    users = ["anna", "bjorn", "cecilia"]
    for index, (user, secret) in enumerate(zip(users, passwords(appliance, users), strict=True), 1):
        assert settings[f"account.{index}.password"] == secret
        assert settings[f"account.{index}.outbound_proxy.1.address"] == "127.0.0.1"
        extension = appliance.site.user(user).extension
        assert settings[f"handset.{index}.name"].startswith(extension)
        assert settings[f"handset.{index}.incoming_lines"] == str(index)
        assert settings[f"handset.{index}.dial_out_default_line"] == str(index)
    assert "account.4.enable" not in settings
    assert settings["static.auto_provision.handset_configured.enable"] == "1"
    assert settings["custom.handset.language"] == "Swedish"
    assert "linekey." not in text  # a DECT base has no line keys


def test_snom_m900_gets_per_handset_identities_on_the_appliance(appliance):
    status, common, _ = appliance.curl("http", "snomM900.htm", M900)
    assert status == 200
    assert b"user_pass" not in common
    appliance.vaxelbox("enrol", "open", "--mac", "00:04:13:b6:06:80")
    status, body, _ = appliance.curl("https", "snomM900-000413B60680.htm", M900)
    assert status == 200
    root = ElementTree.fromstring(body)
    settings = {(e.tag, e.get("idx")): e.text for e in root.iter() if e.get("idx")}
    users = ["david", "elin"]
    for index, (user, secret) in enumerate(zip(users, passwords(appliance, users), strict=True), 1):
        assert settings[("user_pass", str(index))] == secret
        assert settings[("user_name", str(index))] == appliance.site.user(user).sip.user
        assert settings[("subscr_sip_hs_idx", str(index))] == str(index)
        assert settings[("subscr_sip_ua_data_server_id", str(index))] == "1"
        assert settings[("subscr_dect_ac_code", str(index))] == f"{index:04d}"
    assert settings[("user_outbound", "1")].startswith("127.0.0.1:")
    assert ("user_pass", "3") not in settings
    assert not re.search(rb"user_failover_identity", body)  # desk phones' failover, not the M-series'


def test_dect_bases_are_listed_as_dect_and_assigned_as_handsets(appliance):
    mac, ua = "805ec0aabb77", "Yealink W80B 103.85.0.25 80:5e:c0:aa:bb:77"
    status, _, _ = appliance.curl("http", f"{mac}.cfg", ua)
    assert status == 200
    out = appliance.vaxelbox("phones", "assign", "80:5e:c0:aa:bb:77", "anna", "bjorn")
    assert "is a DECT base (W80B): the users are its handsets" in out
    appliance.vaxelbox("enrol", "open", "--mac", "80:5e:c0:aa:bb:77")
    status, body, _ = appliance.curl("https", f"{mac}.cfg", ua)
    assert status == 200
    assert b"handset.2.name = " in body
