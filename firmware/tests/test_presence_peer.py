"""The presence peer on its own (no appliance): Kamailio as a cloud PBX with a presence server.

Phones 101 and 102 register directly at Kamailio (127.0.0.3), sipp watchers
(peers/sipp/watch.xml) subscribe to 102's dialog state there, and 101 calls 102
through Kamailio: pua_dialoginfo publishes the call's states and every watcher
must see them in order. This is the reference the appliance's presence tests
stand on: if these fail, the peer is wrong, not the appliance.
"""

import asyncio
from collections.abc import Callable

import pytest
from peers import Kamailio, Phone, free_port, phone

CLOUD_HOST = "127.0.0.3"
LAMP = "idle,early,confirmed,terminated"  # Kamailio's first NOTIFY has no body: idle


@pytest.fixture
def kamailio(tmp_path):
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), tmp_path / "kamailio", presence=True).start()
    yield cloud
    cloud.stop()


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll `condition()` (a blocking call: run in a thread) until it is true, else fail naming `what`."""
    for _ in range(int(timeout / 0.1)):
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


def registered(kamailio: Kamailio, user: str) -> bool:
    return f"AoR: {user}\n" in kamailio.rpc("ul.dump")  # usrloc keeps AoRs without the domain


@pytest.fixture
async def callee(kamailio, tmp_path):
    """Phone 102 registered at the cloud, answering one call (answer.xml); stopped after the test."""
    bo = await phone(
        "register_wait.xml", (kamailio.address, kamailio.port), "102", tmp_path, answers="answer.xml",
        hold=20, port=free_port("127.0.0.1"),
    )  # fmt: skip
    await until(lambda: registered(kamailio, "102"), "102 registered at the cloud")
    yield bo
    if bo.process.returncode is None:
        bo.process.terminate()
        await bo.process.wait()


async def watcher(kamailio: Kamailio, tmp_path, states: str = LAMP, expires: int = 300) -> Phone:
    cloud = (kamailio.address, kamailio.port)
    return await phone(
        "watch.xml", cloud, "101", tmp_path, callee="102", expires=expires,
        port=free_port("127.0.0.1"), keys={"states": states},
    )  # fmt: skip


async def test_three_watchers_see_a_call_light_early_confirmed_terminated(kamailio, callee, tmp_path):
    cloud = (kamailio.address, kamailio.port)
    watchers = [await watcher(kamailio, tmp_path) for _ in range(3)]
    await until(lambda: kamailio.subscriptions("102") == 3, "three subscriptions to 102")
    assert kamailio.subscribes_received() == 6  # each: challenged, then with credentials
    # The call stays up 1 s: a presence server may fold states that change within milliseconds into
    # one NOTIFY (RFC 6665 lets a notifier rate-limit), and Kamailio did, once in three CI runs.
    anna = await phone(
        "register_call_hold.xml", cloud, "101", tmp_path, callee="102", hold=1, port=free_port("127.0.0.1")
    )
    await asyncio.gather(anna.finish(), *(w.finish() for w in watchers))
    assert kamailio.subscriptions("102") == 0  # every watcher unsubscribed
    assert kamailio.subscribes_received() == 9


async def test_a_watcher_expecting_another_sequence_fails(kamailio, callee, tmp_path):
    """watch.xml checks the order: a lamp expected to skip ringing never completes, and sipp fails."""
    cloud = (kamailio.address, kamailio.port)
    wrong = await phone(
        "watch.xml", cloud, "101", tmp_path, callee="102", timeout=6, port=free_port("127.0.0.1"),
        keys={"states": "idle,confirmed,terminated"},
    )  # fmt: skip
    await until(lambda: kamailio.subscriptions("102") == 1, "one subscription to 102")
    anna = await phone("register_call.xml", cloud, "101", tmp_path, callee="102", port=free_port("127.0.0.1"))
    await anna.finish()
    with pytest.raises(AssertionError, match="sipp exit"):
        await wrong.finish()


async def test_refreshes_are_answered_and_counted(kamailio, tmp_path):
    cloud = (kamailio.address, kamailio.port)
    refreshing = await phone(
        "watch_refresh.xml", cloud, "101", tmp_path, callee="102", expires=60, hold=1,
        port=free_port("127.0.0.1"),
    )  # fmt: skip
    await until(lambda: kamailio.subscriptions("102") == 1, "one subscription to 102")
    await refreshing.finish()
    assert kamailio.subscriptions("102") == 0
    # challenged + with credentials, two refreshes in the dialog, the unsubscribe
    assert kamailio.subscribes_received() == 5
