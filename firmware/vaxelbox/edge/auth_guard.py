"""The auth guard: a phone with a wrong password must not get the office banned by the cloud.

Cloud operators block an address after repeated authentication failures
(fail2ban on the registrar's log, Kamailio's pike). Every phone of an office
shares that address, so one desk retrying REGISTER with a wrong password every
few seconds takes the whole office off the air. The guard counts failures per
(phone, AoR) and, past a threshold, answers that phone's requests itself for a
while instead of relaying them upstream. Sans-I/O: two processors and a table.

- A *failure* is the cloud's 401 to a request that carried Authorization, or
  its 407 to one that carried Proxy-Authorization: the credentials were tried
  and refused. The first challenge of a request without credentials is the
  normal digest round trip, and a challenge with stale=true means the password
  was right but the nonce old: neither counts.
- A phone is the source address of its flow ("ip:port"); its AoR is the To URI
  of a REGISTER, the From URI of anything else.
- FAILURES_TO_HOLD failures within WINDOW seconds *hold* the (phone, AoR) for
  FIRST_HOLD seconds. While held, its requests outside a dialog (REGISTER,
  INVITE, SUBSCRIBE, ...; not ACK, CANCEL or in-dialog requests, so calls in
  progress go on) get 403 from here, with a Reason saying until when, and
  never reach the cloud.
- Release: when the hold is over; when the phone fetched a provisioning file
  after the hold began (new provisioning: its password may have been fixed,
  `provisioned`); or when it sends credentials for another digest username.
  A phone whose password was typed in by hand waits for the hold to end.
- A phone released without having succeeded stays on probation: its next
  failure holds it again at once, each hold twice as long as the one before,
  up to MAX_HOLD. A 2xx from the cloud for the (phone, AoR), or FORGET_AFTER
  seconds without a failure after its last hold ended, wipes its record.

So a phone with a wrong password costs the cloud FAILURES_TO_HOLD failed
attempts (each preceded by its unauthenticated challenge round trip), then one
more per hold: 5, 10, 20, 40 min, then 1 h, at most ~30 failures a day, far
below any fail2ban threshold we know of (commonly 3-10 failures in 10 min).

Hold and release leave one log line each, `auth hold: source=IP phone=IP:PORT
aor=... user=...` (a fail2ban-style key=value line; never the credentials'
response or nonce), and `alarms()` lists the held phones for `vaxelctl status`.
The table lives in memory: a restart forgets it (and costs at most
FAILURES_TO_HOLD more failures per phone).

A test knob, never for an appliance: the environment variable
VAXELBOX_AUTH_GUARD_TIME_SCALE (a factor in (0, 1], default 1) multiplies
WINDOW, FIRST_HOLD, MAX_HOLD and FORGET_AFTER, so an end-to-end test can run
the real sequence (hold, release, hold again) in seconds; the agent logs a
warning when it is set. `make bench` (bench/wrong_password.py) runs the same
phone for 5 minutes with the real timings.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vaxelbox.edge.bindings import bare_uri
from vaxelbox.knobs import knob
from vaxelbox.routing.chain import Next, RequestContext, Target
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.digest import parse_credentials
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.responses import make_response

log = logging.getLogger("vaxelbox.edge.auth_guard")

FAILURES_TO_HOLD = 3  # failed attempts within WINDOW that hold a phone
WINDOW = 300.0  # seconds
FIRST_HOLD = 300.0  # seconds the first hold lasts; each further one doubles it ...
MAX_HOLD = 3600.0  # ... up to this
FORGET_AFTER = 3600.0  # seconds without a failure (after its last hold) that give a phone a clean record
TIME_SCALE_ENV = "VAXELBOX_AUTH_GUARD_TIME_SCALE"  # the test knob above
MAX_RECORDS = 1024  # (phone, AoR) pairs remembered; the longest quiet is forgotten first
NOT_HELD = frozenset({"ACK", "CANCEL"})
REASON = (
    'SIP;cause=403;text="too many authentication failures;'
    ' held by the appliance until {until} or new credentials"'
)

Key = tuple[str, str]  # ("ip:port", AoR)
Provisioned = Callable[[str], float | None]  # phone IP -> when it last fetched a provisioning file (epoch s)


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)  # times of recent failures, epoch seconds
    username: str = ""  # the digest username that failed
    holds: int = 0  # holds so far: the next lasts FIRST_HOLD * 2**holds
    since: float | None = None  # the current hold began at (None: not held)
    until: float = 0.0  # ... and ends at
    suppressed: int = 0  # requests answered here during the current hold
    last_failure: float = 0.0


class AuthGuard:
    """`hold` is a request processor (before `to_cloud`), `observe` a response processor.

    `now` gives epoch seconds (the hold's end is shown as a time of day);
    `provisioned` says when the phone at an IP last fetched a provisioning file. The windows and
    holds are multiplied by TIME_SCALE_ENV when it is set (ValueError unless in (0, 1]).
    """

    def __init__(self, now: Callable[[], float] = time.time, provisioned: Provisioned | None = None) -> None:
        self.now = now
        self.provisioned: Provisioned = provisioned or (lambda ip: None)
        self.on_suppressed: Callable[[], None] = lambda: None  # counted in the cloud's footprint
        self._records: dict[Key, _Record] = {}
        scale = knob(TIME_SCALE_ENV, 1.0, 1.0, "auth guard timings scaled by {}")
        self.window, self.first_hold = WINDOW * scale, FIRST_HOLD * scale  # seconds
        self.max_hold, self.forget_after = MAX_HOLD * scale, FORGET_AFTER * scale

    # -- the request processor ------------------------------------------------------------------

    def hold(self, context: RequestContext) -> Next:
        """Answer a held phone's request here with 403; let everything else go on."""
        request = context.request
        if context.side != "lan" or request.method in NOT_HELD or request.to_tag is not None:
            return Next.CONTINUE
        key = _key(context)
        record = self._records.get(key)
        if record is None or record.since is None:
            return Next.CONTINUE
        if (why := self._release_reason(key, record, request)) is not None:
            self._release(key, record, why)
            return Next.CONTINUE
        record.suppressed += 1
        self.on_suppressed()
        response = make_response(request, 403, "Forbidden")
        response.add("Reason", REASON.format(until=_clock(record.until)))
        context.response = response
        context.route = "held: too many authentication failures"
        return Next.STOP

    def _release_reason(self, key: Key, record: _Record, request: Request) -> str | None:
        assert record.since is not None
        if self.now() >= record.until:
            return "hold over"
        username = _username(request)
        if username is not None and username != record.username:
            return "new credentials"
        fetched = self.provisioned(key[0].rsplit(":", 1)[0])
        if fetched is not None and fetched > record.since:
            return "new provisioning"
        return None

    # -- the response processor -----------------------------------------------------------------

    def observe(self, context: RequestContext, target: Target, response: Response | None) -> None:
        """Count the cloud's refusals of a phone's credentials; a success wipes the phone's record.
        Online only: in local mode the phones authenticate with us, and a trunk's challenge is ours."""
        if (
            response is None
            or target.side != "wan"
            or context.side != "lan"
            or context.mode is not Mode.ONLINE
        ):
            return
        if response.status < 200:
            return
        if response.status < 300:
            if self._records:  # the key parses the From or To: only when there is a record to wipe
                self._records.pop(_key(context), None)
        elif (username := _refused(context.request, response)) is not None:
            self._failed(_key(context), username)

    def _failed(self, key: Key, username: str) -> None:
        now = self.now()
        record = self._records.pop(key, None) or _Record()
        if now - max(record.last_failure, record.until) > self.forget_after:
            record = _Record()
        self._records[key] = record  # most recently failed last, for MAX_RECORDS
        record.failures.append(now)
        while record.failures and record.failures[0] <= now - self.window:
            record.failures.popleft()
        record.last_failure, record.username = now, username
        if record.since is None and (record.holds > 0 or len(record.failures) >= FAILURES_TO_HOLD):
            self._hold(key, record, now)
        while len(self._records) > MAX_RECORDS:
            del self._records[next(iter(self._records))]

    def _hold(self, key: Key, record: _Record, now: float) -> None:
        seconds = min(self.first_hold * 2**record.holds, self.max_hold)
        record.holds += 1
        record.since, record.until, record.suppressed = now, now + seconds, 0
        log.warning(
            "auth hold: source=%s phone=%s aor=%s user=%s failures=%d seconds=%d until=%s",
            key[0].rsplit(":", 1)[0], key[0], key[1], record.username, len(record.failures),
            seconds, _clock(record.until),
        )  # fmt: skip

    def _release(self, key: Key, record: _Record, why: str) -> None:
        log.warning(
            "auth release: source=%s phone=%s aor=%s user=%s reason=%s suppressed=%d",
            key[0].rsplit(":", 1)[0], key[0], key[1], record.username, why, record.suppressed,
        )  # fmt: skip
        record.since = None
        record.failures.clear()

    # -- for vaxelctl status --------------------------------------------------------------------

    def alarms(self) -> list[dict[str, Any]]:
        """The phones held now: [{"kind": "auth-held", "phone": "ip:port", "aor", "username",
        "since", "until" (ISO 8601, local time), "suppressed": requests answered here}]."""
        now = self.now()
        return [
            {
                "kind": "auth-held",
                "phone": phone,
                "aor": aor,
                "username": record.username,
                "since": _iso(record.since),
                "until": _iso(record.until),
                "suppressed": record.suppressed,
            }
            for (phone, aor), record in self._records.items()
            if record.since is not None and record.until > now
        ]


def _key(context: RequestContext) -> Key:
    request = context.request
    address = request.to if request.method == "REGISTER" else request.from_
    host, port = context.flow.remote[:2]
    return f"{host}:{port}", bare_uri(address.uri)


def _refused(request: Request, response: Response) -> str | None:
    """The digest username whose credentials the cloud refused, or None if this is no such refusal."""
    if response.status == 401:
        sent, challenge = "Authorization", "WWW-Authenticate"
    elif response.status == 407:
        sent, challenge = "Proxy-Authorization", "Proxy-Authenticate"
    else:
        return None
    username = _username(request, sent)  # first: most challenges answer a request sent without any
    if username is None or any(_is_stale(value) for value in response.get_all(challenge)):
        return None
    return username


def _username(request: Request, *headers: str) -> str | None:
    """The username of the first Digest credentials in `headers` (both kinds by default), or None."""
    for name in headers or ("Authorization", "Proxy-Authorization"):
        for value in request.get_all(name):
            params = parse_credentials(value)
            if params is not None:
                return params.get("username", "")
    return None


def _is_stale(challenge: str) -> bool:
    params = parse_credentials(challenge)
    return params is not None and params.get("stale", "").lower() == "true"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%H:%M")


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
