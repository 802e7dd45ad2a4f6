"""The presence server: the phones' busy lamps and activity, answered here in both modes.

It sits in the relay's request chain as a service (before the mode gate):

- A phone's SUBSCRIBE for `dialog` or `presence` on a site user is answered here
  (digest-authenticated like a call), followed at once by a NOTIFY with the full
  current state; refreshes never leave the office.
- The cloud's NOTIFY for one of our upstream subscriptions feeds the cache.
  There is one upstream subscription per watched user, however many phones
  watch it, made while online and dropped when nobody watches any more.
- Everything else goes on down the chain (a voicemail `message-summary`
  subscription still goes to the cloud online; locally, 489).

The cache merges the cloud's view with the office's own (`presence.calls`, fed
by the relay as a call observer); each change is pushed to that user's
watchers at once, each with its own document version. In local mode the
upstream subscriptions are lost and the lamps follow the office's calls; on
failback they are re-established, spread over a jittered window.

Watchers' subscriptions (dialog, version, CSeq) are kept in the store, so a
restart continues them: versions never go backwards for a watcher.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from vaxelbox.edge.bindings import BindingMirror, bare_uri
from vaxelbox.edge.upstream import Upstream
from vaxelbox.local.registrar import aor_for, authenticate_call, user_for_aor
from vaxelbox.presence import dialog_info
from vaxelbox.presence.cache import PresenceCache
from vaxelbox.presence.calls import OfficeCalls
from vaxelbox.presence.cloud import CloudSubscriptions
from vaxelbox.presence.model import LineDialog, LineState, Party
from vaxelbox.presence.pidf import render_pidf
from vaxelbox.presence.subscriber import Credentials
from vaxelbox.presence.subscription import Notifier, WatcherSubscription, parse_event
from vaxelbox.routing.chain import Next, RequestContext, Target
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.proxy import MAGIC_COOKIE
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import Via
from vaxelbox.site import Site
from vaxelbox.site.model import User
from vaxelbox.store.presence import StoredWatch, Watches
from vaxelbox.store.user_state import UserStates

log = logging.getLogger("vaxelbox.presence")

EVENTS = ("dialog", "presence")
DIALOG_INFO = "application/dialog-info+xml"
PIDF = "application/pidf+xml"
UDP_LIMIT = 1300  # RFC 3261 §18.1.1: larger requests need a congestion-controlled transport
RESTART_MARGIN = 16  # a restart continues versions and CSeqs this far ahead of the last saved
SAVE_DELAY = 0.2  # seconds: new subscriptions are written together, off the event loop


class PresenceServer:
    def __init__(
        self,
        stack: SipStack,
        addresses: EdgeAddresses,
        flow_of: Callable[[str, tuple[str, int]], Flow | None],
        cloud: Upstream,
        bindings: BindingMirror,
        site: Callable[[], Site],
        auth: SipDigest,
        users: UserStates,
        watches: Watches | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self.rng = rng or random.Random()
        self.clock = clock
        self.addresses = addresses
        self.flow_of = flow_of
        self.cloud = CloudSubscriptions(
            stack, addresses, cloud, self._subscriber, self._cloud_gone, self.rng, clock
        )
        self.bindings = bindings
        self.site = site
        self.auth = auth
        self.users = users
        self.watches = watches
        self.notifier = Notifier(EVENTS)
        self.cache = PresenceCache()
        self.office = OfficeCalls(self._caller_of, self._callee_of, self._aor, self._office_dialog)
        self.mode = Mode.ONLINE
        self._entitled: dict[str, str] = {}  # watched user id -> the site user we subscribe upstream as
        self._dirty: set[str] = set()  # subscription ids to save
        self._gone: set[str] = set()  # subscription ids to delete
        self._activities: dict[str, tuple[str, float | None] | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._save_pending = False

    # -- the request chain's service ----------------------------------------------------------------

    def __call__(self, context: RequestContext) -> Next:
        method = context.request.method
        if method == "SUBSCRIBE" and context.side == "lan":
            return self._subscribe(context)
        if method == "NOTIFY" and context.side == "wan":
            return self._cloud_notify(context)
        return Next.CONTINUE

    def _subscribe(self, context: RequestContext) -> Next:
        request, local = context.request, context.mode is Mode.LOCAL
        event = _event(request)
        if event not in EVENTS:
            if not local:
                return Next.CONTINUE  # message-summary and the like: the cloud's
            context.response = make_response(request, 489, "Bad Event")
            context.response.add("Allow-Events", ", ".join(EVENTS))
            return Next.STOP
        if request.to_tag is not None:
            if self.notifier.find(request) is None and not local:
                return Next.CONTINUE  # a subscription the cloud holds (made before we served presence)
            return self._answer(context, self._resource(request.to.uri))
        resource = self._resource(request.uri)
        if resource is None:
            if not local:
                return Next.CONTINUE
            context.response = make_response(request, 404, "Not Found")
            return Next.STOP
        checked = authenticate_call(request, self.auth, self.site())
        if isinstance(checked, Response):
            context.response = checked
            return Next.STOP
        self._entitled.setdefault(resource.id, checked.id)
        return self._answer(context, resource)

    def _answer(self, context: RequestContext, resource: User | None) -> Next:
        request, flow = context.request, context.flow
        contact = f"<{self.addresses.uri('lan', flow.transport)}>".replace(";lr", "")
        response, sub = self.notifier.subscribe(
            request, resource.id if resource else "", flow.transport, flow.remote, contact, self.clock()
        )
        context.response = response
        context.route = "presence server"
        if sub is not None and 200 <= response.status < 300:
            asyncio.get_running_loop().call_soon(self._notify, sub)  # after the 200 (RFC 6665 §4.2.1.2)
            self._save_soon()  # a new or ended subscription is on disk within a moment
            if sub.state == "active":
                self.cloud.ensure(sub.resource)
        return Next.STOP

    def _resource(self, uri: Uri) -> User | None:
        """The site user a watcher names: by extension or SIP user, at the cloud domain or at us."""
        if not isinstance(uri, SipUri) or not uri.user:
            return None
        site, host = self.site(), uri.host.lower()
        ours = (self.addresses.lan, self.addresses.lan_tls)
        if (
            host != site.cloud.domain.lower()
            and (uri.host, uri.port or (5061 if uri.scheme == "sips" else 5060)) not in ours
        ):
            return None
        name = unquote(uri.user)
        return next((u for u in site.users if name in (u.extension, u.sip.user)), None)

    # -- the cloud's NOTIFYs ---------------------------------------------------------------------------

    def _cloud_notify(self, context: RequestContext) -> Next:
        found = self.cloud.on_notify(context.request)
        if found is None:
            return Next.CONTINUE  # a phone's own subscription (voicemail): the phone's
        context.response, user, body = found
        context.route = "presence: the cloud's NOTIFY"
        if body:
            try:
                info = dialog_info.parse(body)
            except dialog_info.DialogInfoError as exc:
                log.warning("presence: the cloud's document refused for %s: %s", user, exc)
                return Next.STOP
            self._update(user, lambda: self.cache.cloud(user, info, self.clock()))
        return Next.STOP

    # -- the office's own view -----------------------------------------------------------------------

    def _office_dialog(self, user: str, dialog: LineDialog) -> None:
        self._update(user, lambda: self.cache.office(user, dialog, self.clock()))

    def _caller_of(self, context: RequestContext, target: Target | None) -> str | None:
        if context.caller is not None:
            return context.caller
        uri = context.request.from_.uri
        user = user_for_aor(self.site(), bare_uri(uri)) if isinstance(uri, SipUri) else None
        return user.id if user is not None else None

    def _callee_of(self, context: RequestContext, target: Target | None) -> str | None:
        """The user of the phone a branch rings: its binding's address of record, else the URI's user."""
        if target is None:
            return None
        if target.user is not None:
            return target.user
        uri = bare_uri(target.uri or context.request.uri)
        user = user_for_aor(self.site(), self.bindings.aor_of_contact(uri) or uri)
        return user.id if user is not None else None

    def _aor(self, user_id: str) -> str:
        """The user's address of record at the cloud (what its phones register): the resource the
        cloud surely knows, whatever extension a BLF key dials."""
        return aor_for(self.site().user(user_id), self.site())

    def _subscriber(self, user_id: str) -> tuple[str, str, Credentials]:
        """What the cloud subscription to `user_id` names: the user's address of record, and the site
        credentials of a user entitled to watch it (the first watcher, else a BLF key's owner)."""
        site = self.site()
        entitled = site.user(self._entitled.get(user_id) or _blf_owner(site, user_id) or user_id)
        secret = entitled.sip.password.get_secret_value()
        return self._aor(user_id), aor_for(entitled, site), Credentials(entitled.sip.user, secret)

    def _cloud_gone(self, user_id: str) -> None:
        self._update(user_id, lambda: self.cache.cloud_gone(user_id, self.clock()))

    # -- watchers -----------------------------------------------------------------------------------

    def _update(self, user: str, change: Callable[[], bool]) -> None:
        """Apply a change to the cache; when `user`'s view changed, tell the watchers."""
        before = self.cache.dialogs(user)
        if change():
            self._fan_out(user, _ended(before, self.cache.dialogs(user)))

    def _fan_out(self, user: str, ended: Sequence[LineDialog] = ()) -> None:
        """Every watcher of `user` gets the new state; dialogs that just ended are in that one
        document as terminated (RFC 4235 §3.7.1), so the lamp sees the call end, and in none after."""
        for sub in self.notifier.watchers(user):
            self._notify(sub, ended=ended)

    def _notify(
        self, sub: WatcherSubscription, reason: str | None = None, ended: Sequence[LineDialog] = ()
    ) -> None:
        """One NOTIFY to one watcher, on the flow its SUBSCRIBE came in on (never to whatever address
        its Contact names: behind a NAT that is not where the phone listens). Too large for UDP: over
        the phone's connection if it keeps one, else trimmed to what a lamp needs."""
        flow = self.flow_of(sub.transport, sub.remote)
        if flow is None:
            if not self.notifier.on_notify_result(sub, None):
                self._forget(sub)
            return
        version = sub.version
        body, kind = self._document(sub, version, ended, trim=False)
        local = self.addresses.local("lan", flow.transport)
        via = Via(flow.transport.upper(), *local, {"branch": _branch(), "rport": None})
        notify = self.notifier.notify(sub, body, kind, via, self.clock(), reason)
        if len(notify.to_bytes()) > UDP_LIMIT and not flow.reliable:
            stream = self._stream_flow(sub)
            if stream is not None:
                flow = stream
                local = self.addresses.local("lan", stream.transport)
                notify.replace("Via", str(Via(stream.transport.upper(), *local, via.params)))
            else:
                notify.body, _ = self._document(sub, version, ended, trim=True)
        self._dirty.add(sub.id)
        if sub.state == "terminated":
            self._forget(sub)

        def answered(response: Response) -> None:
            if response.status >= 200 and not self.notifier.on_notify_result(sub, response.status):
                self._forget(sub)

        def timed_out() -> None:
            if not self.notifier.on_notify_result(sub, None):
                self._forget(sub)

        self.stack.send_request(notify, flow, answered, timed_out)

    def _document(
        self, sub: WatcherSubscription, version: int, ended: Sequence[LineDialog], trim: bool
    ) -> tuple[bytes, str]:
        if sub.event == "presence":
            return self._pidf(sub), PIDF
        dialogs = [_as_seen_by(d, sub.entity) for d in [*self.cache.dialogs(sub.resource), *ended]]
        return dialog_info.render(sub.entity, version, dialogs, trim=trim), DIALOG_INFO

    def _pidf(self, sub: WatcherSubscription) -> bytes:
        site, stored = self.site(), self.users.activity(sub.resource)
        activity, until, note = None, None, None
        if stored is not None and (stored.until is None or stored.until > time.time()):
            user = site.user(sub.resource)
            profile = next((a for a in user.activities if a.id == stored.activity), None)
            activity = stored.activity
            note = profile.name if profile is not None else None
            until = datetime.fromtimestamp(stored.until, UTC) if stored.until else None
        busy = self.cache.line(sub.resource) >= LineState.EARLY
        return render_pidf(sub.entity, True, activity, until, note, busy)

    def _stream_flow(self, sub: WatcherSubscription) -> Flow | None:
        """A connection the watcher's phone keeps to us (it registered over TCP or TLS), if any."""
        for binding in self.bindings.all():
            if binding.remote[0] == sub.remote[0] and binding.transport != "udp":
                flow = self.flow_of(binding.transport, binding.remote)
                if flow is not None and flow.reliable:
                    return flow
        return None

    def _forget(self, sub: WatcherSubscription) -> None:
        self._dirty.discard(sub.id)
        self._gone.add(sub.id)
        if not self.notifier.watchers(sub.resource):
            self.cloud.drop(sub.resource)

    # -- mode and time ---------------------------------------------------------------------------------

    def mode_changed(self, mode: Mode) -> None:
        """Local: the cloud's subscriptions are lost, lamps follow the office's calls. Online again:
        they are refreshed or re-made, spread over a jittered window (presence.cloud)."""
        self.mode = mode
        self.cloud.mode_changed(mode, self.notifier.resources())

    def tick(self) -> None:
        """Once a second: expiries, refreshes and retries due, activity changes, and the store."""
        now = self.clock()
        for sub in self.notifier.expire(now):
            self._notify(sub, "timeout")
        self.office.expire(now)
        before = {user_id: self.cache.dialogs(user_id) for user_id in self.notifier.resources()}
        for user_id in self.cache.expire(now):
            self._fan_out(user_id, _ended(before.get(user_id, []), self.cache.dialogs(user_id)))
        self.cloud.tick()
        self._activity_changes()

    async def run(self) -> None:
        """A supervisor service: ticks, and saves the watchers' subscriptions off the event loop
        (and once more, in place, when the agent stops)."""
        try:
            while True:
                await asyncio.sleep(1.0)
                self.tick()
                if self.watches is not None and (changes := self._changes()):
                    await asyncio.to_thread(self.watches.save, *changes)
        finally:
            self.save()

    def _save_soon(self) -> None:
        """Save within SAVE_DELAY, once for every subscription that arrives meanwhile."""
        if self._save_pending or self.watches is None:
            return
        self._save_pending = True

        async def save() -> None:
            await asyncio.sleep(SAVE_DELAY)
            self._save_pending = False
            if self.watches is not None and (changes := self._changes()):
                await asyncio.to_thread(self.watches.save, *changes)

        self._spawn(save())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def save(self) -> None:
        """Write the subscriptions that changed since the last save, in one transaction."""
        if self.watches is not None and (changes := self._changes()):
            self.watches.save(*changes)

    def _changes(self) -> tuple[list[StoredWatch], set[str]] | None:
        """The rows to write and the ids to delete since the last call (on the event loop)."""
        if not (self._dirty or self._gone):
            return None
        dirty, gone = self._dirty, self._gone
        self._dirty, self._gone = set(), set()
        return [self._stored(sub) for sub in self.notifier.watchers() if sub.id in dirty], gone

    def restore(self) -> int:
        """Continue the subscriptions the store kept across a restart: each watcher gets a NOTIFY with
        the current state, its version and CSeq a margin ahead of the last saved (a NOTIFY sent just
        before the restart may not have been saved)."""
        if self.watches is None:
            return 0
        subs = []
        wall, now = time.time(), self.clock()
        for stored in self.watches.live(wall):
            sub = WatcherSubscription.from_dict(stored.data)
            sub.expires_at = now + (stored.expires_at - wall)
            sub.version += RESTART_MARGIN
            sub.dialog.local_cseq += RESTART_MARGIN
            if watcher := stored.data.get("watcher"):
                self._entitled.setdefault(sub.resource, watcher)
            subs.append(sub)
        self.notifier.restore(subs)
        for sub in subs:
            self._dirty.add(sub.id)
            self._notify(sub)
            self.cloud.ensure(sub.resource)
        return len(subs)

    def _stored(self, sub: WatcherSubscription) -> StoredWatch:
        data = {**sub.to_dict(), "watcher": self._entitled.get(sub.resource)}
        return StoredWatch(sub.id, sub.resource, data, time.time() + (sub.expires_at - self.clock()))

    def _activity_changes(self) -> None:
        """Activities change from phones, the CLI and the cloud's copies: presence watchers hear of it."""
        watched = {s.resource for s in self.notifier.watchers() if s.event == "presence"}
        for user_id in watched:
            stored = self.users.activity(user_id)
            now_set = (stored.activity, stored.until) if stored is not None else None
            if self._activities.get(user_id, now_set) != now_set:
                for sub in self.notifier.watchers(user_id):
                    if sub.event == "presence":
                        self._notify(sub)
            self._activities[user_id] = now_set

    # -- for vaxelctl presence --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Every site user: line (idle, ringing, busy), activity (the profile's name) and when it ends
        (wall clock seconds, None: until further notice), watchers, the upstream subscription's state."""
        site, now, rows = self.site(), time.time(), []
        for user in site.users:
            stored = self.users.activity(user.id)
            if stored is not None and stored.until is not None and stored.until <= now:
                stored = None
            profile = next((a for a in user.activities if stored and a.id == stored.activity), None)
            upstream = self.cloud.get(user.id)
            rows.append({
                "user": user.id,
                "extension": user.extension,
                "line": _line_text(self.cache.line(user.id)),
                "activity": (profile.name if profile else stored.activity) if stored else None,
                "until": stored.until if stored else None,
                "watchers": len(self.notifier.watchers(user.id)),
                "cloud": str(upstream.state) if upstream is not None else None,
            })  # fmt: skip
        return rows


def _ended(before: Sequence[LineDialog], after: Sequence[LineDialog]) -> list[LineDialog]:
    """The dialogs of `before` that `after` no longer lists (by call), as terminated."""
    live = {d.call_id or d.id for d in after}
    return [replace(d, state=LineState.TERMINATED) for d in before if (d.call_id or d.id) not in live]


def _event(request: Request) -> str:
    event = parse_event(request.get("Event"))
    return event[0] if event is not None else ""


def _branch() -> str:
    return f"{MAGIC_COOKIE}{random.getrandbits(64):016x}"


def _as_seen_by(dialog: LineDialog, entity: str) -> LineDialog:
    """The monitored user's side named as the watcher named the user."""
    local = dialog.local or Party(entity)
    return replace(dialog, local=replace(local, identity=entity))


def _blf_owner(site: Site, user_id: str) -> str | None:
    """A user whose phone shows `user_id` on a busy-lamp key: entitled to watch it at the cloud."""
    for phone in site.phones:
        if user_id in phone.blf and phone.lines:
            return phone.lines[0]
    return None


def _line_text(state: LineState) -> str:
    return {LineState.TERMINATED: "idle", LineState.CONFIRMED: "busy"}.get(state, "ringing")
