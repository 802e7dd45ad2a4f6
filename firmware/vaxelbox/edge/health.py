"""The cloud's health: OPTIONS probes plus what the relay sees, folded into up / degraded / down.

`CloudHealth` is the pure state machine: a success or a failure at a time
goes in, a state change (if any) comes out. One failure makes the state
degraded, `failures_for_down` in a row make it down (so a single lost probe
never flips it); after down, `successes_for_up` in a row bring it back.
With the default 1 s probe interval, a cloud that goes silent is declared down
within 3 s: the first unanswered probe had 1 s, the two after it (sent at once)
0.5 s each.

A 503 with Retry-After (the cloud overloaded, RFC 3261 §21.5.4) makes the
state degraded, not down: while that wait runs, failures do not add up to down.

`CloudProber` sends the probes through the SIP stack, over the same flow the
relay uses, so a dead connection is noticed as one. It is a quiet client:

- one probe at a time, each sent once (`ProbeTransaction`: no Timer E
  retransmissions, given up after the probe timeout, so nothing of it is left
  sending after the prober has decided);
- while the cloud is down, the wait between probes doubles from the interval
  up to `BACKOFF_CEILING` (8 s), each wait drawn between half and all of that
  (jitter: offices behind one restarting SBC do not probe in step); the first
  answer brings back the normal interval. A returning cloud is thus seen
  within the ceiling plus one normal probe (about 9 s at the default interval),
  and it counts as up one answer later;
- a target held by a Retry-After is not probed; the next one is, or, when all
  are held, the prober waits for the first to be released.

A silent cloud receives 3 probes in the ~3 s it takes to declare it down, then
about one every 6 s (0.2 packets/s over a minute, per appliance).

A test knob, never for an appliance: the environment variable
VAXELBOX_PROBE_BACKOFF_CEILING (seconds, in (0, BACKOFF_CEILING]) lowers the
ceiling, so an end-to-end test sees the same doubling and capping (e.g. 2, 4,
4 s) in half the time; the agent logs a warning when it is set.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from vaxelbox.edge.upstream import CloudBusy, Upstream
from vaxelbox.knobs import knob
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transaction import Action, ClientNonInviteTransaction, Send, StartTimer
from vaxelbox.sip.uri import SipUri
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.edge.health")

BACKOFF_CEILING = 8.0  # seconds: the longest wait between probes to a cloud that is down
CEILING_ENV = "VAXELBOX_PROBE_BACKOFF_CEILING"  # the test knob above


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
    busy_until: float = 0.0  # wall clock: the cloud asked us to wait (503 Retry-After) until then
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
        if now < self.busy_until:  # the cloud said it is overloaded: not a sign that it is gone
            return self._become(CloudState.DEGRADED, now, reason)
        self._failures += 1
        if self._failures >= self.failures_for_down:
            return self._become(CloudState.DOWN, now, f"{reason} ({self._failures} in a row)")
        if self.state is CloudState.UP:
            return self._become(CloudState.DEGRADED, now, reason)
        return None

    def busy(
        self, seconds: float, now: float | None = None, reason: str = "cloud overloaded"
    ) -> Change | None:
        """The cloud answered 503 with Retry-After `seconds`: degraded, not down, until then."""
        now = time.time() if now is None else now
        self.busy_until, self._failures, self._successes = now + seconds, 0, 0
        return self._become(CloudState.DEGRADED, now, f"{reason} (Retry-After {seconds:.0f} s)")

    def _become(self, state: CloudState, now: float, reason: str) -> Change | None:
        if state is self.state:
            return None
        change = Change(self.state, state, now, reason)
        self.state, self.since = state, now
        for observer in self._observers:
            observer(change)
        return change


class ProbeTransaction(ClientNonInviteTransaction):
    """An OPTIONS probe's client transaction: sent once, given up after `timeout` seconds (Timer F
    shortened, no Timer E). A probe asks one thing, whether the cloud answers now; retransmitting
    it for 64*T1 after the prober has moved on only loads a cloud that may be struggling."""

    def __init__(self, request: Request, reliable: bool, timeout: float) -> None:
        super().__init__(request, reliable)
        self.probe_timeout = timeout

    def start(self) -> list[Action]:
        return [Send(self.request), StartTimer("F", self.probe_timeout)]

    def on_timer(self, name: str) -> list[Action]:
        return [] if name == "E" else super().on_timer(name)


@dataclass
class ProbeSchedule:
    """When to probe next (sans-I/O): the interval while the cloud answers or is only degraded;
    while it is down, twice the last wait per unanswered probe up to `ceiling`, jittered."""

    interval: float = 1.0  # seconds
    ceiling: float = BACKOFF_CEILING
    random: Callable[[float, float], float] = random.uniform
    _step: float = 0.0

    def next_wait(self, answered: bool, state: CloudState, suspect: bool = False) -> float:
        """Seconds from this probe's start to the next one's. `suspect`: probes are unanswered but
        not yet enough for down: half the interval, so a silent cloud is declared down within
        3 intervals of going silent (1 + 0.5 + 0.5 for the three misses, plus the wait for the first)."""
        if suspect and not answered and state is not CloudState.DOWN:
            return self.interval / 2
        if answered or state is not CloudState.DOWN:
            self._step = 0.0
            return self.interval
        self._step = min(self.ceiling, 2 * (self._step or self.interval))
        return max(self.interval, self.random(self._step / 2, self._step))


class CloudProber:
    def __init__(
        self,
        stack: SipStack,
        upstream: Upstream,
        health: CloudHealth,
        wan: tuple[str, int],
        interval: float,
        ceiling: float | None = None,
    ) -> None:
        """`interval`: seconds between probes while the cloud answers; `ceiling`: the longest wait
        while it is down (None: from CEILING_ENV, else BACKOFF_CEILING; ValueError when the knob is
        not a number in (0, BACKOFF_CEILING])."""
        ceiling = _ceiling() if ceiling is None else ceiling
        self.stack = stack
        self.upstream = upstream
        self.health = health
        self.wan = wan
        self.interval = interval
        self.schedule = ProbeSchedule(interval, max(ceiling, interval))
        # A Retry-After (to a probe, or to a request the relay hands to upstream.on_response) that
        # leaves no target to use: degraded, not down, for that long.
        upstream.all_held_observers.append(lambda seconds, why: health.busy(seconds, reason=why))
        self._sequence = 0
        self._misses = 0  # probes unanswered in a row

    @property
    def _suspect(self) -> bool:
        """Unanswered lately, but not (yet) as often as it takes to be declared down."""
        return 0 < self._misses < self.health.failures_for_down

    async def run(self) -> None:
        """Probe forever (until cancelled), one probe at a time, on `schedule`."""
        while True:
            started = time.monotonic()
            answered = await self.probe_once()
            self._misses = 0 if answered else self._misses + 1
            wait = self.schedule.next_wait(answered, self.health.state, self._suspect)
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))

    async def probe_once(self) -> bool:
        """Send one probe; True when the cloud answered it (a 503 Retry-After counts as not)."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self.interval):
                flow = await self.upstream.flow()
        except CloudBusy as exc:
            self.health.busy(max(0.0, exc.until - time.monotonic()), reason="cloud asked us to wait")
            await asyncio.sleep(max(0.0, exc.until - time.monotonic()))  # nothing to probe until then
            return False
        except (OSError, TimeoutError) as exc:
            self.health.failure(reason=f"cannot reach the cloud: {exc}")
            return False
        answered: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()

        def settle(result: Response | None) -> None:
            if not answered.done():
                answered.set_result(result)

        # After a miss, the next probes settle faster (half the interval): the first had the whole
        # interval to come back, so a slow link is not taken for a dead one, and detection stays
        # within about 3 intervals of the silence.
        timeout = self.interval / 2 if self._suspect else max(self.interval, 1.0)
        request = self._options(flow.transport)
        probe = ProbeTransaction(request, flow.reliable, timeout)
        self.stack.send_request(request, flow, settle, lambda: settle(None), machine=probe)
        try:
            async with asyncio.timeout(timeout + 0.5):  # a guard: Timer F settles it first
                response = await answered
        except TimeoutError:
            response = None
        if response is None:
            self.health.failure(reason="OPTIONS probe unanswered")
            self.upstream.fail_over()
            return False
        if self.upstream.on_response(response, flow.remote) is not None:
            return False  # held: the next target is probed next; with none left, health was told
        # Any other response, even an error, proves the cloud's SIP service is alive.
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


def _ceiling() -> float:
    """CEILING_ENV in seconds (BACKOFF_CEILING when unset); ValueError unless in (0, BACKOFF_CEILING]."""
    return knob(CEILING_ENV, BACKOFF_CEILING, BACKOFF_CEILING, "probe backoff ceiling {} s")
