"""Cloud health: the pure state machine, and probes against a Kamailio that dies and returns."""

import asyncio
import time

from peers import Kamailio, free_port
from vaxelbox.edge.health import CloudHealth, CloudProber, CloudState
from vaxelbox.edge.service import Edge, EdgeSettings


def test_one_lost_probe_degrades_three_go_down_two_answers_come_back():
    health = CloudHealth()
    changes = []
    health.subscribe(changes.append)
    health.success(now=1)
    health.failure(now=2)
    assert health.state is CloudState.DEGRADED
    health.success(now=3)
    assert health.state is CloudState.UP
    for t in (4, 5, 6):
        health.failure(now=t)
    assert (health.state, health.since) == (CloudState.DOWN, 6)
    health.success(now=7)
    assert health.state is CloudState.DOWN  # one answer is not enough after an outage
    health.success(now=8)
    assert health.state is CloudState.UP
    assert [(c.old.value, c.new.value) for c in changes] == [
        ("degraded", "up"), ("up", "degraded"), ("degraded", "up"), ("up", "degraded"), ("degraded", "down"), ("down", "up"),
    ]  # fmt: skip
    assert changes[4].reason.endswith("(3 in a row)")


async def test_killing_the_cloud_is_seen_within_5_s_and_its_return_too(tmp_path):
    port = free_port("127.0.0.3")
    cloud = Kamailio("127.0.0.3", port, tmp_path / "kamailio").start()
    edge = Edge(
        EdgeSettings(
            lan=("127.0.0.1", 0), wan=("127.0.0.2", 0), proxies=[f"sip:127.0.0.3:{port};transport=tcp"]
        )
    )
    await edge.start()
    health = CloudHealth()
    prober = CloudProber(edge.stack, edge.upstream, health, edge.addresses.wan, interval=1.0)
    probing = asyncio.create_task(prober.run())
    try:
        await wait_for_state(health, CloudState.UP, 5)
        killed = time.monotonic()
        cloud.stop()
        await wait_for_state(health, CloudState.DOWN, 5)
        detected = time.monotonic() - killed
        assert detected < 5, detected
        cloud = Kamailio("127.0.0.3", port, tmp_path / "kamailio-again").start()
        restarted = time.monotonic()
        await wait_for_state(health, CloudState.UP, 10)
        print(
            f"down detected in {detected:.2f} s, up again {time.monotonic() - restarted:.2f} s after restart"
        )
    finally:
        probing.cancel()
        cloud.stop()
        await edge.stop()


async def wait_for_state(health: CloudHealth, state: CloudState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while health.state is not state:
        assert time.monotonic() < deadline, f"still {health.state} after {timeout} s, wanted {state}"
        await asyncio.sleep(0.05)
