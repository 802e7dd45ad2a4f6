"""Long timers in bulk: waits that only end a transaction's lingering (RFC 3261 Timers D, I, J, K;
RFC 6026 Timers L and M), and the long guards almost always stopped before they fire (Timers B, F
and H, 64*T1 = 32 s; Timer C, 180 s).

Under load thousands of these run at once, each kind always with the same delay. So they queue in
arrival order, one FIFO per delay, and one event-loop timer sweeps those due, instead of a heap
entry, a timer handle and a context copy each (issue 12: a dozen per call). One fires up to
`SWEEP` seconds late, so only delays of `LONG` or more belong here. A stopped one stays queued,
holding nothing, until its time, until stopped ones are half the queue, or until all are stopped.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vaxelbox.sip.waits")

SWEEP = 0.1  # s between sweeps while any wait is queued
LONG = 4.0  # s: the shortest delay for which SWEEP is close enough (2.5 %)
WAIT_TIMERS = frozenset("DIJKLM")
_COMPACT_AFTER = 256  # stopped entries before a sweep compacts the queues (when half are stopped)


class Wait:
    """One queued timer; `cancel()` stops it and lets go of its callback at once."""

    __slots__ = ("args", "callback", "waits", "when")

    def __init__(
        self, waits: "Waits", when: float, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        self.waits = waits
        self.when = when
        self.callback: Callable[..., None] | None = callback
        self.args = args

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self.args = ()
            self.waits._stopped()


class Waits:
    """`call_later(delay, callback, *args)` as asyncio's, for delays of `LONG` s and more (or any
    delay whose lateness up to SWEEP s does not matter), at a fraction of its cost."""

    def __init__(self) -> None:
        self._queues: dict[float, deque[Wait]] = {}
        self._queued = 0
        self._cancelled = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeper_loop: asyncio.AbstractEventLoop | None = None  # where the sweeper runs

    def __len__(self) -> int:
        """Timers still to fire (stopped ones not counted)."""
        return self._queued - self._cancelled

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Wait:
        # The sweeper's loop while it runs: asyncio.get_running_loop() makes a getpid(2) system
        # call each time (CPython 3.11), a dozen times per call (issue 12).
        loop = self._sweeper_loop if self._sweeper is not None else asyncio.get_running_loop()
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = deque()
        wait = Wait(self, loop.time() + delay, callback, args)
        queue.append(wait)
        self._queued += 1
        if self._sweeper is None:
            self._sweeper, self._sweeper_loop = loop.call_later(SWEEP, self._sweep), loop
        return wait

    def _stopped(self) -> None:
        self._cancelled += 1

    def _sweep(self) -> None:
        loop = self._sweeper_loop
        assert loop is not None
        now = loop.time()
        for queue in list(self._queues.values()):  # a callback may queue a new delay
            while queue and queue[0].when <= now:
                wait = queue.popleft()
                self._queued -= 1
                callback, args = wait.callback, wait.args
                if callback is None:
                    self._cancelled -= 1
                    continue
                wait.callback, wait.args = None, ()  # fired: a late cancel() changes nothing
                try:
                    callback(*args)
                except Exception:  # as asyncio does: one failing callback stops no other timer
                    log.exception("timer callback %r failed", callback)
        if self._cancelled == self._queued or (
            self._cancelled >= _COMPACT_AFTER and 2 * self._cancelled >= self._queued
        ):
            self._compact()  # all stopped (no sweeps for nothing on an idle box), or half of many
        self._sweeper = loop.call_later(SWEEP, self._sweep) if self._queued else None

    def _compact(self) -> None:
        """Drop the stopped entries (here, between callbacks: never while a queue is being swept)."""
        for delay, queue in self._queues.items():
            self._queues[delay] = deque(wait for wait in queue if wait.callback is not None)
        self._queued -= self._cancelled
        self._cancelled = 0
