"""Failback: once the cloud PBX is back, register every phone with it again, on the phone's behalf.

While the office ran locally the cloud lost track of the phones (their
bindings there expired, or the cloud itself restarted). When the mode goes
local -> online, the appliance registers every binding of its mirror with the
cloud itself, with the SIP credentials it provisioned to that phone, rather
than waiting for the phones' own refreshes, because:

- it paces the cloud's load exactly: at most `rate` REGISTER/s (the site's
  `local.failback_rate`), every REGISTER counted (challenge answers and
  retries too), whereas the phones' refreshes come whenever their timers
  say, in step after a power cut;
- it finishes in a known time: N bindings / rate (2,000 phones at 50/s in
  about 40 s; twice that against a cloud that refuses a reused nonce);
- the phones notice nothing: no request reaches them, and their next refresh
  passes through the edge to a cloud that already has their binding (the
  same contact, as the phone wrote it, so it replaces ours).

Each REGISTER is the one the relay would forward for the phone: Request-URI
`sip:<cloud domain>`, From/To the AoR, the phone's Contact, Path = our WAN
URI with the flow token of the phone's flow (so the cloud's calls come back
through us to that phone), Supported: path, a fresh Call-ID per binding.
Expires is what the phone believes it has left plus a minute, at least
`EXPIRES_FLOOR` (600 s, five times the longest local grant): the cloud must
keep our binding until the phone's own refresh replaces it, and a phone that
died meanwhile should not linger there for an hour.

Digest: the first challenge is answered (CSeq 2), and its nonce is then used
up front for the following bindings with a rising nc, so a cloud that
accepts a reused nonce (Kamailio, Asterisk, our own server) costs one
REGISTER per phone; a cloud that does not simply challenges again. Other
failures (an error response, no answer) are logged, counted, and retried
once after `RETRY_DELAY`; after that the phone's own next refresh is left to
fix it. A binding the phone has meanwhile refreshed through the cloud
itself, or that went away, is skipped.

`FailbackPlan` is the sans-I/O core (bindings in, paced requests out,
responses in, a report out); `FailbackRunner` drives it through the SIP
stack over the upstream's flow and stops when the mode goes local again.
"""

import asyncio
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from vaxelbox import __version__
from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.flowtoken import make_token
from vaxelbox.edge.upstream import Upstream
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.sip.digest import answerable, authorization, parse_credentials
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.syntax import is_number
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import parse_uri
from vaxelbox.sip.via import MAGIC_COOKIE, Via

log = logging.getLogger("vaxelbox.edge.failback")

EXPIRES_FLOOR = 600  # seconds asked of the cloud at least
EXPIRES_GRACE = 60  # seconds beyond what the phone believes it has left
RETRY_DELAY = 5.0  # seconds before the one retry of a failed binding
WINDOW = 1.0  # seconds: never more than the rate in any window this long
# Kept beyond WINDOW so that a few ms of network jitter cannot squeeze one send too many into a
# window as the cloud sees it.
_MARGIN = 0.01
CONNECT_TIMEOUT = 5.0  # seconds to get a flow to the cloud
_CHECK_EVERY = 0.25  # seconds: how often the runner looks whether it should stop


@dataclass(frozen=True, slots=True)
class Restore:
    """One binding to register with the cloud on a phone's behalf."""

    aor: str  # sip:<user>@<cloud domain>
    contact: str  # the bare contact URI: the mirror's key with `aor`
    written: str  # the Contact value as the phone wrote it (no expires)
    transport: str  # the phone's flow, named in the Path token ...
    remote: tuple[str, int]  # ... with the phone's address
    expires: int  # seconds to ask for
    user_agent: str  # the phone's own
    username: str  # digest credentials of the AoR's user
    password: str = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.aor, self.contact


Credentials = Callable[[str], tuple[str, str] | None]  # AoR -> (username, password), None if no user
FlowOf = Callable[[str, tuple[str, int]], Flow | None]  # (transport, address) -> a flow to it


def collect(
    mirror: BindingMirror, credentials: Credentials, flow_of: FlowOf, now: float | None = None
) -> list[tuple[Restore, Flow]]:
    """What to restore: every unexpired binding of the mirror whose AoR has credentials, with the
    phone's flow (the live one it registered on, else a new one to its address). A binding over a
    connection that is gone is left out: the phone reconnects and registers by itself."""
    now = time.time() if now is None else now
    found = []
    for binding in mirror.all():
        secret = credentials(binding.aor)
        left = binding.expires_at - now
        if secret is None or left <= 0:
            continue
        flow = mirror.flow_for(binding.contact) or flow_of(binding.transport, binding.remote)
        if flow is None or not flow.alive:
            continue
        restore = Restore(
            binding.aor, binding.contact, mirror.written_contact(binding.aor, binding.contact),
            binding.transport, binding.remote, max(EXPIRES_FLOOR, math.ceil(left) + EXPIRES_GRACE),
            binding.user_agent, *secret,
        )  # fmt: skip
        found.append((restore, flow))
    return found


class Pacer:
    """When the next REGISTER may leave: gaps uniform in [0.5, 1.5] / `rate` (jitter, so the cloud
    sees no rhythm), and never more than max(1, floor(rate)) sends in any `WINDOW` (a run of short
    gaps must not add up to a burst)."""

    def __init__(self, rate: float, rng: random.Random) -> None:
        """`rate` in REGISTER/s, > 0; raises ValueError otherwise."""
        if not rate > 0:
            raise ValueError(f"the failback rate must be positive, got {rate}")
        self.rate = rate
        self.cap = max(1, math.floor(rate))
        self._rng = rng
        self._recent: deque[float] = deque(maxlen=self.cap)
        self._next = -math.inf

    def next_at(self) -> float:
        """The earliest time of the next send (-inf before the first)."""
        return self._next

    def sent(self, now: float) -> None:
        self._recent.append(now)
        gap = self._rng.uniform(0.5, 1.5) / self.rate
        self._next = now + gap
        if len(self._recent) == self.cap:
            self._next = max(self._next, self._recent[0] + WINDOW + _MARGIN)


class Result(Enum):
    PENDING = "pending"  # provisional, or answered by a retry that is queued
    REGISTERED = "registered"  # the cloud's 2xx: mirror it
    FAILED = "failed"  # this binding is given up


@dataclass(frozen=True)
class FailbackReport:
    phones: int  # bindings to restore (one per AoR and contact)
    registered: int  # the cloud answered 2xx
    skipped: int  # the phone refreshed through the cloud itself first, or the binding went away
    failures: int  # failed attempts: error responses (besides one challenge), no answer, no flow
    unregistered: int  # bindings that failed twice: the phones' own refreshes are left to fix them
    requests: int  # REGISTERs sent
    seconds: float  # from the start to the last answer
    peak_rate: int  # most REGISTERs sent in any WINDOW
    stopped: bool  # cut short: the mode went local again

    def as_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)


@dataclass(eq=False)
class _Job:
    """One binding's registration: its dialog identity and how far it got."""

    restore: Restore
    call_id: str
    from_tag: str
    expires: int
    cseq: int = 0
    retried: bool = False  # the one retry after a failure is used
    answered: bool = False  # this try already answered a fresh challenge (or a 423)
    challenge: tuple[str, str] | None = None  # (header, challenge) to answer in the next send
    not_before: float = 0.0


@dataclass(frozen=True, eq=False)
class Outgoing:
    """A REGISTER to send, and the job it belongs to (hand it back with the answer)."""

    request: Request
    job: _Job

    @property
    def restore(self) -> Restore:
        return self.job.restore

    def for_mirror(self) -> Request:
        """The request as the mirror should see it: with the phone's own User-Agent, not ours."""
        headers = [h for h in self.request.headers if h.key != "user-agent"]
        if self.restore.user_agent:
            headers.append(Header("User-Agent", self.restore.user_agent))
        return Request(self.request.method, self.request.uri, headers)


class FailbackPlan:
    """The sans-I/O core: which REGISTER to send when, and what each answer means.

    Drive it with `due` (seconds to wait), `next` (the request to send now),
    `on_response` / `on_timeout` (its answer), until `finished`; `stop` ends
    it early. Times are seconds on any monotonic clock.
    """

    def __init__(
        self,
        restores: Sequence[Restore],
        domain: str,
        addresses: EdgeAddresses,
        rate: float,
        now: float,
        *,
        rng: random.Random | None = None,
        still_needed: Callable[[Restore], bool] = lambda restore: True,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        """`still_needed(restore)` is asked before each new try; False skips the binding."""
        self._rng = rng or random.Random()
        self.domain = domain
        self.addresses = addresses
        self.pacer = Pacer(rate, self._rng)
        self.started = self.ended = now
        self.still_needed = still_needed
        self.retry_delay = retry_delay
        order = list(restores)
        self._rng.shuffle(order)  # no user is always last
        host = addresses.wan[0]
        self._ready: deque[_Job] = deque(
            _Job(r, f"fb-{secrets.token_hex(10)}@{host}", secrets.token_hex(6), r.expires) for r in order
        )
        self._delayed: list[_Job] = []
        self._in_flight: set[int] = set()
        self._shared: tuple[str, str] | None = None  # (header, challenge) whose nonce we reuse
        self._nc: dict[str, int] = {}  # nonce -> the last nc used with it
        self.sent_at: list[float] = []
        self.phones = len(order)
        self.registered = self.skipped = self.failures = self.unregistered = 0
        self.stopped = False

    # -- what to send ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return not (self._ready or self._delayed or self._in_flight)

    def due(self, now: float) -> float | None:
        """Seconds until `next` has a request (0: now); None while nothing is queued."""
        if self._ready:
            at = self.pacer.next_at()
        elif self._delayed:
            at = max(self.pacer.next_at(), min(job.not_before for job in self._delayed))
        else:
            return None
        return max(0.0, at - now)

    def next(self, now: float, transport: str) -> Outgoing | None:
        """The REGISTER to send now over a flow of `transport` to the cloud, or None if none is due."""
        while (job := self._take(now)) is not None:
            if job.cseq and (job.answered or job.challenge is not None):
                return self._send(job, now, transport)  # the same try goes on
            if self.still_needed(job.restore):
                return self._send(job, now, transport)
            self.skipped += 1
        return None

    def fail_next(self, now: float, reason: str) -> None:
        """The next due request cannot leave (no flow to the cloud): a failed attempt."""
        job = self._take(now)
        if job is not None:
            self.pacer.sent(now)  # keep the pace: the cloud may be back in a moment
            self._failed(job, now, reason)

    def stop(self, now: float) -> None:
        self._ready.clear()
        self._delayed.clear()
        self._in_flight.clear()
        self.stopped = True
        self.ended = now

    # -- what came back -------------------------------------------------------------------------

    def on_response(self, outgoing: Outgoing, response: Response, now: float) -> Result:
        job = outgoing.job
        if response.status < 200 or id(job) not in self._in_flight:
            return Result.PENDING
        self._in_flight.discard(id(job))
        self.ended = now
        if response.status < 300:
            self.registered += 1
            return Result.REGISTERED
        if response.status in (401, 407) and not job.answered:
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = answerable(response.get_all(header))
            if challenge is not None:
                job.challenge = (header, challenge)
                self._ready.appendleft(job)  # answer at once: the nonce is fresh
                return Result.PENDING
        if response.status == 423 and not job.answered and (minimum := _seconds(response, "Min-Expires")):
            job.expires, job.answered = max(job.expires, minimum), True
            self._ready.appendleft(job)
            return Result.PENDING
        return self._failed(job, now, f"{response.status} {response.reason}")

    def on_timeout(self, outgoing: Outgoing, now: float) -> Result:
        job = outgoing.job
        if id(job) not in self._in_flight:
            return Result.PENDING
        self._in_flight.discard(id(job))
        self.ended = now
        return self._failed(job, now, "no answer")

    def report(self) -> FailbackReport:
        return FailbackReport(
            self.phones, self.registered, self.skipped, self.failures, self.unregistered,
            len(self.sent_at), round(self.ended - self.started, 2), peak(self.sent_at), self.stopped,
        )  # fmt: skip

    # -- inside ---------------------------------------------------------------------------------

    def _take(self, now: float) -> _Job | None:
        if self.pacer.next_at() > now:
            return None
        if self._ready:
            return self._ready.popleft()
        ripe = [job for job in self._delayed if job.not_before <= now]
        if not ripe:
            return None
        job = min(ripe, key=lambda j: j.not_before)
        self._delayed.remove(job)
        return job

    def _send(self, job: _Job, now: float, transport: str) -> Outgoing:
        job.cseq += 1
        request = self._request(job, transport)
        self.pacer.sent(now)
        self.sent_at.append(now)
        self._in_flight.add(id(job))
        return Outgoing(request, job)

    def _failed(self, job: _Job, now: float, reason: str) -> Result:
        self.failures += 1
        retry = not job.retried
        log.warning(
            "failback REGISTER failed: aor=%s contact=%s reason=%s %s", job.restore.aor,
            job.restore.contact, reason, f"retry in {self.retry_delay:g} s" if retry else "giving up",
        )  # fmt: skip
        if not retry:
            self.unregistered += 1
            return Result.FAILED
        job.retried, job.answered, job.challenge = True, False, None
        job.not_before = now + self.retry_delay
        self._delayed.append(job)
        return Result.PENDING

    def _request(self, job: _Job, transport: str) -> Request:
        restore = job.restore
        host, port = self.addresses.wan
        params: dict[str, str | None] = {"branch": f"{MAGIC_COOKIE}-fb.{secrets.token_hex(8)}", "rport": None}
        if transport != "udp":
            params["alias"] = None  # RFC 5923: the cloud may answer and call back on this connection
        token = make_token(restore.transport, *restore.remote)
        uri = parse_uri(f"sip:{self.domain}")
        request = Request("REGISTER", uri, [
            Header("Via", str(Via(transport.upper(), host, port, params))),
            Header("Max-Forwards", "70"),
            Header("From", f"<{restore.aor}>;tag={job.from_tag}"),
            Header("To", f"<{restore.aor}>"),
            Header("Call-ID", job.call_id),
            Header("CSeq", f"{job.cseq} REGISTER"),
            Header("Contact", restore.written),
            Header("Path", f"<{self.addresses.uri('wan', transport, token)}>"),
            Header("Supported", "path"),
            Header("Expires", str(job.expires)),
            Header("User-Agent", user_agent(restore.user_agent)),
        ])  # fmt: skip
        if (credentials := self._credentials(job, str(uri))) is not None:
            request.add(*credentials)
        return request

    def _credentials(self, job: _Job, uri: str) -> tuple[str, str] | None:
        """(header, value): the answer to this job's own fresh challenge (which becomes the one to
        reuse), else a reuse of the last challenge's nonce with the next nc, else None."""
        if job.challenge is not None:
            self._shared, job.challenge, job.answered = job.challenge, None, True
            header, challenge = self._shared
            self._nc[_nonce(challenge)] = 1
            nc = 1
        elif self._shared is not None:
            header, challenge = self._shared
            nc = self._nc[_nonce(challenge)] = self._nc.get(_nonce(challenge), 0) + 1
        else:
            return None
        name = "Authorization" if header == "WWW-Authenticate" else "Proxy-Authorization"
        restore = job.restore
        return name, authorization(challenge, "REGISTER", uri, restore.username, restore.password, nc=nc)


class FailbackRunner:
    """Drives one `FailbackPlan` through the SIP stack, over the upstream's flow to the cloud, and
    mirrors each 2xx (so the bindings carry the cloud's expiry). Stops when `active()` turns False."""

    def __init__(
        self,
        stack: SipStack,
        upstream: Upstream,
        mirror: BindingMirror,
        flows: dict[tuple[str, str], Flow],
        active: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`flows` maps each restore's key to the phone's flow (see `collect`)."""
        self.stack = stack
        self.upstream = upstream
        self.mirror = mirror
        self.flows = flows
        self.active = active
        self.clock = clock
        self._wake = asyncio.Event()

    async def run(self, plan: FailbackPlan) -> FailbackReport:
        while not plan.finished:
            if not self.active():
                plan.stop(self.clock())
                break
            wait = plan.due(self.clock())
            if wait is None or wait > 0:
                await self._sleep(_CHECK_EVERY if wait is None else min(wait, _CHECK_EVERY))
                continue
            await self._send_next(plan)
        return plan.report()

    async def _send_next(self, plan: FailbackPlan) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                flow = await self.upstream.flow()
        except (OSError, TimeoutError) as exc:
            plan.fail_next(self.clock(), f"no flow to the cloud: {exc or 'timeout'}")
            return
        outgoing = plan.next(self.clock(), flow.transport)
        if outgoing is None:
            return

        def answered(response: Response) -> None:
            if plan.on_response(outgoing, response, self.clock()) is Result.REGISTERED and not plan.stopped:
                phone = self.flows.get(outgoing.restore.key)
                if phone is not None:
                    self.mirror.update(outgoing.for_mirror(), response, phone)
            self._wake.set()

        def timed_out() -> None:
            plan.on_timeout(outgoing, self.clock())
            self._wake.set()

        self.stack.send_request(outgoing.request, flow, answered, timed_out)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass


def user_agent(phone: str) -> str:
    """Our User-Agent for a REGISTER sent on behalf of a phone whose User-Agent is `phone`: ours, with
    the phone's in a comment (made safe: printable, no parentheses or backslashes, bounded)."""
    safe = "".join(c for c in phone if c.isprintable() and c not in "()\\").strip()[:120]
    return f"Vaxelbox/{__version__} (failback for {safe or 'a phone'})"


def peak(times: Sequence[float], window: float = WINDOW) -> int:
    """The most of `times` (sorted, seconds) that fall in any half-open window [t, t + window)."""
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _nonce(challenge: str) -> str:
    params = parse_credentials(challenge) or {}
    return params.get("nonce", "")


def _seconds(response: Response, header: str) -> int | None:
    value = (response.get(header) or "").strip()
    return int(value) if is_number(value) else None
