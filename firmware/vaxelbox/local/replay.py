"""Journal replay: tell the returning cloud PBX what users changed by star code while the office ran locally.

While local, a star code a user dialled (`*21*0701234567#`: forward all
calls) took effect at the appliance and was journaled (store/journal.py).
The cloud knows nothing of it, and once online its own routing would undo
it. So after failback the appliance dials each journaled code to the cloud
as a call from that user, exactly as the phone would have: a star code is
the one interface every cloud PBX offers for these changes, and the cloud
applies its own rules (and its own refusals) to it.

- Order: strictly one entry at a time, oldest first; an entry is finished
  (answered, or given up) before the next one leaves, so `*21*A#` then
  `#21#` reach the cloud in that order, and an entry waiting to be retried
  holds those behind it.
- The call: INVITE sip:<code with '#' as %23>@<cloud domain>, From the
  user's AoR, To the code, a fresh Call-ID per attempt, Contact our WAN
  address, a minimal audio offer, Expires RING_LIMIT. A 401/407 is answered
  once with the user's SIP credentials (CSeq 2).
- A 2xx: the entry is replayed, with the cloud's answer. The call is
  acknowledged (the ACK for a 2xx is sent by us, outside any transaction,
  for each 2xx retransmission too, RFC 3261 §13.2.2.4) and hung up at once
  (BYE): the announcement that confirms a code is for people.
- Any other 3xx-6xx (or a second challenge) is a refusal, and final: the
  cloud's answer is the authority on what its users may do (a 403 for
  `*67*` stays a 403 however often it is asked), so the entry is failed
  with that answer and reported, never retried.
- Transient (no answer, no way to the cloud, 408, 503, 504, a stale nonce):
  retried after BACKOFF (jittered: many appliances may fail back together;
  longer if a 503's Retry-After asks, up to 300 s),
  at most MAX_ATTEMPTS attempts in all, counted in the journal across
  failbacks, then failed with the last answer. Nothing is retried forever.
- A code still unanswered (only provisionals) after RING_LIMIT is cancelled
  (the INVITE's Expires, §13.2.1; §9.1: only once a provisional came), and an
  INVITE with no final answer CANCEL_GRACE later is given up: both transient.
  A 2xx that comes after all is still acknowledged and hung up.
- Pace: at most RATE INVITEs a second (every INVITE: challenge answers and
  retries too); BYE, ACK and CANCEL end calls and are not counted.
- Stop (local mode again): nothing new leaves; an INVITE in flight is seen to
  its final answer (recorded, the call hung up if it was answered), and the
  entries not reached stay pending for the next failback.

`ReplayPlan` is the sans-I/O core (entries in, requests out, answers in,
`Attempt` records out); `ReplayRunner` drives it through the SIP stack over
the upstream's flow. Every attempt is handed to `on_attempt` (the agent
writes it to the journal and logs the finished ones).

A test knob, never for an appliance: the environment variable
VAXELBOX_REPLAY_BACKOFF_SCALE (a factor in (0, 1], default 1) multiplies
BACKOFF, so an end-to-end test sees a retry after about a second instead of
5 s; the agent logs a warning when a plan uses it.
"""

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

from vaxelbox import __version__
from vaxelbox.edge.upstream import Upstream
from vaxelbox.knobs import knob
from vaxelbox.local.registrar import aor_for
from vaxelbox.sip.digest import answerable, authorization, parse_credentials
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.proxy import cancel_for
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.syntax import is_number
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import Uri, parse_uri
from vaxelbox.sip.via import MAGIC_COOKIE, Via
from vaxelbox.site import Site
from vaxelbox.store.journal import JournalEntry

log = logging.getLogger("vaxelbox.local.replay")

RATE = 5.0  # INVITEs per second at most; the journal is small, the cloud is just back
BACKOFF = (5.0, 15.0)  # seconds before the 2nd and the 3rd attempt (each +-20 % jitter)
BACKOFF_SCALE_ENV = "VAXELBOX_REPLAY_BACKOFF_SCALE"  # the test knob above
MAX_ATTEMPTS = len(BACKOFF) + 1
TRANSIENT = frozenset({408, 503, 504})  # the cloud (or a proxy before it) could not take it now
RING_LIMIT = 30  # seconds: the INVITE's Expires; still ringing then, it is cancelled
CANCEL_GRACE = 32.0  # seconds after RING_LIMIT before an INVITE without a final answer is given up
CONNECT_TIMEOUT = 5.0  # seconds to get a flow to the cloud
# Beyond 1/rate, so that a few ms of network jitter cannot put one INVITE too many in a second
# as the cloud sees it.
_MARGIN = 0.01
_CHECK_EVERY = 0.25  # seconds: how often the runner looks at the clock and the mode
USER_GONE = "not placed: the user is no longer in the site"
USER_AGENT = f"Vaxelbox/{__version__} (journal replay)"
# RFC 3261 §25.1 user part: unreserved / user-unreserved stay, everything else ('#') is %-escaped.
_USER_SAFE = "-_.!~*'()&=+$,;?/"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who places an entry's code: the site user's AoR and SIP credentials."""

    aor: str  # sip:<sip.user>@<cloud domain>
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome, for `Journal.attempted` and the log."""

    entry: JournalEntry
    answer: str  # the cloud's answer ("200 OK", "403 Forbidden") or why there was none
    state: str  # "replayed", "failed", or "pending" (retried later, or left for the next failback)
    retry_in: float | None = None  # seconds until the retry, when one is queued

    @property
    def final(self) -> bool:
        return self.state != "pending"


@dataclass
class Steps:
    """What to do now. `invite` starts a client INVITE transaction whose answers go back to
    `on_response` / `on_timeout`; `ack` is sent as it is on the INVITE's flow (no transaction);
    `requests` (BYE, CANCEL) start client transactions whose answers only matter to the log."""

    invite: Request | None = None
    ack: Request | None = None
    requests: list[Request] = field(default_factory=list)
    records: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class ReplayReport:
    entries: int  # pending entries the run started with
    replayed: int
    failed: int
    left: int  # still pending: waiting for a retry, or not reached before a stop
    invites: int  # INVITEs sent
    seconds: float
    stopped: bool

    def as_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)


@dataclass(eq=False)
class _Job:
    """One entry's replay: who dials it, how many attempts it has had, the current attempt."""

    entry: JournalEntry
    caller: Caller | None  # None: the user is no longer in the site
    attempts: int  # in all, the journal's count included
    call_id: str = ""
    from_tag: str = ""
    cseq: int = 0
    answered: bool = False  # this attempt answered a challenge already
    challenge: tuple[str, str] | None = None  # (header, challenge) to answer in the next INVITE
    not_before: float = 0.0
    invite: Request | None = None  # in flight
    sent_at: float = 0.0
    provisional: bool = False
    cancelled: bool = False


def code_uri(code: str, domain: str) -> str:
    """`sip:<code>@<domain>` with the code's '#' (and anything else a user part cannot hold) escaped."""
    return f"sip:{quote(code, safe=_USER_SAFE)}@{domain}"


def callers(site: Site) -> Callable[[str], Caller | None]:
    """Site user id -> the Caller that dials that user's codes (None: no such user any more)."""
    by_id = {user.id: user for user in site.users}

    def caller(user_id: str) -> Caller | None:
        user = by_id.get(user_id)
        if user is None:
            return None
        return Caller(aor_for(user, site), user.sip.user, user.sip.password.get_secret_value())

    return caller


class ReplayPlan:
    """The sans-I/O core. Drive it with `due` (seconds until `next` has an INVITE; None while one
    is in flight), `next`, `on_response` / `on_timeout` (the INVITE's answers), `expire` (the
    ring limit, checked now and then) until `finished`; `stop` ends it early. Times are seconds on
    any monotonic clock."""

    def __init__(
        self,
        entries: Sequence[JournalEntry],
        caller: Callable[[str], Caller | None],
        domain: str,
        wan: tuple[str, int],
        now: float,
        *,
        rate: float = RATE,
        backoff: Sequence[float] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        rng: random.Random | None = None,
    ) -> None:
        """`entries` pending, oldest first; `caller(user id)` finds who dials them; `wan` is where
        the cloud reaches us; `backoff` None: BACKOFF (scaled by BACKOFF_SCALE_ENV when set).
        Raises ValueError unless rate > 0, or when the knob is not a factor in (0, 1]."""
        if not rate > 0:
            raise ValueError(f"the replay rate must be positive, got {rate}")
        self.domain = domain
        self.wan = wan
        self.gap = 1.0 / rate + _MARGIN
        self.backoff = tuple(backoff) if backoff is not None else default_backoff()
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._queue = deque(_Job(e, caller(e.user), e.attempts) for e in entries)
        self._hung_up: set[tuple[str, str]] = set()  # (Call-ID, To tag) of the calls we sent a BYE in
        self._next_invite = -float("inf")
        self.started = self.ended = now
        self.entries = len(self._queue)
        self.replayed = self.failed = self.invites = 0
        self.stopped = False

    # -- what to send ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return not self._queue

    @property
    def in_flight(self) -> bool:
        return bool(self._queue) and self._queue[0].invite is not None

    def due(self, now: float) -> float | None:
        """Seconds until `next` has something (0: now); None while an INVITE is in flight or done."""
        if not self._queue or self.in_flight:
            return None
        return max(0.0, max(self._queue[0].not_before, self._next_invite) - now)

    def next(self, now: float, transport: str) -> Steps:
        """The next INVITE to send now over a flow of `transport` to the cloud (or the record of an
        entry that cannot be placed: its user is gone). Empty when nothing is due."""
        if self.due(now) != 0.0:
            return Steps()
        job = self._queue[0]
        if job.caller is None:
            return Steps(records=[self._finish(job, USER_GONE, now)])
        if not job.call_id:
            self._new_attempt(job)
        job.cseq += 1
        job.invite = self._invite(job, transport)
        job.sent_at, job.provisional, job.cancelled = now, False, False
        self._next_invite = now + self.gap
        self.invites += 1
        return Steps(invite=job.invite)

    def no_flow(self, now: float, reason: str) -> Steps:
        """The due INVITE cannot leave (no way to the cloud): a transient failure of its attempt."""
        if self.due(now) != 0.0:
            return Steps()
        job = self._queue[0]
        if job.caller is None:
            return Steps(records=[self._finish(job, USER_GONE, now)])
        self._next_invite = now + self.gap
        return Steps(records=[self._transient(job, f"no way to the cloud: {reason}", now)])

    def expire(self, now: float) -> Steps:
        """The ring limit: CANCEL a code still ringing, give up an INVITE that never got a final answer."""
        if not self.in_flight:
            return Steps()
        job = self._queue[0]
        assert job.invite is not None
        if now >= job.sent_at + RING_LIMIT + CANCEL_GRACE:
            job.invite = None
            return Steps(records=[self._transient(job, "no final answer", now)])
        if job.provisional and not job.cancelled and now >= job.sent_at + RING_LIMIT:
            job.cancelled = True
            return Steps(requests=[cancel_for(job.invite)])
        return Steps()

    def stop(self, now: float) -> None:
        """Nothing new leaves; the INVITE in flight (if any) is still seen to its final answer."""
        self.stopped = True
        if self.in_flight:
            while len(self._queue) > 1:
                self._queue.pop()
        else:
            self._queue.clear()
            self.ended = now

    # -- what came back -------------------------------------------------------------------------

    def on_response(self, invite: Request, response: Response, now: float) -> Steps:
        """An answer to `invite` (any we sent, this run)."""
        status = response.status
        if 200 <= status < 300:
            return self._accepted(invite, response, now)
        job = self._queue[0] if self._queue else None
        if job is None or job.invite is not invite:
            return Steps()  # late: the attempt is over already
        if status < 200:
            job.provisional = True
            return Steps()
        job.invite = None
        answer = f"{status} {response.reason}"
        if status in (401, 407):
            return self._challenged(job, response, answer, now)
        if status == 487 and job.cancelled:  # our own CANCEL at the ring limit
            return Steps(records=[self._transient(job, f"no final answer within {RING_LIMIT} s", now)])
        if status in TRANSIENT:
            return Steps(records=[self._transient(job, answer, now, _retry_after(response))])
        return Steps(records=[self._finish(job, answer, now)])

    def on_timeout(self, invite: Request, now: float) -> Steps:
        """No answer at all to `invite` (Timer B), or its flow broke."""
        job = self._queue[0] if self._queue else None
        if job is None or job.invite is not invite:
            return Steps()
        job.invite = None
        return Steps(records=[self._transient(job, "no answer", now)])

    def report(self) -> ReplayReport:
        left = self.entries - self.replayed - self.failed
        return ReplayReport(
            self.entries, self.replayed, self.failed, left, self.invites,
            round(self.ended - self.started, 2), self.stopped,
        )  # fmt: skip

    # -- inside ---------------------------------------------------------------------------------

    def _accepted(self, invite: Request, response: Response, now: float) -> Steps:
        """A 2xx: ACK it (every time it comes), hang up (once per dialog), and, if it answers the
        current attempt, the entry is replayed."""
        steps = Steps(ack=ack_for_2xx(invite, response, self.wan))
        dialog = (invite.call_id, response.to_tag or "")
        if dialog not in self._hung_up:
            self._hung_up.add(dialog)
            steps.requests.append(bye_for(invite, response, self.wan))
        job = self._queue[0] if self._queue else None
        if job is not None and job.invite is invite:
            job.invite = None
            steps.records.append(
                self._finish(job, f"{response.status} {response.reason}", now, replayed=True)
            )
        return steps

    def _challenged(self, job: _Job, response: Response, answer: str, now: float) -> Steps:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = answerable(response.get_all(header))
        if self.stopped:  # the cloud has done nothing yet: the entry stays as it was
            self._queue.clear()
            self.ended = now
            return Steps()
        if challenge is not None and not job.answered:
            job.challenge = (header, challenge)
            return Steps()  # answered by the next `next`, paced like any INVITE
        if challenge is not None and (parse_credentials(challenge) or {}).get("stale", "").lower() == "true":
            return Steps(records=[self._transient(job, f"{answer} (stale nonce)", now)])
        return Steps(records=[self._finish(job, answer, now)])

    def _transient(self, job: _Job, answer: str, now: float, at_least: float = 0.0) -> Attempt:
        job.attempts += 1
        if job.attempts >= self.max_attempts:
            return self._finish(job, answer, now)
        if self.stopped:
            self._queue.clear()
            self.ended = now
            return Attempt(job.entry, answer, "pending")
        base = self.backoff[min(job.attempts, len(self.backoff)) - 1]
        delay = max(at_least, base * self._rng.uniform(0.8, 1.2))
        job.not_before = now + delay
        job.call_id = ""  # a retry is a new call
        return Attempt(job.entry, answer, "pending", round(delay, 2))

    def _finish(self, job: _Job, answer: str, now: float, *, replayed: bool = False) -> Attempt:
        """The entry is done: replayed, or failed (refused, out of attempts, or never placeable)."""
        self._queue.popleft()
        if self.stopped:
            self._queue.clear()
        self.ended = now
        if replayed:
            self.replayed += 1
            return Attempt(job.entry, answer, "replayed")
        self.failed += 1
        return Attempt(job.entry, answer, "failed")

    def _new_attempt(self, job: _Job) -> None:
        job.call_id = f"jr-{secrets.token_hex(10)}@{self.wan[0]}"
        job.from_tag = secrets.token_hex(6)
        job.cseq = 0
        job.answered, job.challenge = False, None

    def _invite(self, job: _Job, transport: str) -> Request:
        caller = job.caller
        assert caller is not None
        uri = code_uri(job.entry.code, self.domain)
        headers = [
            _via(transport, self.wan),
            Header("Max-Forwards", "70"),
            Header("From", f"<{caller.aor}>;tag={job.from_tag}"),
            Header("To", f"<{uri}>"),
            Header("Call-ID", job.call_id),
            Header("CSeq", f"{job.cseq} INVITE"),
            Header("Contact", f"<{_contact(self.wan, transport)}>"),
            Header("Expires", str(RING_LIMIT)),
            Header("Allow", "INVITE, ACK, CANCEL, BYE"),
            Header("User-Agent", USER_AGENT),
            Header("Content-Type", "application/sdp"),
        ]
        if job.challenge is not None:
            header, challenge = job.challenge
            job.challenge, job.answered = None, True
            name = "Authorization" if header == "WWW-Authenticate" else "Proxy-Authorization"
            value = authorization(challenge, "INVITE", uri, caller.username, caller.password)
            headers.insert(6, Header(name, value))
        return Request("INVITE", parse_uri(uri), headers, offer(self.wan[0]))


def offer(address: str) -> bytes:
    """A minimal audio offer (PCMA, PCMU). Nothing listens on port 9 (discard): we hang up on
    the answer, so the announcement that follows is never wanted."""
    family = "IP6" if ":" in address else "IP4"
    session = secrets.randbelow(2**31)
    lines = [
        "v=0",
        f"o=vaxelbox {session} {session} IN {family} {address}",
        "s=-",
        f"c=IN {family} {address}",
        "t=0 0",
        "m=audio 9 RTP/AVP 8 0",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def ack_for_2xx(invite: Request, response: Response, wan: tuple[str, int]) -> Request:
    """§13.2.2.4: the ACK for a 2xx: to the remote target along the route set, a new branch, the
    INVITE's CSeq number, To with the answerer's tag, no body (the offer was in the INVITE)."""
    return _in_dialog("ACK", invite, response, wan, invite.cseq[0])


def bye_for(invite: Request, response: Response, wan: tuple[str, int]) -> Request:
    """§15.1.1: the BYE that hangs up the call a 2xx set up (CSeq one more than the INVITE's)."""
    bye = _in_dialog("BYE", invite, response, wan, invite.cseq[0] + 1)
    bye.add("User-Agent", USER_AGENT)
    return bye


def _in_dialog(method: str, invite: Request, response: Response, wan: tuple[str, int], cseq: int) -> Request:
    """A request in the dialog `response` set up (§12.2.1.1): Request-URI the remote target (the
    2xx's Contact, else the INVITE's Request-URI), Route the reversed Record-Route."""
    target: Uri = response.contacts[0].uri if response.contacts else invite.uri
    headers = [
        _via(invite.top_via.transport, wan),
        Header("Max-Forwards", "70"),
        *[Header("Route", str(route)) for route in reversed(response.record_routes)],
        Header("From", invite.get("From") or ""),
        Header("To", response.get("To") or ""),
        Header("Call-ID", invite.call_id),
        Header("CSeq", f"{cseq} {method}"),
    ]
    return Request(method, target, headers)


def _via(transport: str, wan: tuple[str, int]) -> Header:
    host, port = wan
    params: dict[str, str | None] = {"branch": f"{MAGIC_COOKIE}-jr.{secrets.token_hex(8)}", "rport": None}
    if transport.lower() != "udp":
        params["alias"] = None  # RFC 5923: the cloud may send its requests back on this connection
    return Header("Via", str(Via(transport.upper(), host, port, params)))


def _contact(wan: tuple[str, int], transport: str) -> str:
    host, port = wan
    host = f"[{host}]" if ":" in host else host
    return f"sip:{host}:{port};transport={transport.lower()}"


def _retry_after(response: Response) -> float:
    """Seconds a 503's Retry-After asks for (its comment and parameters ignored), at most 300."""
    value = (response.get("Retry-After") or "").split("(")[0].split(";")[0].strip()
    return min(float(value), 300.0) if is_number(value) else 0.0


class ReplayRunner:
    """Drives one `ReplayPlan` through the SIP stack over the upstream's flow to the cloud; hands
    every attempt to `on_attempt`; stops the plan when `active()` turns False."""

    def __init__(
        self,
        stack: SipStack,
        upstream: Upstream,
        active: Callable[[], bool],
        on_attempt: Callable[[Attempt], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self.upstream = upstream
        self.active = active
        self.on_attempt = on_attempt
        self.clock = clock
        self._flow: Flow | None = None  # the flow of the INVITE in flight
        self._wake = asyncio.Event()

    async def run(self, plan: ReplayPlan) -> ReplayReport:
        while not plan.finished:
            if not plan.stopped and not self.active():
                plan.stop(self.clock())
                continue
            self._execute(plan, plan.expire(self.clock()), self._flow)
            wait = plan.due(self.clock())
            if wait is None or wait > 0:
                await self._sleep(_CHECK_EVERY if wait is None else min(wait, _CHECK_EVERY))
                continue
            await self._send_next(plan)
        return plan.report()

    async def _send_next(self, plan: ReplayPlan) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                flow = await self.upstream.flow()
        except (OSError, TimeoutError) as exc:
            self._execute(plan, plan.no_flow(self.clock(), str(exc) or "timeout"), None)
            return
        self._execute(plan, plan.next(self.clock(), flow.transport), flow)

    def _execute(self, plan: ReplayPlan, steps: Steps, flow: Flow | None) -> None:
        """Record, then send: the ACK on `flow` as it is, BYE/CANCEL and the INVITE as transactions."""
        for attempt in steps.records:
            self.on_attempt(attempt)
        if flow is None:
            return
        if steps.ack is not None:
            flow.send(steps.ack.to_bytes())
        for request in steps.requests:
            self.stack.send_request(request, flow, _answer_logger(request), _timeout_logger(request))
        if (invite := steps.invite) is not None:
            self._flow = flow  # where a CANCEL for it must go

            def answered(response: Response) -> None:
                self._execute(plan, plan.on_response(invite, response, self.clock()), flow)
                self._wake.set()

            def timed_out() -> None:
                self._execute(plan, plan.on_timeout(invite, self.clock()), flow)
                self._wake.set()

            self.stack.send_request(invite, flow, answered, timed_out)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass


def _answer_logger(request: Request) -> Callable[[Response], None]:
    def answered(response: Response) -> None:
        if response.status >= 300:
            log.info("journal replay: %s answered %d %s", request.method, response.status, response.reason)

    return answered


def _timeout_logger(request: Request) -> Callable[[], None]:
    return lambda: log.info("journal replay: %s got no answer", request.method)


def default_backoff() -> tuple[float, ...]:
    """BACKOFF in seconds, times BACKOFF_SCALE_ENV when it is set (a test knob, warned about);
    ValueError when that is not a number in (0, 1]."""
    scale = knob(BACKOFF_SCALE_ENV, 1.0, 1.0, "journal replay backoff scaled by {}")
    return BACKOFF if scale == 1.0 else tuple(seconds * scale for seconds in BACKOFF)
