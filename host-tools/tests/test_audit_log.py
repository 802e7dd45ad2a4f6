"""The agent's log tells an installer's day: one `audit` line per management action (who, what,
result), and none of aiocoap's block-wise and connection chatter at info level.

Real peers: the agent process on loopback, vaxelctl as the installer runs it, aiocoap's own
client for the one action vaxelctl has no command for yet (applying a staged bundle).
"""

import asyncio
import json
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.oscore import FilesystemSecurityContext
from test_management import Appliance, keygen, listed_serial, ok, packed_bundle, paired, vaxelctl
from vaxelbox.mgmt.security import release

OWN_LOGGERS = ("vaxelbox", "phoneprov")


@pytest.fixture
def signing(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "signing.key", tmp_path / "signing.pub")


@pytest.fixture
def day(tmp_path: Path, signing: tuple[Path, Path]) -> tuple[Appliance, Path]:
    """An agent that accepts bundles signed with `signing`, and a laptop paired with it as Lisa."""
    appliance = Appliance(tmp_path, "--fw-key", str(signing[1]))
    laptop = paired(tmp_path / "laptop", appliance, "Lisa")
    yield appliance, laptop
    appliance.stop()


def audits(appliance: Appliance) -> list[dict]:
    return appliance.agent.events("audit")


def library_chatter(events: list[dict]) -> list[dict]:
    """Lines from libraries (aiocoap's loggers are `coap-server...`) at info or below."""
    return [
        e
        for e in events
        if e.get("logger", "").partition(".")[0] not in OWN_LOGGERS and e.get("level") in ("debug", "info")
    ]


def lisas_id(laptop: Path) -> str:
    rows = json.loads(ok(vaxelctl(laptop, "installers", "--json")))
    return next(row["id"] for row in rows if row["name"] == "Lisa")


def push_a_changed_site(laptop: Path, tmp_path: Path) -> None:
    site = tmp_path / "pushed.toml"
    ok(vaxelctl(laptop, "site", "pull", "-o", str(site)))
    site.write_text(site.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    ok(vaxelctl(laptop, "site", "push", str(site)))


def upload_a_bundle(laptop: Path, tmp_path: Path, private: Path) -> None:
    bundle = packed_bundle(laptop, tmp_path, private, "2.0", 600 * 1024)  # several BERT blocks
    ok(vaxelctl(laptop, "fw", "upload", str(bundle)))


def test_a_site_push_and_an_upload_leave_audit_lines_and_no_library_chatter(day, tmp_path, signing):
    appliance, laptop = day
    push_a_changed_site(laptop, tmp_path)
    upload_a_bundle(laptop, tmp_path, signing[0])
    me = lisas_id(laptop)
    appliance.agent.wait_event("audit")
    lines = {e["action"]: e for e in audits(appliance)}
    assert set(lines) == {"pair", "site-push", "fw-upload"}, lines
    for line in lines.values():
        assert (line["installer"], line["installer_name"], line["result"]) == (me, "Lisa", "ok")
        assert line["timestamp"]
    assert lines["site-push"]["site_version"] == 2
    assert (lines["fw-upload"]["version"], lines["fw-upload"]["size"]) == ("2.0", 600 * 1024)
    assert library_chatter(appliance.agent.events()) == []
    remote = [json.loads(line) for line in ok(vaxelctl(laptop, "log", "--json")).splitlines()]
    assert library_chatter(remote) == []
    assert {e["action"] for e in remote if e["event"] == "audit"} == {"pair", "site-push", "fw-upload"}


def test_every_management_action_is_audited_with_who_and_result(day, tmp_path):
    appliance, laptop = day
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    olle = next(
        r["id"] for r in json.loads(ok(vaxelctl(laptop, "installers", "--json"))) if r["name"] == "Olle"
    )
    ok(vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    ok(vaxelctl(laptop, "phones", "unassign", "80:5e:c0:11:22:33"))
    assert vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:34", "gustav").returncode == 1
    ok(vaxelctl(laptop, "enrol", "open", "--minutes", "5"))
    ok(vaxelctl(laptop, "enrol", "close"))
    ok(vaxelctl(laptop, "site", "rollback", "1"))
    ok(vaxelctl(laptop, "mode", "local"))
    ok(vaxelctl(laptop, "installers", "revoke", olle))
    apply_staged_bundle(appliance, laptop)
    me = lisas_id(laptop)
    expected = [
        ("pair", "Lisa", "ok"),
        ("pair", "Olle", "ok"),
        ("phones-assign", "Lisa", "ok"),
        ("phones-unassign", "Lisa", "ok"),
        ("phones-assign", "Lisa", "refused"),
        ("enrol-open", "Lisa", "ok"),
        ("enrol-close", "Lisa", "ok"),
        ("site-rollback", "Lisa", "ok"),
        ("mode", "Lisa", "ok"),
        ("revoke-installer", "Lisa", "ok"),
        ("fw-apply", "Lisa", "refused"),
    ]
    lines = audits(appliance)
    assert [(e["action"], e["installer_name"], e["result"]) for e in lines] == expected
    assert all(e["installer"] == me for e in lines if e["installer_name"] == "Lisa")
    by_action = {(e["action"], e["result"]): e for e in lines}
    assert by_action["phones-assign", "ok"]["mac"] == "80:5e:c0:11:22:33"
    assert "no user 'gustav' in the site" in by_action["phones-assign", "refused"]["reason"]
    assert by_action["site-rollback", "ok"]["to_version"] == 1
    assert by_action["mode", "ok"]["mode"] == "local"
    assert (
        by_action["revoke-installer", "ok"]["revoked"],
        by_action["revoke-installer", "ok"]["revoked_name"],
    ) == (
        olle,
        "Olle",
    )
    assert "upload a bundle first" in by_action["fw-apply", "refused"]["reason"]


def test_a_conflicting_push_is_audited_as_a_conflict_and_no_secret_is_logged(day, tmp_path):
    appliance, laptop = day
    stale = tmp_path / "stale.toml"
    ok(vaxelctl(laptop, "site", "pull", "-o", str(stale)))
    push_a_changed_site(laptop, tmp_path)
    stale.write_text(stale.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Gammal"'))
    assert vaxelctl(laptop, "site", "push", str(stale)).returncode == 1
    pushes = [(e["result"], e.get("reason", "")) for e in audits(appliance) if e["action"] == "site-push"]
    assert [result for result, _ in pushes] == ["ok", "conflict"]
    assert "changed meanwhile" in pushes[1][1]
    secret = json.loads(
        (laptop / "appliances" / listed_serial(laptop) / "oscore" / "secret.json").read_text()
    )
    output = appliance.agent.output()
    assert secret["secret_hex"] not in output
    assert appliance.code() not in output


def apply_staged_bundle(appliance: Appliance, laptop: Path) -> None:
    """POST /fw/update under Lisa's OSCORE context (refused: nothing is staged)."""
    oscore_dir = laptop / "appliances" / listed_serial(laptop) / "oscore"

    async def post() -> Message:
        context = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        security = FilesystemSecurityContext(str(oscore_dir))
        context.client_credentials[appliance.uri("*")] = security
        try:
            return await context.request(Message(code=Code.POST, uri=appliance.uri("fw/update"))).response
        finally:
            await context.shutdown()
            release(security)

    assert asyncio.run(post()).code == Code.SERVICE_UNAVAILABLE
