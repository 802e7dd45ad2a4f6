"""One upstream subscription: the appliance as RFC 6665 subscriber to one watched user's dialog
events at the cloud, sans-I/O (times are monotonic seconds passed in, jitter from an injected
`random.Random`; the caller sends what comes back and calls `tick` at `due()`).

- `start`: SUBSCRIBE outside a dialog (Event: dialog, Accept: application/dialog-info+xml, Expires,
  Contact), Timer N (64·T1, §4.1.2.4) armed until the first NOTIFY.
- 2xx: the dialog (as UAC, or the one a NOTIFY already created); the refresh is due at
  granted × uniform(0.6, 0.85), so subscriptions started together do not refresh together.
- 401/407: answered with the credentials (RFC 3261 §22); a challenge to a request that carried
  credentials fails unless it is stale=true with a new nonce (once). A failure waits REFUSED_WAIT.
- 423: the same request again with Expires = Min-Expires.
- 481 to a refresh: the cloud forgot the dialog; a new subscription after uniform(0, 2) s.
- 408, 5xx, 6xx, no answer, Timer N: backoff 5, 10, 20 ... 300 s × uniform(0.8, 1.2), at least
  any Retry-After. A refresh that failed so is retried in the dialog while the subscription lasts.
- 403, 404, 489 and other refusals: REFUSED_WAIT (× uniform(0.8, 1.2)), then a new subscription.
- NOTIFY (§4.1.3): 481 when it is not ours; Subscription-State terminated ends the dialog, then:
  deactivated/timeout → new subscription after uniform(0, 2) s; probation/giveup → after its
  retry-after (or backoff); rejected/noresource/invariant → REFUSED_WAIT; other → backoff.
- `stop`: unsubscribe (Expires: 0) when there is a dialog; `lost`/`resume`: the cloud went away
  and came back: the dialog is forgotten and a new subscription leaves after uniform(0, spread).

`call_id` changes with each new subscription (each fresh Call-ID and From tag).
"""

import random
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from vaxelbox.presence.subscription import contact_value, parse_event
from vaxelbox.sip.dialog import Dialog
from vaxelbox.sip.digest import answerable, authorization, parse_credentials
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.syntax import is_number, value_and_params
from vaxelbox.sip.uri import parse_uri
from vaxelbox.sip.via import Via

EVENT = "dialog"
ACCEPT = "application/dialog-info+xml"
BACKOFF_FIRST = 5.0  # seconds; doubled per failure in a row
BACKOFF_MAX = 300.0
REFUSED_WAIT = 300.0  # seconds after a refusal (403, 404, 489, rejected, failed credentials)
RESUBSCRIBE_JITTER = 2.0  # seconds: deactivated/timeout/481 → a new subscription within this
RETRY_AFTER_MAX = 3600.0
Kind = Literal["initial", "refresh", "unsubscribe"]


class UpstreamState(StrEnum):
    IDLE = "idle"  # not started, or the cloud is gone (`lost`)
    SUBSCRIBING = "subscribing"  # a new subscription's SUBSCRIBE is out
    ACTIVE = "active"  # subscribed (a refresh may be out)
    WAITING = "waiting"  # backing off until `due()`
    STOPPED = "stopped"


@dataclass(frozen=True)
class Credentials:
    """SIP auth user of a site user entitled to watch."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Send:
    """A request for the caller to send on the cloud's flow."""

    request: Request


class UpstreamSubscription:
    """The subscription to one resource at the cloud; see the module docstring."""

    def __init__(
        self,
        resource: str,
        target_uri: str,
        subscriber_uri: str,
        credentials: Credentials,
        contact: str,
        rng: random.Random,
        expires: int = 3600,
        t1: float = 0.5,
    ) -> None:
        """`resource` the site user id; `target_uri` the cloud's URI of that user (Request-URI and
        To); `subscriber_uri` our From; `contact` URI or name-addr; `expires` seconds asked for;
        `t1` seconds (RFC 3261 T1)."""
        self.resource, self.target_uri, self.subscriber_uri = resource, target_uri, subscriber_uri
        self.credentials, self.contact, self.rng, self.t1 = credentials, contact_value(contact), rng, t1
        self.asked = expires
        self.state = UpstreamState.IDLE
        self.call_id = ""
        self.dialog: Dialog | None = None
        self._from_tag = ""
        self._cseq = 0  # CSeq of requests before the dialog exists
        self._pending: Request | None = None
        self._kind: Kind = "initial"
        self._answered: str | None = None  # the nonce the pending request answered
        self._auth_rounds = 0
        self._expires_at: float | None = None
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._timer_n: float | None = None
        self._failures = 0

    # -- what to send ---------------------------------------------------------------------------

    def start(self, now: float, via: Via) -> Request:
        """A new subscription: a fresh Call-ID and From tag, the SUBSCRIBE outside a dialog."""
        self.call_id = f"vxp-{secrets.token_hex(10)}"
        self._from_tag, self._cseq, self.dialog = secrets.token_hex(6), 0, None
        self._expires_at = self._refresh_at = self._retry_at = None
        self.state = UpstreamState.SUBSCRIBING
        self._timer_n = now + 64 * self.t1
        return self._send("initial", via)

    def due(self) -> float | None:
        """When `tick` wants to run next (monotonic seconds), or None."""
        if self.state in (UpstreamState.STOPPED, UpstreamState.IDLE):
            return None
        times = [t for t in (self._timer_n, self._refresh_at, self._retry_at) if t is not None]
        return min(times) if times else None

    def tick(self, now: float, via: Via) -> Request | None:
        """Timer N, a retry or a refresh that is due: the request to send now, or None."""
        if self.state in (UpstreamState.STOPPED, UpstreamState.IDLE):
            return None
        if self._timer_n is not None and now >= self._timer_n:  # no NOTIFY: the subscription failed
            self.dialog = self._pending = None
            self._backoff(now)
            return None
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.dialog is not None and self._expires_at is not None and now < self._expires_at:
                self.state = UpstreamState.ACTIVE
                return self._send("refresh", via)
            return self.start(now, via)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            return self._send("refresh", via)
        return None

    def stop(self, now: float, via: Via) -> Request | None:
        """No phone watches any more: the unsubscribe (Expires: 0) when there is a dialog to end.
        A new subscription still out is unsubscribed when its 2xx comes."""
        live = self.dialog is not None and (self._expires_at is None or now < self._expires_at)
        self.state = UpstreamState.STOPPED
        self._refresh_at = self._retry_at = self._timer_n = None
        return self._send("unsubscribe", via) if live else None

    def lost(self, now: float) -> None:
        """The cloud went away: drop everything pending and wait for `resume`. The dialog is kept
        while its grant runs: the cloud still holds that subscription, and refreshing it on the way
        back (rather than making a second one) leaves no orphan there."""
        if self.state == UpstreamState.STOPPED:
            return
        self._pending = None
        self._refresh_at = self._retry_at = self._timer_n = None
        self._failures = 0
        self.state = UpstreamState.IDLE

    def resume(self, now: float, spread: float) -> None:
        """The cloud is back (after `lost`): after uniform(0, spread) seconds, so the appliance's
        subscriptions do not all arrive at once, the old subscription is refreshed if its grant
        has not run out (a 481 then makes a new one), else a new subscription is made."""
        if self.state == UpstreamState.IDLE:
            self._wait(now, self.rng.uniform(0, spread))

    # -- what came back -------------------------------------------------------------------------

    def on_response(self, request: Request, response: Response, now: float, via: Via) -> Request | None:
        """A final answer to one of our SUBSCRIBEs (others and provisionals are ignored). Returns
        the request to send now (a retry with credentials or a longer Expires), or None."""
        if not self._is_pending(request) or response.status < 200:
            return None
        self._pending = None
        if self.state == UpstreamState.STOPPED:
            return self._after_stop(request, response, via)
        status = response.status
        if status < 300:
            self._accepted(request, response, now)
            return None
        if status in (401, 407):
            return self._challenged(response, now, via)
        if status == 423:
            return self._too_brief(response, now, via)
        if status == 481 and self._kind == "refresh":
            self.dialog = None
            self._wait(now, self.rng.uniform(0, RESUBSCRIBE_JITTER))
        elif status == 408 or status >= 500:
            self._backoff(now, _retry_after(response.get("Retry-After")))
        else:
            self._refused(now)
        return None

    def on_timeout(self, request: Request, now: float) -> None:
        """No answer to `request` (the client transaction timed out, or its flow broke): backoff."""
        if not self._is_pending(request):
            return
        self._pending = None
        if self.state != UpstreamState.STOPPED:
            self._backoff(now)

    def on_notify(self, notify: Request, now: float) -> tuple[Response, bytes | None]:
        """A NOTIFY from the cloud: the response to send and the body (the dialog-info document)
        for the cache, None when there is none or the subscription is stopped."""
        if not self._matches(notify):
            return make_response(notify, 481, "Subscription Does Not Exist"), None
        event = parse_event(notify.get("Event"))
        if event is None or event[0] != EVENT:
            return make_response(notify, 489, "Bad Event"), None
        state = _subscription_state(notify.get("Subscription-State"))
        if state is None:
            return make_response(notify, 400, "Missing Subscription-State"), None
        refusal = self._dialog_for(notify)
        if refusal is not None:
            return refusal, None
        self._timer_n = None
        value, params = state
        stopped = self.state == UpstreamState.STOPPED
        if value == "terminated":
            self._terminated(params, now)
        elif not stopped:
            self._still_active(params, now)
        return make_response(notify, 200, "OK"), None if stopped or not notify.body else notify.body

    # -- inside: responses ----------------------------------------------------------------------

    def _accepted(self, request: Request, response: Response, now: float) -> None:
        granted = _seconds(response.get("Expires"))
        granted = self.asked if granted is None else granted
        if granted == 0:  # granted nothing: a refresh now would only loop
            self._backoff(now)
            return
        try:
            self._establish(request, response)
        except SipSyntaxError:  # a 2xx without Contact: no dialog to refresh in
            self._backoff(now)
            return
        self._failures = 0
        self.state = UpstreamState.ACTIVE
        self._expires_at = now + granted
        self._refresh_at = now + granted * self.rng.uniform(0.6, 0.85)
        self._retry_at = None

    def _establish(self, request: Request, response: Response) -> None:
        """The dialog from a 2xx, or the one a NOTIFY created, brought up to date."""
        if self.dialog is None:
            self.dialog = Dialog.as_uac(request, response)
            return
        self.dialog.refresh_target(response)
        self.dialog.local_cseq = max(self.dialog.local_cseq, request.cseq[0])

    def _challenged(self, response: Response, now: float, via: Via) -> Request | None:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = answerable(response.get_all(header))
        params = parse_credentials(challenge) if challenge is not None else None
        if challenge is None or params is None or not self._may_answer(params):
            self._refused(now)
            return None
        return self._send(self._kind, via, (header, challenge))

    def _may_answer(self, params: dict[str, str]) -> bool:
        """A first challenge, or (once) a stale=true one with a new nonce; never the same nonce."""
        if self._answered is None:
            return True
        stale = params.get("stale", "").lower() == "true"
        return stale and params.get("nonce") != self._answered and self._auth_rounds < 2

    def _too_brief(self, response: Response, now: float, via: Via) -> Request | None:
        minimum = _seconds(response.get("Min-Expires"))
        if minimum is None or minimum <= self.asked:
            self._refused(now)
            return None
        self.asked = minimum
        return self._send(self._kind, via)

    def _after_stop(self, request: Request, response: Response, via: Via) -> Request | None:
        """Stopped: a subscription that was still being set up is ended once it exists; an
        unsubscribe that was challenged is answered."""
        if self._kind == "initial" and response.status < 300:
            try:
                self._establish(request, response)
            except SipSyntaxError:
                return None
            return self._send("unsubscribe", via)
        if self._kind == "unsubscribe" and response.status in (401, 407):
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = answerable(response.get_all(header))
            params = parse_credentials(challenge) if challenge is not None else None
            if challenge is not None and params is not None and self._may_answer(params):
                return self._send("unsubscribe", via, (header, challenge))
        return None

    # -- inside: NOTIFY -------------------------------------------------------------------------

    def _matches(self, notify: Request) -> bool:
        """Ours: our Call-ID and From tag, and the dialog's remote tag (or, before any dialog,
        our new subscription still out, RFC 6665 §4.1.2.4)."""
        if not self.call_id or notify.call_id != self.call_id or notify.to_tag != self._from_tag:
            return False
        if self.dialog is not None:
            return self.dialog.remote_tag in (None, notify.from_tag)
        return self._pending is not None and self._kind == "initial"

    def _dialog_for(self, notify: Request) -> Response | None:
        """Create the dialog from a first NOTIFY, or check the NOTIFY's order in it; the refusal."""
        if self.dialog is None:
            assert self._pending is not None
            try:
                self.dialog = Dialog.as_uac(self._pending, notify)
            except SipSyntaxError:
                return make_response(notify, 400, "Missing Contact")
            return None
        if not self.dialog.accept_remote(notify):
            return make_response(notify, 500, "CSeq Out of Order")
        self.dialog.refresh_target(notify)
        return None

    def _still_active(self, params: dict[str, str | None], now: float) -> None:
        """active/pending: a shorter expires than the 2xx granted brings the refresh forward."""
        expires = _seconds(params.get("expires"))
        if expires is None or self._expires_at is None or now + expires >= self._expires_at:
            return
        self._expires_at = now + expires
        if self._refresh_at is not None:
            self._refresh_at = min(self._refresh_at, now + expires * self.rng.uniform(0.6, 0.85))

    def _terminated(self, params: dict[str, str | None], now: float) -> None:
        self.dialog = self._pending = None
        if self.state == UpstreamState.STOPPED:
            return
        reason = params.get("reason")
        retry_after = _retry_after(params.get("retry-after"))
        if reason in ("deactivated", "timeout"):
            self._wait(now, self.rng.uniform(0, RESUBSCRIBE_JITTER))
        elif reason in ("probation", "giveup") and retry_after:
            self._wait(now, retry_after)
        elif reason in ("rejected", "noresource", "invariant"):
            self._refused(now)
        else:
            self._backoff(now)

    # -- inside: building and waiting -----------------------------------------------------------

    def _send(self, kind: Kind, via: Via, auth: tuple[str, str] | None = None) -> Request:
        """Build the SUBSCRIBE of `kind`, answering `auth` (header name, challenge) if given."""
        request = self._initial(via) if kind == "initial" else self._in_dialog(via, kind)
        if auth is None:
            self._answered, self._auth_rounds = None, 0
        else:
            header, challenge = auth
            name = "Authorization" if header == "WWW-Authenticate" else "Proxy-Authorization"
            user, password = self.credentials.user, self.credentials.password
            request.add(name, authorization(challenge, "SUBSCRIBE", str(request.uri), user, password))
            self._answered = (parse_credentials(challenge) or {}).get("nonce")
            self._auth_rounds += 1
        self._pending, self._kind = request, kind
        return request

    def _initial(self, via: Via) -> Request:
        self._cseq += 1
        headers = [
            Header("Via", str(via)),
            Header("Max-Forwards", "70"),
            Header("From", f"<{self.subscriber_uri}>;tag={self._from_tag}"),
            Header("To", f"<{self.target_uri}>"),
            Header("Call-ID", self.call_id),
            Header("CSeq", f"{self._cseq} SUBSCRIBE"),
            *self._subscribe_headers(self.asked),
        ]
        return Request("SUBSCRIBE", parse_uri(self.target_uri), headers)

    def _in_dialog(self, via: Via, kind: Kind) -> Request:
        assert self.dialog is not None
        expires = 0 if kind == "unsubscribe" else self.asked
        return self.dialog.request("SUBSCRIBE", via, self._subscribe_headers(expires))

    def _subscribe_headers(self, expires: int) -> list[Header]:
        return [
            Header("Contact", self.contact),
            Header("Event", EVENT),
            Header("Accept", ACCEPT),
            Header("Expires", str(expires)),
        ]

    def _is_pending(self, request: Request) -> bool:
        pending = self._pending
        return pending is not None and (request.call_id, request.cseq) == (pending.call_id, pending.cseq)

    def _backoff(self, now: float, at_least: float = 0.0) -> None:
        """Wait 5, 10, 20 ... 300 s (× uniform(0.8, 1.2)) after failures in a row, at least `at_least`."""
        self._failures += 1
        delay = min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX) * self.rng.uniform(0.8, 1.2)
        self._wait(now, max(delay, at_least))

    def _refused(self, now: float) -> None:
        self.dialog = None
        self._wait(now, REFUSED_WAIT * self.rng.uniform(0.8, 1.2))

    def _wait(self, now: float, delay: float) -> None:
        self.state = UpstreamState.WAITING
        self._retry_at = now + delay
        self._refresh_at = self._timer_n = None


def _seconds(value: str | None) -> int | None:
    """A delta-seconds value, or None when absent or malformed."""
    value = (value or "").strip()
    return int(value) if is_number(value) else None


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After (header or parameter) asks for, its comment ignored; at most an hour."""
    seconds = _seconds((value or "").split("(")[0].split(";")[0])
    return min(float(seconds), RETRY_AFTER_MAX) if seconds is not None else 0.0


def _subscription_state(value: str | None) -> tuple[str, dict[str, str | None]] | None:
    """Subscription-State → (lower-case state, parameters), None when absent or malformed."""
    parsed = value_and_params(value)
    return (parsed[0].lower(), parsed[1]) if parsed is not None else None
