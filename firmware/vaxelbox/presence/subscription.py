"""Watchers' subscriptions: the appliance as the RFC 6665 notifier, sans-I/O.

`Notifier.subscribe` judges a SUBSCRIBE and answers it; `Notifier.notify` builds each NOTIFY; the
caller (presence/server.py) sends them and reports how each NOTIFY fared (`on_notify_result`).

- New subscription (SUBSCRIBE without To tag): 489 with Allow-Events for an event we do not serve
  (or none), 423 with Min-Expires when 0 < Expires < min_expires, 400 without Contact or with a
  malformed Expires; otherwise 200 with Expires (clamped to max_expires; default_expires when
  absent), our Contact and a To tag. Expires 0 is a fetch: 200, and the subscription comes back
  already terminated, for its one NOTIFY (RFC 6665 §4.4.3).
- In-dialog SUBSCRIBE: 481 for an unknown dialog (or another event/id in it), 500 when its CSeq is
  not higher than the last one (§12.2.2; a retransmission never gets this far), else a refresh
  (the Contact is a target refresh, the flow it came in on replaces the old one) or, with
  Expires 0, the end: 200 and one final NOTIFY terminated;reason=timeout (§4.2.1.4).
- After every 2xx the caller sends a NOTIFY at once with the full state (§4.2.1.2).
- NOTIFY (§4.2.2): to the watcher's Contact along the route set (never to the address the
  SUBSCRIBE came from: that is only the flow to send it on), Event with the SUBSCRIBE's id,
  Subscription-State active;expires=<seconds left> or terminated;reason=<reason>.
- How a NOTIFY fared: 2xx clears the failure count; 481 (and any other final >= 300 but 408)
  removes the subscription (§4.2.2); a timeout or 408 is a lost NOTIFY: one does not end the
  subscription, MAX_LOST in a row do (no zombie subscriptions).

A subscription leaves the table as soon as it is terminated (Expires 0, expiry, a refused or
terminated NOTIFY), so `watchers` and `resources` list only live ones; the caller still holds the
object for its final NOTIFY.
"""

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from vaxelbox.sip.dialog import Dialog
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.responses import make_response, new_tag
from vaxelbox.sip.syntax import is_number, value_and_params
from vaxelbox.sip.via import Via

MAX_LOST = 3  # NOTIFYs lost in a row (timeout or 408) that end a subscription
SubState = Literal["active", "terminated"]


@dataclass
class WatcherSubscription:
    """One watcher's subscription to one resource (a site user), RFC 6665 §4.2."""

    id: str  # stable, for the store: a digest of the dialog's key
    dialog: Dialog
    event: str  # "dialog" | "presence"
    resource: str  # the site user id watched
    entity: str  # the URI the watcher subscribed to (the To URI), echoed as the document's entity
    expires_at: float  # monotonic seconds
    version: int  # the next document version to send (RFC 4235 §4.1: starts at 0)
    transport: str  # the flow the SUBSCRIBE came in on: NOTIFYs are sent back over it
    remote: tuple[str, int]
    failures: int = 0  # consecutive NOTIFY timeouts
    contact: str = ""  # our Contact value (name-addr), sent in every NOTIFY (a target refresh)
    event_id: str | None = None  # the SUBSCRIBE's Event id parameter, echoed in every NOTIFY
    state: SubState = "active"  # "terminated": its final NOTIFY is (still) to be sent

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields. `expires_at` is as given: the caller stores it as wall clock."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["dialog"] = self.dialog.to_dict()
        data["remote"] = list(self.remote)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WatcherSubscription":
        """The subscription `to_dict` wrote. Raises KeyError for a missing field."""
        host, port = data["remote"]
        return cls(
            id=str(data["id"]), dialog=Dialog.from_dict(data["dialog"]), event=str(data["event"]),
            resource=str(data["resource"]), entity=str(data["entity"]),
            expires_at=float(data["expires_at"]), version=int(data["version"]),
            transport=str(data["transport"]), remote=(str(host), int(port)),
            failures=int(data.get("failures", 0)), contact=str(data.get("contact", "")),
            event_id=data.get("event_id"), state=data.get("state", "active"),
        )  # fmt: skip


def parse_event(value: str | None) -> tuple[str, str | None] | None:
    """An Event header value -> (event type, id parameter or None); None when absent or malformed.
    Event types compare byte for byte (RFC 6665 §8.2.1)."""
    parsed = value_and_params(value)
    return (parsed[0], parsed[1].get("id")) if parsed is not None else None


def contact_value(contact: str) -> str:
    """A Contact header value from a URI or name-addr text ("sip:a@b" -> "<sip:a@b>")."""
    return contact if "<" in contact else f"<{contact}>"


class Notifier:
    """The table of watchers' subscriptions, keyed by dialog; see the module docstring."""

    def __init__(
        self,
        events: Collection[str] = ("dialog", "presence"),
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 600,
    ) -> None:
        """`events` served; expiry bounds in seconds. Raises ValueError unless
        0 < min_expires <= default_expires <= max_expires."""
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError(f"expires bounds out of order: {min_expires}, {default_expires}, {max_expires}")
        self.events = tuple(events)
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._subs: dict[tuple[str, str, str | None], WatcherSubscription] = {}

    # -- SUBSCRIBE ------------------------------------------------------------------------------

    def subscribe(
        self,
        request: Request,
        resource: str,
        transport: str,
        remote: tuple[str, int],
        contact: str,
        now: float,
    ) -> tuple[Response, WatcherSubscription | None]:
        """Answer a SUBSCRIBE for `resource` that came in over (`transport`, `remote`). `contact` is
        our Contact (URI or name-addr). Returns the response and, with a 2xx, the subscription the
        caller must NOTIFY now (terminated already after Expires 0); None with an error response."""
        if request.to_tag is None:
            return self._new(request, resource, transport, remote, contact, now)
        return self._in_dialog(request, transport, remote, contact, now)

    def _new(
        self,
        request: Request,
        resource: str,
        transport: str,
        remote: tuple[str, int],
        contact: str,
        now: float,
    ) -> tuple[Response, WatcherSubscription | None]:
        event = parse_event(request.get("Event"))
        if event is None or event[0] not in self.events:
            refusal = make_response(request, 489, "Bad Event")
            refusal.add("Allow-Events", ", ".join(self.events))
            return refusal, None
        expires = self._expires(request)
        if isinstance(expires, Response):
            return expires, None
        if not request.contacts:
            return make_response(request, 400, "Missing Contact"), None
        tag = new_tag()
        dialog = Dialog.as_uas(request, tag)
        sub = WatcherSubscription(
            id=subscription_id(dialog), dialog=dialog, event=event[0], resource=resource,
            entity=str(request.to.uri), expires_at=now + expires, version=0, transport=transport,
            remote=remote, contact=contact_value(contact), event_id=event[1],
            state="active" if expires else "terminated",
        )  # fmt: skip
        if expires:
            self._subs[dialog.key] = sub
        return self._ok(request, expires, sub.contact, tag), sub

    def _in_dialog(
        self, request: Request, transport: str, remote: tuple[str, int], contact: str, now: float
    ) -> tuple[Response, WatcherSubscription | None]:
        sub = self._subs.get((request.call_id, request.to_tag or "", request.from_tag))
        if sub is None or parse_event(request.get("Event")) != (sub.event, sub.event_id):
            return make_response(request, 481, "Subscription Does Not Exist"), None
        last = sub.dialog.remote_cseq
        if last is not None and request.cseq[0] <= last:
            return make_response(request, 500, "CSeq Out of Order"), None
        sub.dialog.accept_remote(request)
        expires = self._expires(request)
        if isinstance(expires, Response):
            return expires, None
        sub.dialog.refresh_target(request)
        sub.transport, sub.remote, sub.contact = transport, remote, contact_value(contact)
        sub.expires_at = now + expires
        if not expires:
            self._forget(sub)
        return self._ok(request, expires, sub.contact, None), sub

    def _expires(self, request: Request) -> int | Response:
        """The granted duration in seconds, or the refusal (400, 423)."""
        value = request.get("Expires")
        if value is None:
            return self.default_expires
        if not is_number(value.strip()):
            return make_response(request, 400, "Malformed Expires")
        asked = int(value)
        if 0 < asked < self.min_expires:
            refusal = make_response(request, 423, "Interval Too Brief")
            refusal.add("Min-Expires", str(self.min_expires))
            return refusal
        return min(asked, self.max_expires)

    def _ok(self, request: Request, expires: int, contact: str, tag: str | None) -> Response:
        response = make_response(request, 200, "OK", to_tag=tag)
        response.add("Expires", str(expires))
        response.add("Contact", contact)
        return response

    # -- NOTIFY ---------------------------------------------------------------------------------

    def notify(
        self,
        sub: WatcherSubscription,
        body: bytes,
        content_type: str,
        via: Via,
        now: float,
        reason: str | None = None,
    ) -> Request:
        """The next NOTIFY of `sub` carrying `body` (rendered with `sub.version`, which is bumped
        after). With a `reason` (deactivated, noresource, rejected, timeout), or for a subscription
        already terminated (reason timeout), it is the final one and the subscription is removed.
        `via` must carry a new branch. The NOTIFY goes to its Request-URI (the watcher's Contact,
        or the first strict route) over (`sub.transport`, `sub.remote`)."""
        if reason is not None or sub.state == "terminated":
            self._forget(sub)
            state = f"terminated;reason={reason or 'timeout'}"
        else:
            state = f"active;expires={max(0, math.ceil(sub.expires_at - now))}"
        event = sub.event + (f";id={sub.event_id}" if sub.event_id is not None else "")
        headers = [
            Header("Event", event),
            Header("Subscription-State", state),
            Header("Contact", sub.contact),
        ]
        if body:
            headers.append(Header("Content-Type", content_type))
        request = sub.dialog.request("NOTIFY", via, headers, body)
        sub.version += 1
        return request

    def on_notify_result(self, sub: WatcherSubscription, status: int | None) -> bool:
        """How a NOTIFY of `sub` fared: its final status, or None for a timeout. Returns whether the
        subscription is still alive (a terminated one never is)."""
        if status is not None and status < 300:
            if status >= 200:
                sub.failures = 0
            return self._alive(sub)
        if status is None or status == 408:
            sub.failures += 1
            if sub.failures < MAX_LOST:
                return self._alive(sub)
        self._forget(sub)
        return False

    # -- the table ------------------------------------------------------------------------------

    def expire(self, now: float) -> list[WatcherSubscription]:
        """The subscriptions whose time ran out by `now`, removed and terminated: the caller sends
        each its final NOTIFY (terminated;reason=timeout)."""
        ended = [sub for sub in self._subs.values() if now >= sub.expires_at]
        for sub in ended:
            self._forget(sub)
        return ended

    def find(self, request: Request) -> WatcherSubscription | None:
        """The live subscription an in-dialog SUBSCRIBE belongs to, if it is one of ours."""
        return self._subs.get((request.call_id, request.to_tag or "", request.from_tag))

    def watchers(self, resource: str | None = None) -> list[WatcherSubscription]:
        """Live subscriptions, all or those to `resource`."""
        return [s for s in self._subs.values() if resource is None or s.resource == resource]

    def resources(self) -> set[str]:
        """The site user ids someone watches (what the upstream subscriptions must cover)."""
        return {sub.resource for sub in self._subs.values()}

    def restore(self, subs: Iterable[WatcherSubscription]) -> None:
        """Put back subscriptions from the store after a restart; terminated ones are skipped.
        Expired ones are left for the next `expire`."""
        for sub in subs:
            if sub.state == "active":
                self._subs[sub.dialog.key] = sub

    def _alive(self, sub: WatcherSubscription) -> bool:
        return self._subs.get(sub.dialog.key) is sub

    def _forget(self, sub: WatcherSubscription) -> None:
        sub.state = "terminated"
        if self._alive(sub):
            del self._subs[sub.dialog.key]


def subscription_id(dialog: Dialog) -> str:
    """A stable id for the store: 20 hex digits of a digest of the dialog's key."""
    text = "\n".join(part or "" for part in dialog.key)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
