"""Suite 6, local survivable mode: the WAN is cut and two phones on the LAN call each other through
the board alone; the WAN comes back, the board fails back, and the phones are on the cloud again.

For the run, the board's site gets a user for each test phone (the SIP
credentials the lab's cloud knows them by: suite 4's phones 101 and 102) and
a 5 s hold-down, pushed as an installer does (vaxelctl site pull, push); the
board's own site comes back afterwards (vaxelctl site rollback), pass or fail.

On the simulated board the cloud also restarts during the cut, forgetting every
registration, so the call through the cloud afterwards reaches phone B only
through the binding the board's failback registered there; there the cloud's
own location table is read too. A real lab's cloud keeps what it had, and the
call proves that the way through it works again.

Timings come from the agent's own log events ("mode", "failback done"),
timestamped on the board, measured from the moment the cable was pulled or
replugged; call setup times from the calling phone's message log.
"""

import asyncio
import datetime
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from peers import USERS, Phone, phone

pytestmark = pytest.mark.lab_needs("HIL_CLOUD", "HIL_WAN_CUT", "HIL_WAN_RESTORE")

CALLER, CALLEE = "101", "102"  # SIP users of phones A and B, known to the lab's cloud (peers.USERS)
HOLD_DOWN = 5  # seconds the cloud must answer before failback, for this run
LOCAL_WITHIN = 5.0  # seconds from the WAN cut to local mode (the cloud is declared down in ~3 s)
EXTENSIONS_FROM = 7101  # where the test phones' extensions are looked for, if the site has no user


def ok(result: Any) -> str:
    assert result.returncode == 0, f"vaxelctl failed ({result.returncode}): {result.stdout}{result.stderr}"
    return result.stdout


def with_test_phones(text: str) -> tuple[str, dict[str, str]]:
    """The pulled site `text` with a user per test phone and a short hold-down; and each phone's
    extension by SIP user. A user the site already has for that SIP user keeps its extension and
    gets the lab's password."""
    site = tomlkit.parse(text)
    users = site.setdefault("users", tomlkit.aot())
    taken = {str(u["extension"]) for u in users} | {str(g["extension"]) for g in site.get("groups", [])}
    extensions = {}
    for sip_user in (CALLER, CALLEE):
        user = next((u for u in users if u["sip"]["user"] == sip_user), None)
        if user is None:
            extension = next(str(n) for n in range(EXTENSIONS_FROM, 99999) if str(n) not in taken)
            taken.add(extension)
            user = tomlkit.table()
            user.update({"id": f"hil-{sip_user}", "name": f"HIL phone {sip_user}", "extension": extension})
            user["sip"] = tomlkit.inline_table()
            users.append(user)
        user["sip"].update({"user": sip_user, "password": USERS[sip_user]})
        extensions[sip_user] = str(user["extension"])
    site.setdefault("local", tomlkit.table())["hold_down"] = HOLD_DOWN
    return tomlkit.dumps(site), extensions


@pytest.fixture
def test_phones_in_site(lab, installer, tmp_path) -> Iterator[dict[str, str]]:
    """The test phones' users in the board's site for this test (SIP user -> extension)."""
    site = tmp_path / "site.toml"
    pulled = json.loads(ok(lab.vaxelctl(installer, "site", "pull", "-o", str(site), "--json")))
    text, extensions = with_test_phones(site.read_text())
    site.write_text(text)
    ok(lab.vaxelctl(installer, "site", "push", str(site)))
    try:
        yield extensions
    finally:
        ok(lab.vaxelctl(installer, "site", "rollback", str(pulled["version"])))


# --- what the phones saw: sipp's message logs (-trace_msg) -----------------------------------------


def messages(phone_: Phone) -> list[tuple[float, str, str]]:
    """(epoch seconds, "sent" | "received", message text) for each message, in order."""
    text = "".join(p.read_text(errors="replace") for p in phone_.workdir.glob("*_messages.log"))
    parts = re.split(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n", text, flags=re.M)
    found = []
    for stamp, body in zip(parts[1::2], parts[2::2], strict=True):
        heading, _, message = body.partition("\n\n")
        at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        found.append((at, "sent" if " sent " in heading else "received", message.strip()))
    return found


def call_setup(phone_: Phone) -> float:
    """Seconds from the phone's first INVITE to the 200 OK that answered it (any challenge included)."""
    log = messages(phone_)
    invited = next(at for at, way, text in log if way == "sent" and text.startswith("INVITE "))
    answered = next(
        at
        for at, way, text in log
        if way == "received"
        and text.startswith("SIP/2.0 200")
        and re.search(r"^CSeq: *\d+ INVITE", text, re.M)
    )
    return answered - invited


def invites_received(phone_: Phone) -> list[str]:
    return [text for _, way, text in messages(phone_) if way == "received" and text.startswith("INVITE ")]


def via_hosts(message: str) -> list[str]:
    """The host of every Via of a SIP message (header lines and comma-separated values alike)."""
    lines = [line for line in message.splitlines() if re.match(r"(Via|v) *:", line, re.I)]
    return re.findall(r"SIP */ *2\.0 */ *[A-Za-z]+ +\[?([^\]:;,\s]+)", "\n".join(lines))


async def registered(phone_: Phone, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(way == "received" and text.startswith("SIP/2.0 200") for _, way, text in messages(phone_)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"phone {phone_.user} was not registered within {timeout} s")


# --- what the board said: its log events -----------------------------------------------------------


async def event_after(lab, shell, name: str, since: float, limit: float, **fields: Any) -> dict[str, Any]:
    """The first event `name` logged since `since` whose fields have these values."""
    deadline = time.time() + limit
    while time.time() < deadline:
        for event in lab.agent_events(shell, name, since):
            if all(event.get(key) == value for key, value in fields.items()):
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"the board never logged {name!r} {fields} (waited {limit} s)")


def mode_now(lab, installer) -> str:
    return json.loads(ok(lab.vaxelctl(installer, "mode", "--json")))["mode"]


async def online(lab, installer, limit: float) -> None:
    """Wait until the board is online (an earlier suite's cut may still be in its hold-down)."""
    deadline = time.monotonic() + limit
    while (mode := mode_now(lab, installer)) != "online":
        assert time.monotonic() < deadline, f"the board is in mode {mode!r}, not online (waited {limit} s)"
        await asyncio.sleep(1)


# --- the step ------------------------------------------------------------------------------------


def test_wan_cut_local_call_then_failback_to_the_cloud(
    lab, shell, installer, test_phones_in_site, measure, tmp_path
):
    assert lab.cloud is not None, "this lab has no cloud PBX: set HIL_CLOUD"
    asyncio.run(run_step(lab, shell, installer, test_phones_in_site, measure, tmp_path))


async def run_step(lab, shell, installer, extensions: dict[str, str], measure, tmp_path: Path) -> None:
    board = (lab.board_lan, 5060)
    a_address, b_address = lab.phone_addresses[0], lab.phone_addresses[-1]

    def lan_phone(scenario: str, user: str, address: str, **kwargs: Any):
        return phone(scenario, board, user, tmp_path, local=address, netns=lab.lan_namespace, **kwargs)

    await online(lab, installer, HOLD_DOWN + 30)
    # Both phones register through the board with the cloud, stay reachable, and answer calls.
    phone_a = await lan_phone(
        "register_wait.xml", CALLER, a_address, answers="answer.xml", hold=90, timeout=120
    )
    phone_b = await lan_phone(
        "register_wait.xml", CALLEE, b_address, answers="answer.xml", hold=90, timeout=120
    )
    try:
        await asyncio.gather(registered(phone_a), registered(phone_b))

        cut_at = time.time()
        lab.cut_wan()
        try:
            local = await event_after(lab, shell, "mode", cut_at, LOCAL_WITHIN + 10, new="local")
            measure(
                "local mode after the WAN cut", f"{local['at'] - cut_at:.1f} s (limit {LOCAL_WITHIN:.0f} s)"
            )
            forgot = lab.forget_registrations()
            # A calls B's extension: registers with the board (401), is challenged for the call (407).
            local_call = await lan_phone("local_call.xml", CALLER, a_address, callee=extensions[CALLEE])
            await local_call.finish()
            measure(
                "local call setup, INVITE -> 407 -> INVITE -> 200", f"{call_setup(local_call) * 1000:.0f} ms"
            )
        finally:
            restored_at = time.time()
            lab.restore_wan()
        cloud_host = socket.gethostbyname(lab.cloud[0])
        (local_invite,) = invites_received(phone_b)  # the local call, past no cloud
        assert cloud_host not in via_hosts(local_invite), local_invite
        assert local["at"] - cut_at <= LOCAL_WITHIN, f"local mode {local['at'] - cut_at:.1f} s after the cut"

        back = await event_after(lab, shell, "mode", restored_at, HOLD_DOWN + 20, new="online")
        measure(
            "online again after the WAN restore",
            f"{back['at'] - restored_at:.1f} s (hold-down {HOLD_DOWN} s)",
        )
        done = await event_after(lab, shell, "failback done", restored_at, 60)
        measure(
            "failback",
            f"{done['registered']} of {done['phones']} bindings registered with the cloud in {done['seconds']:.2f} s "
            f"(peak {done['peak_rate']} REGISTER/s, {done['failures']} failures), "
            f"done {done['at'] - restored_at:.1f} s after the WAN restore",
        )
        assert done["failures"] == 0, done
        assert done["unregistered"] == 0, done
        assert done["registered"] >= 2, done  # phone A's and phone B's bindings at least
        if (contacts := lab.cloud_user_agents()) is not None:  # the failback's REGISTERs, at the cloud
            for user in (CALLER, CALLEE):
                assert any(ua.startswith("Vaxelbox/") for ua in contacts.get(user, [])), contacts

        # A calls B through the cloud: B is reached by the binding failback gave the cloud.
        cloud_call = await lan_phone("register_call.xml", CALLER, a_address, callee=CALLEE)
        await cloud_call.finish()
        measure(
            "call through the cloud after failback, setup",
            f"{call_setup(cloud_call) * 1000:.0f} ms"
            + (" (the cloud restarted during the cut: B's binding there is failback's)" if forgot else ""),
        )
        invites = invites_received(phone_b)
        assert len(invites) == 2, "phone B did not get the call through the cloud"
        assert cloud_host in via_hosts(invites[1]), invites[1]
    finally:
        for phone_ in (phone_a, phone_b):
            if phone_.process.returncode is None:
                phone_.process.kill()
                await phone_.process.wait()
