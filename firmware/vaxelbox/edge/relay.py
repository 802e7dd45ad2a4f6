"""The relay: the edge's one transaction user. It runs the request chain and acts on what it settled.

    request chain:  AnswerOptions -> ProxyChecks -> RouteToken -> services -> FromCloud -> ModeGate
                                                                     online: auth guard, to_cloud
                                                                     local:  vaxelbox.local.processors
    target chain:   routing.forking (one branch per target, each on its own flow), or, for a local
                    route plan, local.plan_runner (rings, no-answer and busy fallbacks)
    response chain: health signal, binding mirror, auth guard (and call records)
    services:       what the edge serves itself in both modes (presence: SUBSCRIBE, the cloud's NOTIFY)
    call observers: see every settled request, branch response and response to the requester
                    (the presence server's view of the office's calls)

Online and local mode differ only in the processors the mode gate picks. The
policy lives in the processors (`edge/online.py`, `local/`); this module only
plumbs them to the transaction layer.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from vaxelbox.edge.admission import Admission
from vaxelbox.edge.auth_guard import AuthGuard
from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.front import AnswerOptions, ProxyChecks, RouteToken
from vaxelbox.edge.online import FromCloud, PhoneLocator, between_phones, to_cloud
from vaxelbox.edge.upstream import Upstream
from vaxelbox.routing.calls import CallTable
from vaxelbox.routing.chain import (
    Chain,
    ModeGate,
    Processor,
    RequestContext,
    ResponseChain,
    ResponseProcessor,
    Side,
    Target,
)
from vaxelbox.routing.forking import EdgeAddresses, Forking, Scheduler
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.proxy import forward_copy, new_branch, strip_top_via
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import Running, SipStack, awaits_final
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.edge.relay")

__all__ = ["EdgeAddresses", "EdgeRelay"]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Confirmer(Protocol):
    """Answers a request here and hangs up once acknowledged (local.uas.Confirmations)."""

    def answer_and_hang_up(self, transaction: Running, request: Request, why: str) -> None: ...
    def on_ack(self, ack: Request) -> bool: ...


class CallObserver(Protocol):
    """Sees the calls that cross the relay (presence.calls.OfficeCalls): each request once the chain
    settled it, each response on a forked branch (None: the branch timed out), and each response sent
    back to the requester."""

    def request(self, context: RequestContext) -> None: ...
    def branch(self, context: RequestContext, target: Target, response: Response | None) -> None: ...
    def answered(self, context: RequestContext, response: Response) -> None: ...


class PlanExecutor(Protocol):
    """Runs a local route plan for a request (local.plan_runner); returns what cancels it."""

    def __call__(self, context: RequestContext, respond: Callable[[Response], None]) -> Cancellable: ...


class EdgeRelay:
    def __init__(
        self,
        stack: SipStack,
        addresses: EdgeAddresses,
        upstream: Upstream,
        bindings: BindingMirror,
        admission: Admission | None = None,
        schedule: Scheduler | None = None,
    ) -> None:
        self.stack = stack
        self.addresses = addresses
        self.upstream = upstream
        self.bindings = bindings
        self.admission = admission or Admission()
        self.calls: dict[int, Cancellable] = {}  # by id(server transaction), for CANCEL
        self.call_table = CallTable()  # the calls in progress, for `vaxelctl calls`
        self.on_cloud_signal: Callable[[bool], None] = lambda ok: None  # fed to the health monitor
        self.mode: Callable[[], Mode] = lambda: Mode.ONLINE
        self.execute_plan: PlanExecutor | None = None
        self.confirmations: Confirmer | None = None  # answers star codes in local mode (local.uas)
        self.is_trunk: Callable[[str], bool] = lambda address: False  # the fallback trunk's addresses
        self._ours = {addresses.lan, addresses.wan, *([addresses.lan_tls] if addresses.lan_tls else [])}
        self._tasks: set[asyncio.Task[None]] = set()
        self.services: list[Processor] = []  # the edge's own services, before the mode gate (presence)
        self.observers: list[CallObserver] = []
        self.auth_guard = AuthGuard()  # holds a phone whose password the cloud keeps refusing
        self.auth_guard.on_suppressed = lambda: upstream.traffic.suppress("auth-guard")
        self.route_token = RouteToken(self.is_ours, self.flow_of)
        self.locate_phone = PhoneLocator(bindings, self.flow_of)
        self.forking = Forking(stack, addresses, schedule or stack.call_later, ResponseChain([]))
        self.set_chains(local=[], responses=[])
        stack.user = self

    def set_chains(self, local: Sequence[Processor], responses: Sequence[ResponseProcessor]) -> None:
        """Install the local processors and extra response processors (the agent does, from local/)."""
        self.request_chain = Chain(
            "request",
            [
                AnswerOptions(self.is_ours),
                ProxyChecks.listening_on(self._ours),
                self.route_token,
                Chain("services", self.services),  # the list itself: services added later count
                FromCloud(self.locate_phone),
                ModeGate(
                    online=Chain("online", [between_phones, self.auth_guard.hold, to_cloud]),
                    local=Chain("local", local),
                ),
            ],
        )
        self.forking = Forking(
            self.stack,
            self.addresses,
            self.forking.schedule,
            ResponseChain(
                [
                    self._health_signal,
                    self._mirror_binding,
                    self.auth_guard.observe,
                    *responses,
                    self._observe,
                ]
            ),
        )

    # -- the transaction user -------------------------------------------------------------------

    def admit(self, message: Request | Response, flow: Flow) -> bool:
        """Phones on the LAN, the cloud on the WAN, no scanners; refused messages get no answer."""
        source = flow.remote[0]
        if self.admission.is_banned(source):
            return False
        if isinstance(message, Request) and not self.admission.screen(message, source):
            return False
        if self.side_of(flow) == "wan" and not self.is_wan_peer(source):
            log.warning("refused: source=%s is not the cloud, on the WAN side", source)
            return False
        self._count_if_cloud(flow)  # our answers to the cloud's requests leave on this flow
        return True

    def on_request(self, transaction: Running, request: Request) -> None:
        context = RequestContext(
            request, transaction.flow, self.side_of(transaction.flow), self.mode(), transaction
        )
        self.request_chain(context)
        self._record_call(context)
        for observer in self.observers:
            observer.request(context)
        if context.response is not None:
            self.stack.respond(transaction, context.response)
        elif context.confirm is not None and self.confirmations is not None:
            self.confirmations.answer_and_hang_up(transaction, request, context.confirm)
        elif context.plan is not None and self.execute_plan is not None:
            self._keep_call(transaction, self.execute_plan(context, lambda r: self._respond(context, r)))
        elif context.targets:
            self._fork(context)
        else:
            log.error("no route settled for %s %s", request.method, request.uri)
            self.stack.respond(transaction, make_response(request, 500, "Server Internal Error"))

    def on_cancel(self, invite: Running, cancel: Request) -> None:
        call = self.calls.get(id(invite))
        if call is not None:
            call.cancel()

    def on_stray(self, message: Request | Response, flow: Flow) -> None:
        """A 2xx ACK or a late 2xx: forwarded statelessly (§16.7 step 10, §16.11)."""
        if isinstance(message, Response):
            self._forward_stray_response(message)
            return
        if message.method != "ACK":
            return
        if self.confirmations is not None and self.confirmations.on_ack(message):
            return  # the ACK for a 2xx we sent ourselves
        context = RequestContext(message, flow, self.side_of(flow), self.mode())
        self.route_token(context)
        if context.side == "wan":
            target = self.locate_phone(message, context.token_target)
            if target is not None:
                target.send(self._stateless_copy(message, target, "lan").to_bytes())
        elif context.mode is Mode.LOCAL:
            if context.far_target is not None:
                context.far_target.send(self._stateless_copy(message, context.far_target, "lan").to_bytes())
            elif (trunk := self.trunk_hop(message)) is not None:
                trunk.send(self._stateless_copy(message, trunk, "wan").to_bytes())
        elif context.token_target is not None:  # a dialog between two office phones (see between_phones)
            context.token_target.send(self._stateless_copy(message, context.token_target, "lan").to_bytes())
        elif context.mode is Mode.ONLINE:
            self._with_cloud_flow(
                lambda flow: flow.send(self._stateless_copy(message, flow, "wan").to_bytes())
            )

    # -- acting on the chain's outcome ------------------------------------------------------------

    def _record_call(self, context: RequestContext) -> None:
        request = context.request
        if request.method == "BYE":
            self.call_table.ended(request.call_id)
        elif request.method == "INVITE" and request.to_tag is None and context.response is None:
            self.call_table.started(request, context.mode.value, context.route, context.caller)

    def _fork(self, context: RequestContext) -> None:
        transaction = context.transaction
        assert transaction is not None
        if all(t.flow is not None for t in context.targets):
            self._start_fork(context, context.targets)
            return

        def with_cloud(flow: Flow) -> None:
            targets = [Target(t.side, t.flow or flow, t.uri, t.label) for t in context.targets]
            self._start_fork(context, targets)

        self._with_cloud_flow(with_cloud, context)

    def _start_fork(self, context: RequestContext, targets: list[Target]) -> None:
        assert context.transaction is not None
        fork = self.forking.fork(context, targets, lambda response: self._respond(context, response))
        self._keep_call(context.transaction, fork)

    def _keep_call(self, transaction: Running, call: Cancellable) -> None:
        """Keep `call` for a CANCEL while `transaction` waits for its final response. A call answered
        before its runner returned (a Reject plan, nobody to ring) is not kept: `_respond` already ran,
        nothing would ever drop it, and it holds the context, the request and the transaction."""
        if awaits_final(transaction):
            self.calls[id(transaction)] = call

    def _respond(self, context: RequestContext, response: Response) -> None:
        transaction = context.transaction
        assert transaction is not None
        self.stack.respond(transaction, response)
        for observer in self.observers:
            observer.answered(context, response)
        if response.status < 200:
            return
        if context.request.method == "INVITE" and context.request.to_tag is None:
            if response.status < 300:
                self.call_table.answered(context.request.call_id)
            else:
                self.call_table.ended(context.request.call_id)
        # A CANCEL after the final response changes nothing (§9.2): the call's state goes now.
        self.calls.pop(id(transaction), None)

    def _with_cloud_flow(self, send: Callable[[Flow], None], context: RequestContext | None = None) -> None:
        if (flow := self.upstream.ready_flow()) is not None:
            send(flow)
        else:
            self._spawn(self._connect_then(send, context))

    async def _connect_then(
        self, send: Callable[[Flow], None], context: RequestContext | None = None
    ) -> None:
        """Open the way to the cloud, then send; a request (`context`) we cannot send gets a 503."""
        try:
            flow = await self.upstream.flow()
        except OSError as exc:
            log.warning("cloud unreachable: %s", exc)
            self.on_cloud_signal(False)
            if context is not None:
                self._respond(context, make_response(context.request, 503, "Service Unavailable"))
            return
        send(flow)

    # -- the response chain's own processors -------------------------------------------------------

    def _health_signal(self, context: RequestContext, target: Target, response: Response | None) -> None:
        """A branch to the cloud answered (or not); a 503 with Retry-After holds that proxy (§21.5.4).
        The fallback trunk, also on the WAN side, says nothing about the cloud."""
        if target.side != "wan" or target.flow is None or not self.upstream.is_cloud(target.flow.remote[0]):
            return
        self.on_cloud_signal(response is not None)
        if response is not None:
            self.upstream.on_response(response, target.flow.remote)

    def _mirror_binding(self, context: RequestContext, target: Target, response: Response | None) -> None:
        """The cloud's 200 to a REGISTER is the truth about a phone's bindings."""
        if response is None or context.request.method != "REGISTER" or target.side != "wan":
            return
        if 200 <= response.status < 300:
            self.bindings.update(context.request, response, context.flow)

    def _observe(self, context: RequestContext, target: Target, response: Response | None) -> None:
        for observer in self.observers:
            observer.branch(context, target, response)

    # -- stateless forwarding ---------------------------------------------------------------------

    def _stateless_copy(self, request: Request, flow: Flow, side: Side) -> Request:
        host, port = self.addresses.local(side, flow.transport)
        params: dict[str, str | None] = {"branch": new_branch(request), "rport": None}
        if side == "wan" and flow.reliable:
            params["alias"] = None
        return forward_copy(request, Via(flow.transport.upper(), host, port, params))

    def _forward_stray_response(self, response: Response) -> None:
        top = response.top_via
        if (top.host, top.port or 5060) not in self._ours:
            return
        upstream = strip_top_via(response)
        if upstream.get("Via") is None:
            return
        via = upstream.top_via
        host = via.params.get("received") or via.host
        port = int(via.params.get("rport") or via.port or 5060)
        flow = self.flow_of(via.transport.lower(), (host, port))
        if flow is not None:
            flow.send(upstream.to_bytes())

    # -- helpers --------------------------------------------------------------------------------

    def flow_of(self, transport: str, address: tuple[str, int]) -> Flow | None:
        """A flow to `address`: over UDP from the side that faces it, else an open connection."""
        if transport == "udp":
            local = self.addresses.wan if self.is_wan_peer(address[0]) else self.addresses.lan
            return self._count_if_cloud(self.stack.transports.udp_flow(address, local=local))
        return self._count_if_cloud(self.stack.transports.stream_flow(transport, address))

    def _count_if_cloud(self, flow: Flow | None) -> Flow | None:
        """`flow`, counted in the cloud's footprint when it leads to the cloud (not the trunk)."""
        if flow is None or self.side_of(flow) != "wan" or self.is_trunk(flow.remote[0]):
            return flow
        return self.upstream.count(flow) if self.upstream.is_cloud(flow.remote[0]) else flow

    def trunk_hop(self, request: Request) -> Flow | None:
        """The flow to the fallback trunk, when the request's next hop (its first Route left, else its
        Request-URI) is one of the trunk's addresses: a dialog that went out through the trunk."""
        uri = request.routes[0].uri if request.routes else request.uri
        if not isinstance(uri, SipUri) or not self.is_trunk(uri.host):
            return None
        return self.flow_of(uri.transport or "udp", (uri.host, uri.port or 5060))

    def is_wan_peer(self, address: str) -> bool:
        return self.upstream.is_cloud(address) or self.is_trunk(address)

    def side_of(self, flow: Flow) -> Side:
        return self.addresses.side_of(flow)

    def is_ours(self, uri: Uri) -> bool:
        if not isinstance(uri, SipUri):
            return False
        return (uri.host, uri.port or (5061 if uri.scheme == "sips" else 5060)) in self._ours

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
