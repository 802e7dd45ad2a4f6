"""Wait timers in bulk (sip.waits): due in order, never early, and the sweeper stops when idle."""

import asyncio

from vaxelbox.sip.waits import SWEEP, Waits


def test_waits_fire_in_order_never_early_and_the_sweeper_stops():
    async def scenario() -> tuple[list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        fired: list[tuple[str, float]] = []
        waits: Waits[str] = Waits(lambda item, name: fired.append((f"{item}:{name}", loop.time() - start)))
        waits.add(0.3, "a", "L")
        waits.add(0.1, "b", "K")
        waits.add(0.3, "c", "M")
        await asyncio.sleep(0.3 + 2 * SWEEP)
        return fired, len(waits) + (waits._sweeper is not None)

    fired, left = asyncio.run(scenario())
    assert [name for name, _ in fired] == ["b:K", "a:L", "c:M"]
    assert all(at >= due for (_, at), due in zip(fired, (0.1, 0.3, 0.3), strict=True))
    assert all(at <= due + 2 * SWEEP for (_, at), due in zip(fired, (0.1, 0.3, 0.3), strict=True))
    assert left == 0  # nothing queued, no sweeper left running
