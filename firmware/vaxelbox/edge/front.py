"""The front of the request chain, the same in both modes: what the edge answers itself, the §16.3
checks a proxy owes every request, and the route token that names a phone's flow."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vaxelbox.edge.flowtoken import read_token
from vaxelbox.routing.chain import Next, RequestContext
from vaxelbox.sip.message import Request
from vaxelbox.sip.proxy import check_request, preprocess_routes
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import Via

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, UPDATE, PRACK"

FlowOf = Callable[[str, tuple[str, int]], Flow | None]  # (transport, address) -> a flow to it


@dataclass(frozen=True)
class AnswerOptions:
    """OPTIONS addressed to the edge itself (a phone's or the cloud's keepalive): 200 with Allow."""

    is_ours: Callable[[Uri], bool]

    def __call__(self, context: RequestContext) -> Next:
        request = context.request
        uri = request.uri
        if request.method != "OPTIONS" or request.routes or not isinstance(uri, SipUri) or uri.user:
            return Next.CONTINUE
        if not self.is_ours(uri):
            return Next.CONTINUE
        context.response = make_response(request, 200, "OK")
        context.response.add("Allow", ALLOW)
        context.route = "answered by the edge"
        return Next.STOP


@dataclass(frozen=True)
class ProxyChecks:
    """RFC 3261 §16.3: Max-Forwards, Proxy-Require, loops."""

    our_sent_by: frozenset[str]  # lower case, as a Via writes it: an IPv6 host in brackets

    @classmethod
    def listening_on(cls, addresses: Iterable[tuple[str, int]]) -> "ProxyChecks":
        """The checks for an edge at `addresses` ((host, port), an IPv6 host bare): each sent-by
        written as our Via writes it ('[2001:db8::1]:5060'), else no looped Via would ever match."""
        return cls(frozenset(Via("UDP", host, port).sent_by.lower() for host, port in addresses))

    def __call__(self, context: RequestContext) -> Next:
        refusal = check_request(context.request, self.our_sent_by)
        if refusal is None:
            return Next.CONTINUE
        context.response = refusal
        return Next.STOP


@dataclass(frozen=True)
class RouteToken:
    """Reads the phone flow our own Route names, then pops our Route entries (§16.4)."""

    is_ours: Callable[[Uri], bool]
    flow_of: FlowOf

    def __call__(self, context: RequestContext) -> Next:
        context.token_target = self.read(context.request, beyond_cloud=False)
        if context.request.to_tag is not None or context.request.method == "ACK":
            context.far_target = self.read(context.request, beyond_cloud=True)
        preprocess_routes(context.request, self.is_ours)
        return Next.CONTINUE

    def read(self, request: Request, beyond_cloud: bool) -> Flow | None:
        """The flow named by the last of our topmost Route entries (the one facing where the request
        goes next; see `routing.forking.record_route`). With `beyond_cloud`, the last of ours anywhere
        in the route set: in local mode a dialog that went through the (dead) cloud is short-cut to the
        office phone at its other end."""
        ours = []
        for route in request.routes:
            if self.is_ours(route.uri):
                ours.append(route.uri)
            elif not beyond_cloud:
                break
        if not ours:
            return None
        uri = ours[-1]
        target = read_token(uri.user) if isinstance(uri, SipUri) and uri.user else None
        if target is None:
            return None
        transport, host, port = target
        return self.flow_of(transport, (host, port))
