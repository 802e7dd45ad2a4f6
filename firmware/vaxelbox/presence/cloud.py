"""The appliance's subscriptions at the cloud: one per watched user, however many phones watch it.

Each is an `UpstreamSubscription` (presence.subscriber, the sans-I/O RFC 6665
subscriber); this module sends what they ask for on the cloud's flow and
hands back what the cloud answers. Made while online, dropped (unsubscribed)
when nobody watches any more. In local mode they are lost but keep their
dialogs: failback refreshes each (a 481 makes a new one), spread over a
jittered window, and one dropped while local is unsubscribed once the cloud is
back, so the cloud is left no orphan. A NOTIFY naming our presence Contact
that matches none of them (one from before a restart) gets 481, which ends it
at the cloud.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from vaxelbox.edge.upstream import Upstream
from vaxelbox.presence.subscriber import Credentials, UpstreamSubscription
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.proxy import MAGIC_COOKIE
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.uri import SipUri
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.presence.cloud")

CONTACT_USER = "presence"  # the user part of our Contact upstream: the cloud's NOTIFYs name it
RETRY_SPREAD = 60.0  # seconds: a first subscription that found no way to the cloud is retried within

Subscriber = Callable[[str], tuple[str, str, Credentials]]  # user id -> (target URI, our From URI, auth)


def failback_spread(subscriptions: int) -> float:
    """Seconds over which the subscriptions are re-made after failback: at most 10 per second on
    average, at least 2 s (the cloud just came back), at most a minute."""
    return min(60.0, max(2.0, subscriptions / 10))


class CloudSubscriptions:
    """`changed(user)` is called when a user's subscription ended or failed: what the cloud said of
    that user may be stale (the cache's `cloud_gone`)."""

    def __init__(
        self,
        stack: SipStack,
        addresses: EdgeAddresses,
        cloud: Upstream,
        subscriber: Subscriber,
        changed: Callable[[str], None],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack, self.addresses, self.cloud = stack, addresses, cloud
        self.subscriber, self.changed = subscriber, changed
        self.rng = rng or random.Random()
        self.clock = clock
        self.mode = Mode.ONLINE
        self.by_user: dict[str, UpstreamSubscription] = {}
        self._parked: dict[str, UpstreamSubscription] = {}  # dropped while local, still held there
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, user_id: str) -> UpstreamSubscription | None:
        return self.by_user.get(user_id)

    # -- watched and no longer watched ------------------------------------------------------------

    def ensure(self, user_id: str, spread: float = 0.0) -> None:
        """A subscription to `user_id`, made while online: now, or after a pause drawn from
        [0, spread] seconds."""
        if user_id in self.by_user or self.mode is Mode.LOCAL:
            return
        target, our_uri, credentials = self.subscriber(user_id)
        contact = f"<{self.addresses.uri('wan', self._transport(), CONTACT_USER)}>".replace(";lr", "")
        upstream = UpstreamSubscription(user_id, target, our_uri, credentials, contact, self.rng)
        self.by_user[user_id] = upstream
        if spread > 0:
            upstream.resume(self.clock(), spread)  # the tick sends it when due
        else:
            self._send(upstream, lambda via: upstream.start(self.clock(), via))

    def drop(self, user_id: str) -> None:
        """Nobody watches `user_id` any more: unsubscribe at the cloud; in local mode, once back."""
        upstream = self.by_user.pop(user_id, None)
        if upstream is None:
            return
        if self.mode is Mode.LOCAL:
            self._parked[user_id] = upstream
        else:
            self._unsubscribe(upstream)

    # -- the cloud's NOTIFYs ------------------------------------------------------------------------

    def on_notify(self, request: Request) -> tuple[Response, str, bytes | None] | None:
        """A NOTIFY from the cloud: (our answer, whose subscription, the document or None) when it
        is one of ours; a 481 for one naming our Contact that we do not know; None otherwise."""
        upstream = next((u for u in self.by_user.values() if u.call_id == request.call_id), None)
        if upstream is None:
            uri = request.uri
            if isinstance(uri, SipUri) and uri.user == CONTACT_USER:
                return make_response(request, 481, "Subscription Does Not Exist"), "", None
            return None
        response, body = upstream.on_notify(request, self.clock())
        self._gone(upstream)  # a NOTIFY that terminated the subscription
        return response, upstream.resource, body

    # -- mode and time ---------------------------------------------------------------------------

    def mode_changed(self, mode: Mode, watched: Collection[str]) -> None:
        """Local: every subscription lost (its dialog kept). Online again: every watched user's is
        refreshed or re-made, and those dropped meanwhile unsubscribed, over a jittered window."""
        self.mode, now = mode, self.clock()
        if mode is Mode.LOCAL:
            for upstream in self.by_user.values():
                upstream.lost(now)
                self.changed(upstream.resource)
            return
        parked, self._parked = self._parked, {}
        spread = failback_spread(len(watched) + len(parked))
        for user_id, upstream in parked.items():
            if user_id in watched and user_id not in self.by_user:
                self.by_user[user_id] = upstream  # watched again meanwhile: refreshed below
            else:
                asyncio.get_running_loop().call_later(
                    self.rng.uniform(0, spread), self._unsubscribe, upstream
                )
        for upstream in self.by_user.values():
            upstream.resume(now, spread)
        for user_id in set(watched) - set(self.by_user):
            self.ensure(user_id, spread)

    def tick(self) -> None:
        """Refreshes, retries and Timer N that are due (online only)."""
        if self.mode is not Mode.ONLINE:
            return
        now = self.clock()
        for upstream in list(self.by_user.values()):
            due = upstream.due()
            if due is not None and due <= now:
                self._send(upstream, lambda via, u=upstream: u.tick(now, via))

    # -- sending ---------------------------------------------------------------------------------

    def _transport(self) -> str:
        target = self.cloud.target
        return target.transport if target is not None else "udp"

    def _unsubscribe(self, upstream: UpstreamSubscription) -> None:
        self._send(upstream, lambda via: upstream.stop(self.clock(), via), keep=False)

    def _send(
        self, upstream: UpstreamSubscription, make: Callable[[Via], Request | None], keep: bool = True
    ) -> None:
        """Build a request with `make` for the cloud's flow and send it; answers go back to `upstream`
        (unless `keep` is False: an unsubscribe, whose answer nobody waits for)."""
        flow = self.cloud.ready_flow()
        if flow is None:
            self._spawn(self._connect_then(upstream, make, keep))
            return
        branch = f"{MAGIC_COOKIE}{random.getrandbits(64):016x}"
        request = make(Via(flow.transport.upper(), *self.addresses.wan, {"branch": branch, "rport": None}))
        if request is None:
            return

        def current() -> bool:
            return keep and self.by_user.get(upstream.resource) is upstream

        def answered(response: Response) -> None:
            if response.status >= 200 and current():
                self._answered(upstream, request, response)

        def timed_out() -> None:
            if current():
                upstream.on_timeout(request, self.clock())
                self._gone(upstream)

        self.stack.send_request(request, flow, answered, timed_out)

    async def _connect_then(
        self, upstream: UpstreamSubscription, make: Callable[[Via], Request | None], keep: bool
    ) -> None:
        try:
            await self.cloud.flow()
        except OSError as exc:
            log.info("presence: no way to the cloud for %s: %s", upstream.resource, exc)
            if keep and upstream.state == "idle":  # never started: try again within the minute
                upstream.resume(self.clock(), RETRY_SPREAD)
            return  # a started one retries on its own timers
        self._send(upstream, make, keep)

    def _answered(self, upstream: UpstreamSubscription, request: Request, response: Response) -> None:
        if response.status >= 300:
            log.info(
                "presence: the cloud answered %s %s for %s",
                response.status,
                response.reason,
                upstream.resource,
            )
        self._send(upstream, lambda via: upstream.on_response(request, response, self.clock(), via))
        self._gone(upstream)

    def _gone(self, upstream: UpstreamSubscription) -> None:
        if upstream.state not in ("active", "subscribing"):
            self.changed(upstream.resource)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
