"""The target chain: fork a request to its target set, one branch per target, each on its own flow.

Each branch is decorated for the side it leaves on: our Via (with RFC 5923
`alias` toward the cloud over a connection), a double Record-Route on
dialog-creating requests (RFC 5658: the URI facing the next hop first; on the
LAN side the URI carries a flow token naming that phone's flow, so in-dialog
requests find it), and Path on a REGISTER going to the cloud (RFC 3327).
Timer C (§16.6 step 11) and ring timers come from an injected scheduler, so
tests run them on a fake clock.
"""

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vaxelbox.edge.flowtoken import make_token
from vaxelbox.routing.chain import RequestContext, ResponseChain, Side, Target
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.proxy import (
    Branch,
    ProxyCall,
    cancel_for,
    forward_copy,
    needs_tls,
    new_branch,
    sips_refusal,
)
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.routing.forking")

DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")
TIMER_C = 180.0  # §16.6 step 11: a branch still ringing after this long is cancelled


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Cancellable]  # (delay s, callback) -> handle


@dataclass(frozen=True, slots=True)
class EdgeAddresses:
    lan: tuple[str, int]  # where the phones reach us (UDP and TCP)
    wan: tuple[str, int]  # where the cloud reaches us
    lan_tls: tuple[str, int] | None = None  # where phones reach us over TLS, if we listen there

    def local(self, side: Side, transport: str) -> tuple[str, int]:
        """Our (host, port) as a peer on `side` over `transport` sees it (for Via and our URIs)."""
        if side == "lan" and transport == "tls" and self.lan_tls is not None:
            return self.lan_tls
        return self.lan if side == "lan" else self.wan

    def uri(self, side: Side, transport: str, user: str | None = None, secure: bool = False) -> str:
        """Our loose-routing URI on `side`. Over TLS the port is the TLS listener's. `secure` gives
        `sips:` (RFC 3261 §16.6 step 4: a dialog set up with a SIPS URI is record-routed with one);
        otherwise a TLS hop says `transport=tls`, deprecated by RFC 3261 §26.2.2 but what phones and
        Kamailio understand for a `sip:` dialog carried over TLS (RFC 5630 §3.1.2: last-hop TLS)."""
        host, port = self.local(side, transport)
        host = f"[{host}]" if ":" in host else host
        userinfo = user + "@" if user else ""
        if secure:
            return f"sips:{userinfo}{host}:{port};lr"
        return f"sip:{userinfo}{host}:{port};transport={transport};lr"

    def side_of(self, flow: Flow) -> Side:
        return "lan" if tuple(flow.local) in (self.lan, self.lan_tls) else "wan"


@dataclass(frozen=True)
class Forking:
    """What every fork needs: the stack, our addresses, the scheduler and the response chain."""

    stack: SipStack
    addresses: EdgeAddresses
    schedule: Scheduler
    responses: ResponseChain

    def fork(
        self,
        context: RequestContext,
        targets: list[Target],
        respond: Callable[[Response], None],
        ring_time: float | None = None,
    ) -> "Fork":
        allowed = tls_targets(context.request, targets)
        fork = Fork(self, context, allowed, respond, ring_time)
        if targets and not allowed:
            host, port = self.addresses.local(context.side, context.flow.transport)
            host = f"[{host}]" if ":" in host else host
            log.warning(
                "SIPS request refused, not downgraded: %s %s would leave over %s (RFC 5630)",
                context.request.method, context.request.uri,
                "/".join(sorted({t.flow.transport if t.flow else "?" for t in targets})),
            )  # fmt: skip
            fork.refuse(sips_refusal(context.request, f"{host}:{port}"))
            return fork
        if len(allowed) < len(targets):
            log.info("SIPS request %s: %d of %d targets not over TLS left out", context.request.uri,
                     len(targets) - len(allowed), len(targets))  # fmt: skip
        fork.start()
        return fork

    def copy_for(self, context: RequestContext, target: Target, flow: Flow) -> Request:
        """The request as it leaves on `flow` toward `target`: Via, Record-Route, Path."""
        request = context.request
        host, port = self.addresses.local(target.side, flow.transport)
        params: dict[str, str | None] = {"branch": new_branch(request), "rport": None}
        if target.side == "wan" and flow.reliable:
            params["alias"] = None  # RFC 5923: the cloud may send its requests back on this connection
        via = Via(flow.transport.upper(), host, port, params)
        copy = forward_copy(
            request, via, target=target.uri, record_route=self.record_route(context, target, flow)
        )
        if request.method == "REGISTER" and target.side == "wan":
            phone = context.flow
            token = make_token(phone.transport, *phone.remote)
            copy.add("Path", f"<{self.addresses.uri('wan', flow.transport, token)}>", first=True)
            copy.add("Supported", "path")
        return copy

    def record_route(self, context: RequestContext, target: Target, flow: Flow) -> tuple[str, ...]:
        """Both our URIs for a new dialog: the one facing the next hop first (RFC 5658 double RR).
        A LAN-side URI names its phone's flow, so the last of our Route entries an in-dialog request
        carries names the flow it must leave on (see `edge.front.RouteToken`)."""
        request = context.request
        if request.method not in DIALOG_CREATING or request.to_tag is not None:
            return ()
        secure = _is_sips(request)
        return (
            self._our_uri(target.side, flow, secure),
            self._our_uri(context.side, context.flow, secure),
        )

    def _our_uri(self, side: Side, flow: Flow, secure: bool = False) -> str:
        token = make_token(flow.transport, *flow.remote) if side == "lan" else None
        return self.addresses.uri(side, flow.transport, token, secure and flow.transport == "tls")


def tls_targets(request: Request, targets: list[Target]) -> list[Target]:
    """The targets `request` may be sent to: all of them, or for a SIPS Request-URI only those
    reached over TLS (RFC 3261 §26.2.2, RFC 5630: TLS on every hop, never a downgrade)."""
    if not needs_tls(request):
        return targets
    return [t for t in targets if t.flow is not None and t.flow.transport == "tls"]


def _is_sips(request: Request) -> bool:
    """RFC 3261 §16.6 step 4: the Request-URI or the first Route left for the next hop is SIPS."""
    uri = request.routes[0].uri if request.routes else request.uri
    return getattr(request.uri, "scheme", "") == "sips" or getattr(uri, "scheme", "") == "sips"


def _alive(fork: "weakref.ref[Fork]") -> "Fork":
    found = fork()
    assert found is not None, "a call used after its fork was gone"
    return found


class Fork:
    """One ProxyCall over a target set. Cancel it with `cancel()`; a ring timer cancels it too and
    marks it `no_answer`, so the plan runner knows why it ended."""

    def __init__(
        self,
        forking: Forking,
        context: RequestContext,
        targets: list[Target],
        respond: Callable[[Response], None],
        ring_time: float | None,
    ) -> None:
        self.forking = forking
        self.context = context
        self.no_answer = False
        self._ring_time = ring_time
        self._ring_timer: Cancellable | None = None
        self._branches: dict[int, tuple[Target, Flow]] = {}
        copies = []
        for target in targets:
            assert target.flow is not None, "the relay opens the cloud's flow before forking"
            copy = forking.copy_for(context, target, target.flow)
            self._branches[id(copy)] = (target, target.flow)
            copies.append(copy)
        # The call refers back to its fork weakly: bound methods would close a cycle that only the
        # cyclic collector frees, keeping every message of a finished call (hundreds of objects)
        # alive until a full collection. The fork outlives its call's use: every caller holds it.
        fork = weakref.ref(self)
        self.call = ProxyCall(
            context.request,
            lambda branch: _alive(fork)._send_branch(branch),
            lambda branch: _alive(fork)._send_cancel(branch),
            lambda response: _alive(fork)._respond_upstream(response),
        )
        self._copies = copies
        self._respond = respond

    def refuse(self, response: Response) -> None:
        """Answer `response` upstream instead of forwarding to any target."""
        self.call.refuse(response)

    def start(self) -> None:
        if self._ring_time is not None:
            self._ring_timer = self.forking.schedule(self._ring_time, self._ring_timeout)
        self.call.start(self._copies)

    def cancel(self) -> None:
        self._stop_ring_timer()
        self.call.cancel()

    @property
    def finished(self) -> bool:
        return self.call.answered

    def _ring_timeout(self) -> None:
        if not self.call.answered:
            self.no_answer = True
            self.call.cancel()

    def _respond_upstream(self, response: Response) -> None:
        if response.status >= 200:
            self._stop_ring_timer()
        self._respond(response)

    def _stop_ring_timer(self) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None

    def _send_branch(self, branch: Branch) -> None:
        target, flow = self._branches[id(branch.request)]
        timer_c = None
        if branch.request.method == "INVITE":
            timer_c = self.forking.schedule(TIMER_C, lambda: self.call.ring_timeout(branch))

        def on_response(response: Response) -> None:
            if response.status >= 200:
                if timer_c is not None:
                    timer_c.cancel()
                stack.release(running)  # late 2xx go on statelessly: the call's state is freed now
            self.forking.responses(self.context, target, response)
            self.call.on_response(branch, response)

        def on_timeout() -> None:
            if timer_c is not None:
                timer_c.cancel()
            self.forking.responses(self.context, target, None)
            self.call.on_timeout(branch)

        stack = self.forking.stack
        running = stack.send_request(branch.request, flow, on_response, on_timeout)

    def _send_cancel(self, branch: Branch) -> None:
        _, flow = self._branches[id(branch.request)]
        self.forking.stack.send_request(cancel_for(branch.request), flow, lambda r: None, lambda: None)
