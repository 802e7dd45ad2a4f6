"""The cloud's health: OPTIONS probes plus what the relay sees, folded into up / degraded / down.

`CloudHealth` is the pure state machine: a success or a failure at a time
goes in, a state change (if any) comes out. One failure makes the state
degraded, `failures_for_down` in a row make it down (so a single lost probe
never flips it); after down, `successes_for_up` in a row bring it back.
With the default 1 s probe interval and 1 s probe timeout, a cloud that goes
silent is declared down in about 3 s, well inside the 5 s the edge promises.

`CloudProber` sends the probes through the SIP stack, over the same flow the
relay uses, so a dead connection is noticed as one.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from vaxelbox.edge.upstream import Upstream
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.uri import SipUri
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.edge.health")


class CloudState(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Change:
    old: CloudState
    new: CloudState
    at: float
    reason: str


@dataclass
class CloudHealth:
    failures_for_down: int = 3
    successes_for_up: int = 2
    state: CloudState = CloudState.DEGRADED  # not yet confirmed at start
    since: float = field(default_factory=time.time)
    last_success: float | None = None
    last_failure: float | None = None
    _failures: int = 0
    _successes: int = 0
    _observers: list[Callable[[Change], None]] = field(default_factory=list)

    def subscribe(self, observer: Callable[[Change], None]) -> None:
        self._observers.append(observer)

    def success(self, now: float | None = None, reason: str = "cloud answered") -> Change | None:
        now = time.time() if now is None else now
        self.last_success, self._failures = now, 0
        self._successes += 1
        if self.state is CloudState.DOWN and self._successes < self.successes_for_up:
            return None
        return self._become(CloudState.UP, now, reason)

    def failure(self, now: float | None = None, reason: str = "cloud did not answer") -> Change | None:
        now = time.time() if now is None else now
        self.last_failure, self._successes = now, 0
        self._failures += 1
        if self._failures >= self.failures_for_down:
            return self._become(CloudState.DOWN, now, f"{reason} ({self._failures} in a row)")
        if self.state is CloudState.UP:
            return self._become(CloudState.DEGRADED, now, reason)
        return None

    def _become(self, state: CloudState, now: float, reason: str) -> Change | None:
        if state is self.state:
            return None
        change = Change(self.state, state, now, reason)
        self.state, self.since = state, now
        for observer in self._observers:
            observer(change)
        return change


class CloudProber:
    def __init__(
        self, stack: SipStack, upstream: Upstream, health: CloudHealth, wan: tuple[str, int], interval: float
    ) -> None:
        self.stack = stack
        self.upstream = upstream
        self.health = health
        self.wan = wan
        self.interval = interval
        self._sequence = 0

    async def run(self) -> None:
        """Probe forever (until cancelled), one probe per interval."""
        while True:
            started = time.monotonic()
            await self.probe_once()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def probe_once(self) -> bool:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self.interval):
                flow = await self.upstream.flow()
        except (OSError, TimeoutError) as exc:
            self.health.failure(reason=f"cannot reach the cloud: {exc}")
            return False
        answered: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()

        def settle(result: Response | None) -> None:
            if not answered.done():
                answered.set_result(result)

        self.stack.send_request(self._options(flow.transport), flow, settle, lambda: settle(None))
        try:
            async with asyncio.timeout(max(self.interval, 1.0)):
                response = await answered
        except TimeoutError:
            response = None
        if response is None:
            self.health.failure(reason="OPTIONS probe unanswered")
            self.upstream.fail_over()
            return False
        # Any response, even an error, proves the cloud's SIP service is alive.
        self.health.success(reason=f"OPTIONS probe answered {response.status}")
        return True

    def _options(self, transport: str) -> Request:
        self._sequence += 1
        target = self.upstream.target
        assert target is not None, "probing needs a resolved target"
        host, port = self.wan
        via = Via(
            transport.upper(), host, port, {"branch": f"z9hG4bK-probe.{time.monotonic_ns()}", "rport": None}
        )
        headers = [
            Header("Via", str(via)),
            Header("Max-Forwards", "70"),
            Header("From", f"<sip:edge@{host}>;tag=probe{self._sequence}"),
            Header("To", f"<sip:{target.name}>"),
            Header("Call-ID", f"probe-{self._sequence}-{time.monotonic_ns()}@{host}"),
            Header("CSeq", f"{self._sequence} OPTIONS"),
        ]
        uri = SipUri("sip", target.address, target.port, params={"transport": transport})
        return Request("OPTIONS", uri, headers)
