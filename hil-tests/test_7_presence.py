"""Suite 7, busy lamps (BLF): sipp phones on the LAN watch phone B's line through the board
(Event: dialog, the board is their presence server) while phone A calls B, online and through a WAN
cut.

Each watcher (firmware/tests/peers/sipp/watch.xml, a BLF key of phone A's user) checks on its own
that its lamp went idle, early, confirmed, terminated in that order, every document full and its
version higher than the last, and then unsubscribes. Three rounds:

1. online: two watchers, one call A -> B through the cloud; the cloud holds one subscription to B
   for both (the board's upstream subscription);
2. two watchers subscribed online keep watching through the WAN cut: in local mode A calls B
   through the board alone, and the lamps follow the board's own view of the call;
3. a watcher that subscribed in local mode: after the WAN restore and failback the board
   refreshes the upstream subscription the cloud held through the cut (jittered; no second one
   beside it), A calls B through the cloud again, and when the watcher unsubscribes nothing is left
   at the cloud.

The site gets the test phones' users and a 5 s hold-down as in suite 6 (and is rolled back). The
watchers name B by its extension in the site: the simulated board's demo site has another user
whose extension is B's SIP user (102); upstream, the board names B by its address of record
(sip:102@...). What the cloud's presence server holds is read on the simulated lab only (a real
lab's cloud is not ours to inspect).

Lamp timings come from the phones' message logs (one host's clock): each NOTIFY measured from what
caused it (B's 180, B's 200, A's BYE); mode timings from the board's log events, as in suite 6.
"""

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import test_6_local as local
from peers import DOMAIN, Phone, phone

pytestmark = pytest.mark.lab_needs("HIL_CLOUD", "HIL_WAN_CUT", "HIL_WAN_RESTORE")

CALLER, CALLEE = local.CALLER, local.CALLEE  # phones A and B
LAMP = "idle,early,confirmed,terminated"  # what each watcher's lamp must go through, per call
FIRST_NOTIFY_WITHIN = 5.0  # seconds from a watcher's start to its first NOTIFY
CLOUD_WITHIN = 10.0  # seconds for the cloud's presence server to show a change


@pytest.fixture
def test_phones_in_site(lab, installer, tmp_path) -> Iterator[dict[str, str]]:
    """Suite 6's site for this test: the test phones' users, a 5 s hold-down (SIP user -> extension)."""
    site = tmp_path / "site.toml"
    pulled = json.loads(local.ok(lab.vaxelctl(installer, "site", "pull", "-o", str(site), "--json")))
    text, extensions = local.with_test_phones(site.read_text())
    site.write_text(text)
    local.ok(lab.vaxelctl(installer, "site", "push", str(site)))
    try:
        yield extensions
    finally:
        local.ok(lab.vaxelctl(installer, "site", "rollback", str(pulled["version"])))


# --- what the phones saw ---------------------------------------------------------------------------


def lamps(watcher: Phone) -> list[tuple[float, str]]:
    """(epoch seconds, lamp state) of each dialog-info NOTIFY the watcher received; the state as
    watch.xml reads it: the document's first <state>, "idle" when it lists no dialog."""
    found = []
    for at, way, text in local.messages(watcher):
        if way == "received" and text.startswith("NOTIFY ") and "<dialog-info" in text:
            state = re.search(r"<state[^>]*>\s*([a-z]+)", text)
            found.append((at, state.group(1) if state else "idle"))
    return found


def first_sent(phone_: Phone, pattern: str, since: float) -> float:
    """When `phone_` first sent a message matching `pattern` (a regexp, multiline) at or after `since`."""
    for at, way, text in local.messages(phone_):
        if at >= since and way == "sent" and re.search(pattern, text, re.M):
            return at
    raise AssertionError(f"phone {phone_.user} sent nothing matching {pattern!r} since {since}")


def lamp_delays(watchers: Sequence[Phone], caller: Phone, callee: Phone, since: float) -> dict[str, float]:
    """Seconds from what caused each lamp state to the NOTIFY showing it, the slowest watcher's:
    early after B's 180, confirmed after B's 200 to the INVITE, terminated after A's BYE; of the
    call phone A placed after `since` (epoch seconds, taken before A started).

    Not from A's logged INVITE: sipp stamps a message when it logs it, after sending, so on a busy
    host A's INVITE can be stamped after B's 180 to it (seen: 35 us later)."""
    causes = {
        "early": first_sent(callee, r"\ASIP/2.0 180", since),
        "confirmed": first_sent(callee, r"\ASIP/2.0 200(?s:.*)^CSeq: *\d+ INVITE", since),
        "terminated": first_sent(caller, r"\ABYE ", since),
    }
    delays = {}
    for state, cause in causes.items():
        seen = [next(at for at, lamp in lamps(w) if lamp == state and at >= since) for w in watchers]
        delays[state] = max(seen) - cause
    return delays


def delays_text(delays: dict[str, float], watchers: int) -> str:
    return (
        f"early {delays['early'] * 1000:.1f} ms after B's 180, confirmed {delays['confirmed'] * 1000:.1f} ms "
        f"after B's 200, terminated {delays['terminated'] * 1000:.1f} ms after A's BYE "
        + (f"(the slowest of {watchers} watchers)" if watchers > 1 else "(1 watcher)")
    )


async def notified(watchers: Sequence[Phone], limit: float = FIRST_NOTIFY_WITHIN) -> float:
    """Wait for every watcher's first NOTIFY; the slowest one's seconds after its authenticated SUBSCRIBE."""
    deadline = time.monotonic() + limit
    while not all(lamps(w) for w in watchers):
        for w in watchers:
            if w.process.returncode is not None:
                await w.finish()  # ended early: its verdict and log say why
        assert time.monotonic() < deadline, f"a watcher got no NOTIFY within {limit} s"
        await asyncio.sleep(0.05)
    slowest = 0.0
    for w in watchers:
        first = lamps(w)[0][0]
        subscribed = max(
            at
            for at, way, text in local.messages(w)
            if way == "sent" and text.startswith("SUBSCRIBE ") and at <= first
        )
        slowest = max(slowest, first - subscribed)
    return slowest


async def at_the_cloud(
    lab, resource: str, wanted: Callable[[set[str]], bool], what: str, limit: float = CLOUD_WITHIN
) -> set[str] | None:
    """Wait until the Call-IDs of the cloud's subscriptions to `resource` are `wanted`; them, or None
    where the lab's cloud cannot be looked at. Raises AssertionError after `limit` seconds."""
    deadline = time.monotonic() + limit
    while (held := await asyncio.to_thread(lab.cloud_subscriptions, resource)) is not None:
        if wanted(held):
            return held
        assert time.monotonic() < deadline, f"not within {limit} s: {what}; the cloud holds {held}"
        await asyncio.sleep(0.2)
    return None


# --- the step ------------------------------------------------------------------------------------


def test_busy_lamps_follow_calls_online_and_through_a_wan_cut(
    lab, shell, installer, test_phones_in_site, measure, tmp_path
):
    assert lab.cloud is not None, "this lab has no cloud PBX: set HIL_CLOUD"
    asyncio.run(run_step(lab, shell, installer, test_phones_in_site, measure, tmp_path))


async def run_step(lab, shell, installer, extensions: dict[str, str], measure, tmp_path: Path) -> None:
    board = (lab.board_lan, 5060)
    addresses = lab.phone_addresses
    a_address, b_address = addresses[0], addresses[1 % len(addresses)]
    resource = f"sip:{CALLEE}@{DOMAIN}"  # B's address of record: what the board subscribes to upstream
    failback_window = 2  # seconds: presence.cloud.failback_spread for one watched user
    started: list[Phone] = []

    async def lan_phone(scenario: str, user: str, address: str, **kwargs: Any) -> Phone:
        started.append(
            await phone(scenario, board, user, tmp_path, local=address, netns=lab.lan_namespace, **kwargs)
        )
        return started[-1]

    async def watchers(*slots: int, timeout: float) -> list[Phone]:
        """BLF keys on B (by its extension) of phone A's user, each from its own LAN address."""
        return [
            await lan_phone(
                "watch.xml", CALLER, addresses[slot % len(addresses)],
                callee=extensions[CALLEE], keys={"states": LAMP}, timeout=timeout,
            )
            for slot in slots
        ]  # fmt: skip

    async def call(scenario: str, callee: str, watching: Sequence[Phone]) -> dict[str, float]:
        since = time.time()
        caller = await lan_phone(scenario, CALLER, a_address, callee=callee, hold=1)
        await caller.finish()
        for watcher in watching:
            await watcher.finish()  # its lamp went idle, early, confirmed, terminated, or it failed
        return lamp_delays(watching, caller, phone_b, since)

    await local.online(lab, installer, local.HOLD_DOWN + 30)
    phone_b = await lan_phone(
        "register_wait.xml", CALLEE, b_address, answers="answer.xml", hold=90, timeout=120
    )
    try:
        await local.registered(phone_b)

        # 1. Online: two watchers, one upstream subscription, lamps through a call via the cloud.
        online_watchers = await watchers(2, 3, timeout=30)
        first = await notified(online_watchers)
        measure("BLF: first NOTIFY after a watcher's SUBSCRIBE", f"{first * 1000:.0f} ms (slowest of 2)")
        one = await at_the_cloud(lab, resource, lambda held: len(held) == 1, "one subscription to B")
        if one is not None:
            await asyncio.sleep(1)  # a second upstream subscription would be there by now
            assert await asyncio.to_thread(lab.cloud_subscriptions, resource) == one
            measure("BLF: subscriptions to B at the cloud, 2 watchers", "1")
        delays = await call("register_call.xml", CALLEE, online_watchers)
        measure("BLF: lamps online, NOTIFY", delays_text(delays, 2))
        await at_the_cloud(lab, resource, lambda held: not held, "the subscription ended (nobody watches)")

        # 2. Watchers subscribed online keep their lamps through the WAN cut (the board's own view).
        kept = await watchers(4, 5, timeout=60)
        await notified(kept)
        before_cut = await at_the_cloud(lab, resource, lambda held: len(held) == 1, "one subscription to B")
        cut_at = time.time()
        lab.cut_wan()
        try:
            went_local = await local.event_after(
                lab, shell, "mode", cut_at, local.LOCAL_WITHIN + 10, new="local"
            )
            measure("BLF: local mode after the WAN cut", f"{went_local['at'] - cut_at:.1f} s")
            delays = await call("local_call.xml", extensions[CALLEE], kept)
            measure("BLF: lamps in local mode, NOTIFY", delays_text(delays, 2))
            # 3. A watcher that subscribes during the outage, answered by the board alone.
            (late,) = await watchers(6, timeout=60)
            await notified([late])
        finally:
            restored_at = time.time()
            lab.restore_wan()
        back = await local.event_after(lab, shell, "mode", restored_at, local.HOLD_DOWN + 20, new="online")
        measure(
            "BLF: online again after the WAN restore",
            f"{back['at'] - restored_at:.1f} s (hold-down {local.HOLD_DOWN} s)",
        )
        done = await local.event_after(lab, shell, "failback done", restored_at, 60)
        measure("BLF: failback done after the WAN restore", f"{done['at'] - restored_at:.1f} s")
        if before_cut is not None:  # the subscription the cloud held through the cut, refreshed
            held = await at_the_cloud(lab, resource, lambda held: len(held) == 1, "one subscription to B")
            await asyncio.sleep(failback_window + 1)  # a second one would be there by now
            assert await asyncio.to_thread(lab.cloud_subscriptions, resource) == held
            measure(
                "BLF: subscriptions to B at the cloud after failback",
                "1 ("
                + ("the one from before the cut, refreshed" if held == before_cut else "a new one")
                + ")",
            )
        delays = await call("register_call.xml", CALLEE, [late])
        measure("BLF: lamps online after failback, NOTIFY", delays_text(delays, 1))
        if before_cut is not None:  # nobody watches B any more: nothing is left at the cloud
            await at_the_cloud(lab, resource, lambda held: not held, "no subscription to B left at the cloud")
            measure("BLF: subscriptions to B left at the cloud after the last watcher", "0")
    finally:
        for phone_ in started:
            if phone_.process.returncode is None:
                phone_.process.kill()
                await phone_.process.wait()
