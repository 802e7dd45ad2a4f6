"""Wait timers in bulk: the timers that only end a transaction's lingering (RFC 3261 Timers D, I,
J, K; RFC 6026 Timers L and M).

Under load thousands of transactions linger at once (every answered call's INVITE transactions
for 64*T1 = 32 s), and each kind of wait always has the same delay. So they queue in arrival order,
one FIFO per delay, and one event-loop timer sweeps those due, instead of a heap entry and a timer
handle each. A wait may end up to `SWEEP` seconds late, which only delays forgetting.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
SWEEP = 0.1  # s between sweeps while any wait is queued
WAIT_TIMERS = frozenset("DIJKLM")


class Waits(Generic[T]):
    """`add(delay, item, name)` queues a wait; `fire(item, name)` is called once it is due."""

    def __init__(self, fire: Callable[[T, str], None]) -> None:
        self._fire = fire
        self._queues: dict[float, deque[tuple[float, T, str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def add(self, delay: float, item: T, name: str) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = deque()
        queue.append((loop.time() + delay, item, name))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP, self._sweep)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for queue in self._queues.values():
            while queue and queue[0][0] <= now:
                _, item, name = queue.popleft()
                self._fire(item, name)
        waiting = any(self._queues.values())
        self._sweeper = loop.call_later(SWEEP, self._sweep) if waiting else None
