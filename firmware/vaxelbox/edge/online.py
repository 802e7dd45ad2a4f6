"""The online processors: phones' requests go to the cloud PBX, the cloud's requests to the phones.

- From the LAN, every request goes to the cloud's outbound proxy with the
  Request-URI unchanged (the target chain adds Path to REGISTER and a double
  Record-Route to dialog-creating requests, so everything comes back through us).
  The cloud's digest challenges pass through untouched (end-to-end auth).
- From the cloud, a request is delivered over the flow its Path or route
  token names, else the flow of the binding its Request-URI names, else to
  the Request-URI's address on the LAN.
"""

from dataclasses import dataclass

from vaxelbox.edge.bindings import BindingMirror, bare_uri
from vaxelbox.edge.front import FlowOf
from vaxelbox.routing.chain import Next, RequestContext, Target
from vaxelbox.sip.message import Request
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri


@dataclass(frozen=True)
class PhoneLocator:
    """Where a request for a phone goes: the token's flow, the binding's flow, or the URI's address."""

    bindings: BindingMirror
    flow_of: FlowOf

    def __call__(self, request: Request, token_target: Flow | None) -> Flow | None:
        if token_target is not None and token_target.alive:
            return token_target
        contact = bare_uri(request.uri)
        if (flow := self.bindings.flow_for(contact)) is not None:
            return flow
        if self.bindings.unreachable(contact):
            return None  # its connection died: the URI's address (behind a NAT) reaches nobody
        uri = request.routes[0].uri if request.routes else request.uri
        if not isinstance(uri, SipUri):
            return None
        return self.flow_of(uri.transport or "udp", (uri.host, uri.port or 5060))


@dataclass(frozen=True)
class FromCloud:
    """A request from the cloud (WAN side), in either mode: to the phone it names, or 480."""

    locate: PhoneLocator

    def __call__(self, context: RequestContext) -> Next:
        if context.side != "wan":
            return Next.CONTINUE
        flow = self.locate(context.request, context.token_target)
        if flow is None:
            context.response = make_response(context.request, 480, "Temporarily Unavailable")
        else:
            context.targets = [Target("lan", flow, label=f"phone {flow.remote[0]}")]
            context.route = "cloud to phone"
        return Next.STOP


def between_phones(context: RequestContext) -> Next:
    """A dialog set up in local mode between two office phones stays between them after failback:
    its route set names only us, and the last of our entries names the far phone's flow. (A dialog
    through the cloud names the cloud after our first entry, so no token is read and it goes on.)"""
    request = context.request
    if context.side != "lan" or context.token_target is None or request.to_tag is None:
        return Next.CONTINUE
    context.targets = [Target("lan", context.token_target, label="far end of the dialog")]
    context.route = "in-dialog, phone to phone"
    return Next.STOP


def to_cloud(context: RequestContext) -> Next:
    """A phone's request, online: to the cloud's outbound proxy, Request-URI unchanged."""
    context.targets = [Target("wan", None, label="cloud")]
    context.route = "phone to cloud"
    return Next.STOP
