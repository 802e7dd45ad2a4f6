"""Long timers in bulk (sip.waits): due in order, never early and at most a sweep late; a stopped
one never fires and lets go of what it held; stopped ones do not pile up; the sweeper stops when
idle. Real event loop, real time (short delays: the queue does not care how long)."""

import asyncio
import gc
import weakref

from vaxelbox.sip import waits as waits_module
from vaxelbox.sip.waits import SWEEP, Waits


def test_waits_fire_in_order_never_early_and_the_sweeper_stops():
    async def scenario() -> tuple[list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        fired: list[tuple[str, float]] = []
        waits = Waits()
        for delay, name in ((0.3, "a:L"), (0.1, "b:K"), (0.3, "c:M")):
            waits.call_later(delay, lambda name: fired.append((name, loop.time() - start)), name)
        await asyncio.sleep(0.3 + 2 * SWEEP)
        return fired, len(waits) + (waits._sweeper is not None)

    fired, left = asyncio.run(scenario())
    assert [name for name, _ in fired] == ["b:K", "a:L", "c:M"]
    assert all(at >= due for (_, at), due in zip(fired, (0.1, 0.3, 0.3), strict=True))
    assert all(at <= due + 2 * SWEEP for (_, at), due in zip(fired, (0.1, 0.3, 0.3), strict=True))
    assert left == 0  # nothing queued, no sweeper left running


class Held:
    """Something a timer's callback holds (a transaction, a call): freed once the timer is stopped."""


def test_a_stopped_wait_never_fires_and_lets_go_at_once():
    async def scenario() -> tuple[list[str], bool, int]:
        fired: list[str] = []
        waits = Waits()
        held = Held()
        gone = weakref.ref(held)
        stopped = waits.call_later(0.2, lambda item: fired.append("stopped"), held)
        waits.call_later(0.2, fired.append, "kept")
        del held
        stopped.cancel()
        stopped.cancel()  # twice: counted once
        gc.collect()
        freed = gone() is None
        await asyncio.sleep(0.2 + 2 * SWEEP)
        return fired, freed, len(waits)

    fired, freed, left = asyncio.run(scenario())
    assert fired == ["kept"]
    assert freed
    assert left == 0


def test_stopped_waits_are_compacted_away_long_before_their_time(monkeypatch):
    """A flood of calls each stopping its 32 s Timer B within milliseconds must not keep one queue
    entry per call for 32 s: once stopped ones are half the queue, a sweep drops them."""
    monkeypatch.setattr(waits_module, "_COMPACT_AFTER", 10)

    async def scenario() -> tuple[int, int, list[int]]:
        waits = Waits()
        fired: list[int] = []
        handles = [waits.call_later(30.0, fired.append, n) for n in range(100)]
        for handle in handles[:90]:
            handle.cancel()
        await asyncio.sleep(2 * SWEEP)
        queued = sum(len(queue) for queue in waits._queues.values())
        live = len(waits)
        for handle in handles[90:]:
            handle.cancel()
        return queued, live, fired

    queued, live, fired = asyncio.run(scenario())
    assert (queued, live) == (10, 10)
    assert fired == []


def test_a_callback_may_queue_and_stop_others_while_the_sweep_runs():
    async def scenario() -> list[str]:
        waits = Waits()
        fired: list[str] = []
        later = waits.call_later(0.3, fired.append, "stopped by the first")

        def first() -> None:
            fired.append("first")
            later.cancel()
            waits.call_later(0.15, fired.append, "queued by the first")  # a delay not seen before

        waits.call_later(0.05, first)
        await asyncio.sleep(0.3 + 3 * SWEEP)
        return fired

    assert asyncio.run(scenario()) == ["first", "queued by the first"]


def test_a_failing_callback_is_logged_and_stops_no_other_timer(caplog):
    """As with asyncio's own timers: a bug in one callback (a ring-timeout handler) must not stop
    the sweep, or no long timer would ever fire again (found by helper-51)."""

    async def scenario() -> tuple[list[str], int, bool]:
        waits = Waits()
        fired: list[str] = []

        def failing() -> None:
            raise RuntimeError("a bug in a ring-timeout handler")

        waits.call_later(0.05, failing)
        waits.call_later(0.05, fired.append, "due with it")
        waits.call_later(0.3, fired.append, "timer B of another call")
        await asyncio.sleep(0.3 + 2 * SWEEP)
        waits.call_later(0.1, fired.append, "queued afterwards")
        await asyncio.sleep(0.1 + 2 * SWEEP)
        return fired, len(waits), waits._sweeper is None

    fired, left, idle = asyncio.run(scenario())
    assert fired == ["due with it", "timer B of another call", "queued afterwards"]
    assert (left, idle) == (0, True)
    assert "a bug in a ring-timeout handler" in caplog.text


def test_when_every_queued_timer_is_stopped_the_sweeper_stops():
    """Stopped timers (a quiet box's last Timer C, 180 s) do not keep a sweep running 10 times a
    second until they would have been due."""

    async def scenario() -> bool:
        waits = Waits()
        for handle in [waits.call_later(180.0, print, n) for n in range(3)]:
            handle.cancel()
        await asyncio.sleep(2 * SWEEP)
        return waits._sweeper is None and not waits._queues[180.0]

    assert asyncio.run(scenario())
