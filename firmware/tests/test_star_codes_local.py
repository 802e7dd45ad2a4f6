"""Star codes in local mode, end to end: sipp phones dial codes at the appliance while the cloud is
away; each change takes effect in local routing at once, is journaled, survives a restart, and the
phone hears "answered and ended" or a clear refusal. Real agent, real sipp."""

import pytest
from test_local_mode import Office, ended, heard, offline, until_registered
from vaxelbox.store import Store


@pytest.fixture
async def office(tmp_path):
    running = await offline(tmp_path)
    yield running
    await running.stop()


async def dial(office: Office, user: str, code: str, refused: bool = False) -> str:
    """Dial `code` as `user`; the appliance's answer (its Reason text) as the phone saw it."""
    scenario = "star_code_refused.xml" if refused else "star_code.xml"
    phone = await office.phone(scenario, user, callee=code.replace("#", "%23"))
    await phone.finish()
    trace = "".join(p.read_text(errors="replace") for p in phone.workdir.glob("*_messages.log"))
    reasons = [line for line in trace.splitlines() if line.startswith("Reason:")]
    return reasons[-1] if reasons else ""


async def test_a_forward_set_by_code_routes_at_once_and_is_journaled(office, tmp_path):
    said = await dial(office, "101", "*21*102#")  # anna: forward all calls to bjorn (102)
    assert "forward always to 102" in said
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=8)
    await until_registered(bjorn)
    cecilia = await office.phone("local_call.xml", "103", callee="101")  # to anna -> bjorn
    await cecilia.finish()
    assert await heard(bjorn, {"INVITE": 1}) == {"INVITE": 1}
    await ended(bjorn)
    said = await dial(office, "101", "#21#")
    assert "forward always off" in said
    journal = Store(tmp_path / "data").journal.entries()
    assert [(e.user, e.code, e.state) for e in journal] == [
        ("anna", "*21*102#", "pending"),
        ("anna", "#21#", "pending"),
    ]


async def test_group_log_out_and_in_and_a_refusal_for_a_stranger(office, tmp_path):
    assert "logged out of Reception" in await dial(office, "101", "#75*200#")
    assert "not active" in await dial(office, "103", "*75*200#", refused=True)  # cecilia is no member
    assert "logged in to Reception" in await dial(office, "101", "*75*200#")
    store = Store(tmp_path / "data")
    assert store.users.logged_in("reception", "anna") is True
    assert [e.code for e in store.journal.entries()] == ["#75*200#", "*75*200#"]  # refusals are not changes


async def test_an_activity_with_a_time_and_a_restart_mid_outage(tmp_path):
    office = await offline(tmp_path)
    try:
        said = await dial(office, "102", "*24*1*2#")  # bjorn: lunch for 2 hours
        assert "Lunch until" in said
    finally:
        await office.stop()
    office = await offline(tmp_path)  # the agent restarts while the cloud is still away
    try:
        cecilia = await office.phone("register_wait.xml", "103", answers="answer.xml", hold=8)
        await until_registered(cecilia)
        david = await office.phone("local_call.xml", "104", callee="102")  # bjorn at lunch -> cecilia
        await david.finish()
        assert await heard(cecilia, {"INVITE": 1}) == {"INVITE": 1}
        await ended(cecilia)
        assert [e.code for e in Store(tmp_path / "data").journal.pending()] == ["*24*1*2#"]
    finally:
        await office.stop()


async def test_codes_that_need_the_cloud_and_malformed_codes_are_refused_clearly(office):
    assert "pick up the call ringing at 102 needs the cloud" in await dial(
        office, "101", "*80*102", refused=True
    )
    assert "voicemail" in (await dial(office, "101", "*59*102#", refused=True)).lower()
    assert "not a star code" in await dial(office, "101", "*99#", refused=True)


async def test_bypass_rings_past_an_activity(office, tmp_path):
    """*60*nr# calls a colleague past their activity and forwards (bjorn at lunch forwards to cecilia)."""
    said = await dial(office, "102", "*24*1#")
    assert "Lunch until" in said
    bjorn = await office.phone("register_wait.xml", "102", answers="answer.xml", hold=8)
    await until_registered(bjorn)
    david = await office.phone("local_call.xml", "104", callee="*60*102%23")
    await david.finish()
    assert await heard(bjorn, {"INVITE": 1}) == {"INVITE": 1}
    await ended(bjorn)
