"""The asyncio driver of the transaction layer: matches messages to transactions, runs their timers.

The transaction user (a proxy, a registrar, a prober) implements `TransactionUser`;
it receives new requests with their server transaction, and responses or
timeouts for the requests it sent. Everything that does not match a
transaction (2xx ACKs, stray 2xx retransmissions) goes to the user too, as
RFC 3261 wants a proxy to forward those statelessly.
"""

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transaction import (
    Action,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    StartTimer,
    State,
    StopTimer,
    Terminated,
    TimedOut,
    TimerSettings,
    ToUser,
    Transaction,
    client_key,
    server_key,
)
from vaxelbox.sip.transport import Flow, TransportLayer
from vaxelbox.sip.via import MAGIC_COOKIE
from vaxelbox.sip.waits import LONG, WAIT_TIMERS, Wait, Waits

log = logging.getLogger("vaxelbox.sip.stack")
_TOP_BRANCH = re.compile(rb"\r\n(?:via|v)[ \t]*:[^\r\n]*?;[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.I)
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r\n", re.I)

Cancellable = asyncio.TimerHandle | Wait
ResponseHandler = Callable[[Response], None]
TimeoutHandler = Callable[[], None]


class TransactionUser(Protocol):
    def admit(self, message: Request | Response, flow: Flow) -> bool: ...
    def on_request(self, transaction: "ServerTx", request: Request) -> None: ...
    def on_cancel(self, invite: "ServerTx", cancel: Request) -> None: ...
    def on_stray(self, message: Request | Response, flow: Flow) -> None: ...


@dataclass(eq=False, slots=True)
class Running:
    """A transaction with what the driver needs to run it: its flow, its timers, its user."""

    machine: Transaction
    flow: Flow
    key: tuple[str, ...]
    on_response: ResponseHandler | None = None  # None once the user let go (see `release`)
    on_timeout: TimeoutHandler | None = None
    timers: dict[str, Cancellable] = field(default_factory=dict)


ServerTx = Running


class SipStack:
    def __init__(self, transports: TransportLayer, timers: TimerSettings | None = None) -> None:
        self.transports = transports
        self.timers = timers or TimerSettings()
        self.user: TransactionUser | None = None
        self.clients: dict[tuple[str, ...], Running] = {}
        self.servers: dict[tuple[str, ...], Running] = {}
        self._server_branches: Counter[str] = Counter()  # of live server transactions, for taken_on
        self._waits = Waits()
        transports.on_message = self.on_message
        transports.on_flow_closed = self._flow_closed
        transports.taken_on = self.taken_on
        transports.transactions = lambda: len(self.servers) + len(self.clients)

    # -- outgoing -------------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        flow: Flow,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        machine: ClientInviteTransaction | ClientNonInviteTransaction | None = None,
    ) -> Running:
        """Start a client transaction; the request's top Via must carry a fresh branch.
        `machine`: a transaction of the user's own for `request` (a probe sent once, edge.health)."""
        if machine is None:
            kind = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
            machine = kind(request, flow.reliable, self.timers)
        running = Running(machine, flow, client_key(request), on_response, on_timeout)
        self.clients[running.key] = running
        self._run(running, machine.start())
        return running

    def release(self, running: Running) -> None:
        """The user is done with a client transaction that had its final response: what it held for
        the call is freed at once, not half a minute later. Later 2xx retransmissions go to the
        user's `on_stray`, as a proxy forwards them statelessly anyway (RFC 6026 §7.2); so a client
        INVITE released as it is accepted does not wait for Timer M (32 s) at all."""
        running.on_response = running.on_timeout = None

    def respond(self, transaction: Running, response: Response) -> None:
        machine = transaction.machine
        assert isinstance(machine, ServerInviteTransaction | ServerNonInviteTransaction)
        self._run(transaction, machine.respond(response))

    # -- incoming -------------------------------------------------------------------------------

    def on_message(self, message: Request | Response, flow: Flow) -> None:
        if self.user is not None and not self.user.admit(message, flow):
            self.transports.stats["refused"] += 1  # silently: a scanner learns nothing
            return
        if isinstance(message, Response):
            running = self.clients.get(client_key(message))
            if running is None:
                self._stray(message, flow)
                return
            machine = running.machine
            assert isinstance(machine, ClientInviteTransaction | ClientNonInviteTransaction)
            self._run(running, machine.on_response(message))
            return
        key = server_key(message)
        existing = self.servers.get(key)
        if message.method == "ACK":
            if existing is not None and isinstance(existing.machine, ServerInviteTransaction):
                self._run(existing, existing.machine.on_request(message))
            else:
                self._stray(message, flow)  # the ACK for a 2xx: end to end, not ours
            return
        if existing is not None:
            machine = existing.machine
            assert isinstance(machine, ServerInviteTransaction | ServerNonInviteTransaction)
            self._run(existing, machine.on_request(message))
            return
        self._new_server_transaction(message, key, flow)

    def taken_on(self, data: bytes) -> bool:
        """Whether raw request bytes retransmit a request a server transaction holds (read without
        parsing: the top Via's branch, or for an RFC 2543 peer without one, the Call-ID): overload
        control never refuses those."""
        found = _TOP_BRANCH.search(data)
        branch = found.group(1).decode(errors="replace") if found else ""
        if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
            return branch in self._server_branches
        call_id = _CALL_ID.search(data)  # an RFC 2543 peer's request: known by its Call-ID
        return (
            call_id is not None
            and _old_style(call_id.group(1).decode("utf-8", "surrogateescape")) in self._server_branches
        )

    def _new_server_transaction(self, request: Request, key: tuple[str, ...], flow: Flow) -> None:
        self._server_branches[_taken_key(key)] += 1
        if request.method == "INVITE":
            machine: Transaction = ServerInviteTransaction(request, flow.reliable, self.timers)
            running = Running(machine, flow, key)
            self.servers[key] = running
            self._run(running, machine.start(make_response(request, 100, "Trying")))
            return
        machine = ServerNonInviteTransaction(request, flow.reliable, self.timers)
        running = Running(machine, flow, key)
        self.servers[key] = running
        if request.method == "CANCEL":
            # §16.10: answer the CANCEL itself at once, then cancel the INVITE it names.
            invite = self.servers.get((*key[:-1], "INVITE"))
            status = (200, "OK") if invite is not None else (481, "Call/Transaction Does Not Exist")
            self.respond(running, make_response(request, *status))
            if invite is not None and self.user is not None:
                self.user.on_cancel(invite, request)
            return
        self._run(running, machine.start())

    def _stray(self, message: Request | Response, flow: Flow) -> None:
        if self.user is not None:
            try:
                self.user.on_stray(message, flow)
            except SipSyntaxError as error:
                self._malformed(message, error, None)

    # -- actions --------------------------------------------------------------------------------

    def _run(self, running: Running, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                message = action.message
                running.flow.send(message if isinstance(message, bytes) else message.to_bytes())
            elif isinstance(action, StartTimer):
                self._start_timer(running, action)
            elif isinstance(action, StopTimer):
                if handle := running.timers.pop(action.name, None):
                    handle.cancel()
            elif isinstance(action, ToUser):
                self._to_user(running, action.message)
            elif isinstance(action, TimedOut):
                self._timed_out(running)
            elif isinstance(action, Terminated):
                self._forget(running)

    def _start_timer(self, running: Running, action: StartTimer) -> None:
        if old := running.timers.pop(action.name, None):
            old.cancel()
        if action.name == "M" and running.on_response is None:
            # A released client INVITE would only hand 2xx retransmissions to on_stray, where a
            # response matching no transaction goes anyway (RFC 6026 §7.2): it need not wait.
            self._forget(running)
            return
        if action.name in WAIT_TIMERS and action.delay > 0:
            self._waits.call_later(action.delay, self._fire, running, action.name)  # never stopped
            if not running.timers:
                running.timers = {}  # a dict that held timers keeps its larger table: this one waits long
            return
        running.timers[action.name] = self.call_later(action.delay, self._fire, running, action.name)

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Cancellable:
        """asyncio's call_later, or for a delay of `waits.LONG` s or more (Timers B, F, H, C: nearly
        always stopped long before due) the bulk queue, which may fire it up to 0.1 s late."""
        if delay >= LONG:
            return self._waits.call_later(delay, callback, *args)
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    def _fire(self, running: Running, name: str) -> None:
        running.timers.pop(name, None)
        self._run(running, running.machine.on_timer(name))

    def _to_user(self, running: Running, message: Request | Response) -> None:
        try:
            if isinstance(message, Response):
                if running.on_response is not None:
                    running.on_response(message)
                else:  # its user let go after the final response: a late 2xx goes on statelessly
                    self._stray(message, running.flow)
            elif self.user is not None:
                self.user.on_request(running, message)
        except SipSyntaxError as error:
            self._malformed(message, error, running)
        except Exception:  # a bug above: this transaction still runs to its end (its ACK, timers)
            self._user_failed(repr(message), running, message)

    def _timed_out(self, running: Running) -> None:
        try:
            if running.on_timeout is not None:
                running.on_timeout()
        except Exception:  # a bug above: the transaction still ends (Terminated comes next)
            self._user_failed("a timeout", running)

    def _user_failed(self, what: str, running: Running, message: Request | Response | None = None) -> None:
        """The user raised on `what`: logged and counted, and a request still waiting for its final
        response is answered 500. Otherwise its transaction would stay for ever (a server transaction
        has no timer before its final response), counted against the ceiling."""
        self.transports.stats["handler_errors"] += 1
        log.exception("transaction user failed on %s", what)
        if isinstance(message, Request) and awaits_final(running):
            self.respond(running, make_response(message, 500, "Server Internal Error"))

    def _malformed(self, message: Request | Response, error: SipSyntaxError, running: Running | None) -> None:
        """A field found malformed only when the user read it (see sip.message): a request still
        waiting for its final response gets a 400 saying which; anything else is dropped, logged."""
        self.transports.stats["malformed"] += 1
        if isinstance(message, Request) and awaits_final(running):
            log.info("400 to %s %s: %s", message.method, message.call_id, error)
            self.respond(running, make_response(message, 400, f"Bad Request ({error})"))  # type: ignore[arg-type]
        else:
            log.warning("dropped %r from the processing: %s", message, error)

    def _forget(self, running: Running) -> None:
        for handle in running.timers.values():
            handle.cancel()
        running.timers.clear()
        table = self.clients if running.key in self.clients else self.servers
        if table.get(running.key) is running:
            del table[running.key]
            if table is self.servers:
                branch = _taken_key(running.key)
                self._server_branches[branch] -= 1
                if self._server_branches[branch] <= 0:
                    del self._server_branches[branch]

    def _flow_closed(self, flow: Flow) -> None:
        for running in [r for r in self.clients.values() if r.flow is flow]:
            self._run(running, running.machine.on_transport_error())


def _taken_key(key: tuple[str, ...]) -> str:
    """What `taken_on` finds a live server transaction by: its branch, or for an RFC 2543 peer's
    request (keyed "rfc2543", Request-URI, From tag, Call-ID, ...) its Call-ID."""
    return key[0] if key[0] != "rfc2543" else _old_style(key[3])


def _old_style(call_id: str) -> str:
    return f"rfc2543 {call_id}"  # never a branch: a branch has no white space


def awaits_final(running: Running | None) -> bool:
    """Whether `running` is a server transaction still owing its request a final response."""
    machine = running.machine if running is not None else None
    return isinstance(machine, ServerInviteTransaction | ServerNonInviteTransaction) and machine.state in (
        State.TRYING,
        State.PROCEEDING,
    )
