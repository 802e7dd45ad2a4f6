"""The relay in online mode: phones on the LAN reach the cloud PBX through the edge, and back.

- From the LAN, every request goes to the cloud's outbound proxy with the
  Request-URI unchanged. REGISTER gets a Path naming the phone's flow
  (RFC 3327), so calls come back through us; dialog-creating requests get a
  double Record-Route (LAN and WAN side), so the whole dialog stays with us.
  The cloud's digest challenges pass through untouched (end-to-end auth).
- From the cloud, a request is delivered over the flow its Path or route
  token names, else the flow of the binding its Request-URI names, else to
  the Request-URI's address on the LAN.
- The cloud's 200 to a REGISTER updates the binding mirror.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from vaxelbox.edge.admission import Admission
from vaxelbox.edge.bindings import BindingMirror, bare_uri
from vaxelbox.edge.flowtoken import make_token, read_token
from vaxelbox.edge.upstream import Upstream
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.proxy import (
    Branch,
    ProxyCall,
    cancel_for,
    check_request,
    forward_copy,
    new_branch,
    preprocess_routes,
    strip_top_via,
)
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import Running, SipStack
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import Via

log = logging.getLogger("vaxelbox.edge.relay")

Side = Literal["lan", "wan"]
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")
TIMER_C = 180.0  # §16.6 step 11: a branch still ringing after this long is cancelled
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, UPDATE, PRACK"


@dataclass(frozen=True, slots=True)
class EdgeAddresses:
    lan: tuple[str, int]  # where the phones reach us
    wan: tuple[str, int]  # where the cloud reaches us

    def uri(self, side: Side, transport: str, user: str | None = None) -> str:
        host, port = self.lan if side == "lan" else self.wan
        host = f"[{host}]" if ":" in host else host
        return f"sip:{user + '@' if user else ''}{host}:{port};transport={transport};lr"


class EdgeRelay:
    def __init__(
        self,
        stack: SipStack,
        addresses: EdgeAddresses,
        upstream: Upstream,
        bindings: BindingMirror,
        admission: Admission | None = None,
    ) -> None:
        self.stack = stack
        self.addresses = addresses
        self.upstream = upstream
        self.bindings = bindings
        self.admission = admission or Admission()
        self.calls: dict[int, ProxyCall] = {}
        self.on_cloud_signal: Callable[[bool], None] = lambda ok: None  # fed to the health monitor
        self._ours = {addresses.lan, addresses.wan}
        self._tasks: set[asyncio.Task[None]] = set()
        stack.user = self

    # -- the transaction user -------------------------------------------------------------------

    def admit(self, message: Request | Response, flow: Flow) -> bool:
        """Phones on the LAN, the cloud on the WAN, no scanners; refused messages get no answer."""
        source = flow.remote[0]
        if self.admission.is_banned(source):
            return False
        if isinstance(message, Request) and not self.admission.screen(message, source):
            return False
        if self.side_of(flow) == "wan" and not self.upstream.is_cloud(source):
            log.warning("refused: source=%s is not the cloud, on the WAN side", source)
            return False
        return True

    def on_request(self, transaction: Running, request: Request) -> None:
        side = self.side_of(transaction.flow)
        if self._addressed_to_us(request):
            self._answer_ourselves(transaction, request)
            return
        refusal = check_request(request, {f"{h}:{p}" for h, p in self._ours})
        if refusal is not None:
            self.stack.respond(transaction, refusal)
            return
        token_target = self._route_token(request)
        preprocess_routes(request, self.is_ours)
        if side == "wan":
            self._to_phone(transaction, request, token_target)
        elif (flow := self.upstream.ready_flow()) is not None:
            self._to_cloud(transaction, request, flow)
        else:
            self._spawn(
                self._connect_then(lambda flow: self._to_cloud(transaction, request, flow), transaction)
            )

    def on_cancel(self, invite: Running, cancel: Request) -> None:
        call = self.calls.get(id(invite))
        if call is not None:
            call.cancel()

    def on_stray(self, message: Request | Response, flow: Flow) -> None:
        """A 2xx ACK or a late 2xx: forwarded statelessly (§16.7 step 10, §16.11)."""
        side = self.side_of(flow)
        if isinstance(message, Response):
            self._forward_stray_response(message)
            return
        if message.method != "ACK":
            return
        token_target = self._route_token(message)
        preprocess_routes(message, self.is_ours)
        if side == "lan":
            if (flow := self.upstream.ready_flow()) is not None:
                flow.send(self._forward(message, flow, "wan").to_bytes())
            else:
                self._spawn(
                    self._connect_then(lambda flow: flow.send(self._forward(message, flow, "wan").to_bytes()))
                )
        else:
            target = self._phone_flow(message, token_target)
            if target is not None:
                target.send(self._forward(message, target, "lan").to_bytes())

    # -- to the cloud ---------------------------------------------------------------------------

    async def _connect_then(self, send: Callable[[Flow], None], transaction: Running | None = None) -> None:
        """Open the way to the cloud, then send; a request we cannot send gets a 503."""
        try:
            flow = await self.upstream.flow()
        except OSError as exc:
            log.warning("cloud unreachable: %s", exc)
            self.on_cloud_signal(False)
            if transaction is not None:
                request = transaction.machine.request
                self.stack.respond(transaction, make_response(request, 503, "Service Unavailable"))
            return
        send(flow)

    def _to_cloud(self, transaction: Running, request: Request, flow: Flow) -> None:
        if request.method == "REGISTER":
            phone = transaction.flow
            token = make_token(phone.transport, *phone.remote)
            copy = self._forward(request, flow, "wan")
            copy.add("Path", f"<{self.addresses.uri('wan', flow.transport, token)}>", first=True)
            copy.add("Supported", "path")
        else:
            record = self._record_route(request, toward="wan", next_flow=flow, previous=transaction.flow)
            copy = self._forward(request, flow, "wan", record)
        self._proxy(transaction, request, copy, flow)

    # -- to the phones --------------------------------------------------------------------------

    def _to_phone(self, transaction: Running, request: Request, token_target: Flow | None) -> None:
        flow = self._phone_flow(request, token_target)
        if flow is None:
            self.stack.respond(transaction, make_response(request, 480, "Temporarily Unavailable"))
            return
        record = self._record_route(request, toward="lan", next_flow=flow, previous=transaction.flow)
        self._proxy(transaction, request, self._forward(request, flow, "lan", record), flow)

    def _phone_flow(self, request: Request, token_target: Flow | None) -> Flow | None:
        if token_target is not None and token_target.alive:
            return token_target
        if (flow := self.bindings.flow_for(bare_uri(request.uri))) is not None:
            return flow
        uri = request.routes[0].uri if request.routes else request.uri
        if not isinstance(uri, SipUri):
            return None
        port = uri.port or 5060
        transport = uri.transport or "udp"
        if transport != "udp":
            return self.stack.transports.stream_flow(transport, (uri.host, port))
        return self.stack.transports.udp_flow((uri.host, port), local=self.addresses.lan)

    def _route_token(self, request: Request) -> Flow | None:
        """The phone flow named by the user part of our own topmost Route (our Path or Record-Route)."""
        for route in request.routes:
            uri = route.uri
            if not self.is_ours(uri):
                return None
            if isinstance(uri, SipUri) and uri.user and (target := read_token(uri.user)):
                transport, host, port = target
                if transport == "udp":
                    return self.stack.transports.udp_flow((host, port), local=self.addresses.lan)
                return self.stack.transports.stream_flow(transport, (host, port))
        return None

    # -- proxying -------------------------------------------------------------------------------

    def _proxy(self, transaction: Running, request: Request, copy: Request, flow: Flow) -> None:
        call = ProxyCall(
            request,
            send_branch=lambda branch: self._send_branch(branch, flow, transaction, request),
            send_cancel=lambda branch: self._send_cancel(branch, flow),
            respond=lambda response: self._respond(transaction, request, response),
        )
        self.calls[id(transaction)] = call
        call.start([copy])

    def _send_branch(self, branch: Branch, flow: Flow, transaction: Running, request: Request) -> None:
        call = self.calls[id(transaction)]
        timer_c = None
        if branch.request.method == "INVITE":
            timer_c = asyncio.get_running_loop().call_later(TIMER_C, call.ring_timeout, branch)

        def on_response(response: Response) -> None:
            if self.side_of(flow) == "wan":
                self.on_cloud_signal(True)
            if timer_c is not None and response.status >= 200:
                timer_c.cancel()  # and with it the last reference to a finished call
            call.on_response(branch, response)

        def on_timeout() -> None:
            if self.side_of(flow) == "wan":
                self.on_cloud_signal(False)
            if timer_c is not None:
                timer_c.cancel()
            call.on_timeout(branch)

        self.stack.send_request(branch.request, flow, on_response, on_timeout)

    def _send_cancel(self, branch: Branch, flow: Flow) -> None:
        self.stack.send_request(cancel_for(branch.request), flow, lambda r: None, lambda: None)

    def _respond(self, transaction: Running, request: Request, response: Response) -> None:
        if request.method == "REGISTER" and 200 <= response.status < 300:
            self.bindings.update(request, response, transaction.flow)
        self.stack.respond(transaction, response)
        if response.status >= 200 and request.method != "INVITE":
            self.calls.pop(id(transaction), None)
        elif response.status >= 200 and self.calls.get(id(transaction)) is not None:
            # Keep INVITE calls until their transaction ends, for CANCEL; bounded by Timer L/H.
            asyncio.get_running_loop().call_later(
                64 * self.stack.timers.t1, self.calls.pop, id(transaction), None
            )

    def _forward(
        self, request: Request, flow: Flow, side: Side, record_route: tuple[str, ...] = ()
    ) -> Request:
        host, port = self.addresses.lan if side == "lan" else self.addresses.wan
        params: dict[str, str | None] = {"branch": new_branch(request), "rport": None}
        if side == "wan" and flow.reliable:
            params["alias"] = None  # RFC 5923: the cloud may send its requests back on this connection
        via = Via(flow.transport.upper(), host, port, params)
        return forward_copy(request, via, record_route=record_route)

    def _record_route(
        self, request: Request, toward: Side, next_flow: Flow, previous: Flow
    ) -> tuple[str, ...]:
        """Both our URIs for a new dialog: the one facing the next hop first (RFC 5658 double RR)."""
        if request.method not in DIALOG_CREATING or request.to.tag is not None:
            return ()
        back: Side = "lan" if toward == "wan" else "wan"
        token = make_token(previous.transport, *previous.remote) if back == "lan" else None
        return (
            self.addresses.uri(toward, next_flow.transport),
            self.addresses.uri(back, previous.transport, token),
        )

    def _forward_stray_response(self, response: Response) -> None:
        top = response.vias[0] if response.vias else None
        if top is None or (top.host, top.port or 5060) not in self._ours:
            return
        upstream = strip_top_via(response)
        if not upstream.vias:
            return
        via = upstream.vias[0]
        host = via.params.get("received") or via.host
        port = int(via.params.get("rport") or via.port or 5060)
        transport = via.transport.lower()
        flow: Flow | None
        if transport == "udp":
            local = self.addresses.wan if self.upstream.is_cloud(host) else self.addresses.lan
            flow = self.stack.transports.udp_flow((host, port), local=local)
        else:
            flow = self.stack.transports.stream_flow(transport, (host, port))
        if flow is not None:
            flow.send(upstream.to_bytes())

    # -- helpers --------------------------------------------------------------------------------

    def side_of(self, flow: Flow) -> Side:
        return "lan" if tuple(flow.local) == self.addresses.lan else "wan"

    def is_ours(self, uri: Uri) -> bool:
        return isinstance(uri, SipUri) and (uri.host, uri.port or 5060) in self._ours

    def _addressed_to_us(self, request: Request) -> bool:
        uri = request.uri
        return (
            request.method == "OPTIONS"
            and not request.routes
            and isinstance(uri, SipUri)
            and uri.user is None
            and self.is_ours(uri)
        )

    def _answer_ourselves(self, transaction: Running, request: Request) -> None:
        response = make_response(request, 200, "OK")
        response.add("Allow", ALLOW)
        self.stack.respond(transaction, response)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
