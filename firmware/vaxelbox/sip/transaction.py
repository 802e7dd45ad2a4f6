"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), as pure state machines.

Each transaction is fed events (a message, a timer firing, a transport
error) and answers with actions (send, start or stop a timer, hand a message
to the transaction user, report a timeout, terminate). It never touches a
socket or a clock: the asyncio driver executes the actions, and the tests
drive the machines with a fake clock.

Timer names are the RFC's letters. Over a reliable transport the
retransmission timers are never started and the waiting timers are zero.
"""

import sys
from dataclasses import dataclass
from enum import StrEnum

from vaxelbox.sip.errors import LocalProtocolError
from vaxelbox.sip.message import Header, Request, Response


@dataclass(frozen=True, slots=True)
class TimerSettings:
    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # longest retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # longest time a message stays in the network

    @property
    def timeout(self) -> float:
        return 64 * self.t1  # Timers B, F, H, J, L, M


# -- actions ------------------------------------------------------------------------------------


# Actions are made and dropped a few dozen times per call: plain slotted classes, not frozen ones
# (a frozen dataclass sets each field through object.__setattr__, twice the cost; issue 12).


@dataclass(slots=True)
class Send:
    """A message to send: parsed, or already on the wire (a retransmission)."""

    message: Request | Response | bytes


@dataclass(slots=True)
class StartTimer:
    name: str
    delay: float


@dataclass(slots=True)
class StopTimer:
    name: str


@dataclass(slots=True)
class ToUser:
    """A response for the client transaction's user, or a request (or 2xx ACK) for the server's."""

    message: Request | Response


@dataclass(slots=True)
class TimedOut:
    """No final response in time (client) or no ACK for a final response (server)."""


@dataclass(slots=True)
class Terminated:
    pass


Action = Send | StartTimer | StopTimer | ToUser | TimedOut | Terminated


class State(StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Transaction:
    """What every transaction has: its request, its transport's reliability, its state.

    Once a transaction only waits (Completed, Accepted, Confirmed: up to 64*T1 s), it lets its
    parsed request go (`request` None) and keeps what it may resend as bytes: thousands of
    transactions wait at any time under load, and parsed messages are several times larger."""

    initial_state = State.TRYING
    __slots__ = ("_interval", "_wire", "reliable", "request", "state", "timers")  # many wait at once

    def __init__(self, request: Request, reliable: bool, timers: TimerSettings | None = None) -> None:
        self.request: Request | None = request
        self.reliable = reliable
        self.timers = timers = timers or TimerSettings()
        self.state = self.initial_state
        self._interval = timers.t1  # the current retransmission interval (Timers A, E, G)
        self._wire: bytes | None = None  # the request as sent, once it is resent

    def _resend(self) -> Send:
        """The request again, serialised once for all its retransmissions."""
        if self._wire is None:
            assert self.request is not None, "a waiting transaction resends no request"
            self._wire = self.request.to_bytes()
        return Send(self._wire)

    def _waiting(self) -> None:
        """Nothing left to send but what is kept as bytes: let the parsed request go."""
        self.request = None
        self._wire = None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def on_timer(self, name: str) -> list[Action]:
        """Timer `name` fired (each kind of transaction knows its own)."""
        raise NotImplementedError

    def on_transport_error(self) -> list[Action]:
        """RFC 3261 §17.1.4/§17.2.4: the transport failed; tell the user and end."""
        if self.terminated:
            return []
        return [TimedOut(), *self._terminate()]

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED
        return [Terminated()]

    def _wait(self, name: str, unreliable_delay: float) -> StartTimer:
        """A waiting timer: its delay over UDP, zero over a reliable transport."""
        return StartTimer(name, 0.0 if self.reliable else unreliable_delay)


# -- client side ----------------------------------------------------------------------------------


class ClientInviteTransaction(Transaction):
    """RFC 3261 §17.1.1 with RFC 6026 §7.2: Calling -> Proceeding -> Accepted | Completed."""

    initial_state = State.CALLING
    __slots__ = ("_ack",)

    def start(self) -> list[Action]:
        actions: list[Action] = [Send(self.request), StartTimer("B", self.timers.timeout)]
        if not self.reliable:
            actions.append(StartTimer("A", self._interval))
        return actions

    def on_response(self, response: Response) -> list[Action]:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            stop = [StopTimer("A"), StopTimer("B")]
            if status < 200:
                self.state = State.PROCEEDING
                return [*stop, ToUser(response)]
            if status < 300:
                self.state = State.ACCEPTED
                self._waiting()
                return [*stop, ToUser(response), StartTimer("M", self.timers.timeout)]
            self.state = State.COMPLETED
            assert self.request is not None
            self._ack = ack_for(self.request, response)
            self._waiting()
            return [*stop, ToUser(response), Send(self._ack), self._wait("D", 32.0)]
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [ToUser(response)]  # 2xx retransmissions go to the user, who ACKs them
        if self.state is State.COMPLETED and status >= 300:
            return [Send(self._ack)]
        return []

    def on_timer(self, name: str) -> list[Action]:
        if name == "A" and self.state is State.CALLING:
            self._interval *= 2
            return [self._resend(), StartTimer("A", self._interval)]
        if name == "B" and self.state is State.CALLING:
            return [TimedOut(), *self._terminate()]
        if (name == "D" and self.state is State.COMPLETED) or (name == "M" and self.state is State.ACCEPTED):
            return self._terminate()
        return []


class ClientNonInviteTransaction(Transaction):
    """RFC 3261 §17.1.2: Trying -> Proceeding -> Completed."""

    __slots__ = ()

    def start(self) -> list[Action]:
        actions: list[Action] = [Send(self.request), StartTimer("F", self.timers.timeout)]
        if not self.reliable:
            actions.append(StartTimer("E", self._interval))
        return actions

    def on_response(self, response: Response) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed absorbs retransmitted finals
        if response.status < 200:
            self.state = State.PROCEEDING
            return [ToUser(response)]
        self.state = State.COMPLETED
        self._waiting()
        return [StopTimer("E"), StopTimer("F"), ToUser(response), self._wait("K", self.timers.t4)]

    def on_timer(self, name: str) -> list[Action]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            return [self._resend(), StartTimer("E", self._interval)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            return [TimedOut(), *self._terminate()]
        if name == "K" and self.state is State.COMPLETED:
            return self._terminate()
        return []


# -- server side ----------------------------------------------------------------------------------


class ServerInviteTransaction(Transaction):
    """RFC 3261 §17.2.1 with RFC 6026 §7.1: Proceeding -> Accepted | Completed -> Confirmed."""

    initial_state = State.PROCEEDING
    __slots__ = ("last_response",)

    def __init__(self, request: Request, reliable: bool, timers: TimerSettings | None = None) -> None:
        super().__init__(request, reliable, timers)
        self.last_response: bytes | None = None  # what a retransmitted INVITE is answered with

    def start(self, trying: Response | None = None) -> list[Action]:
        """Hand the INVITE to the user; `trying` (a 100) is sent at once, as a proxy must (§16.2)."""
        assert self.request is not None
        actions: list[Action] = [ToUser(self.request)]
        if trying is not None:
            self.last_response = trying.to_bytes()
            actions.insert(0, Send(self.last_response))
        return actions

    def on_request(self, request: Request) -> list[Action]:
        """A retransmitted INVITE, or the ACK for a non-2xx final response."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                return [StopTimer("G"), StopTimer("H"), self._wait("I", self.timers.t4)]
            return []
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            return [Send(self.last_response)]
        return []  # Accepted and Confirmed absorb retransmissions

    def respond(self, response: Response) -> list[Action]:
        """The user's response: provisional, 2xx or another final."""
        status = response.status
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [Send(response)]  # the user retransmits its 2xx itself
        if self.state is not State.PROCEEDING:
            raise LocalProtocolError(f"{status} to {_label(response)} in state {self.state}")
        self.last_response = wire = response.to_bytes()
        if status < 200:
            return [Send(wire)]
        self._waiting()
        if status < 300:
            self.state = State.ACCEPTED
            self.last_response = None  # Accepted absorbs retransmitted INVITEs: nothing to resend
            return [Send(wire), StartTimer("L", self.timers.timeout)]
        self.state = State.COMPLETED
        actions: list[Action] = [Send(wire), StartTimer("H", self.timers.timeout)]
        if not self.reliable:
            actions.append(StartTimer("G", self._interval))
        return actions

    def on_timer(self, name: str) -> list[Action]:
        if name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            self._interval = min(2 * self._interval, self.timers.t2)
            return [Send(self.last_response), StartTimer("G", self._interval)]
        if name == "H" and self.state is State.COMPLETED:
            return [StopTimer("G"), TimedOut(), *self._terminate()]
        if (name == "I" and self.state is State.CONFIRMED) or (name == "L" and self.state is State.ACCEPTED):
            return self._terminate()
        return []


class ServerNonInviteTransaction(Transaction):
    """RFC 3261 §17.2.2: Trying -> Proceeding -> Completed."""

    __slots__ = ("last_response",)

    def __init__(self, request: Request, reliable: bool, timers: TimerSettings | None = None) -> None:
        super().__init__(request, reliable, timers)
        self.last_response: bytes | None = None  # what a retransmitted request is answered with

    def start(self) -> list[Action]:
        assert self.request is not None
        return [ToUser(self.request)]

    def on_request(self, request: Request) -> list[Action]:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            return [Send(self.last_response)]
        return []  # Trying absorbs retransmissions

    def respond(self, response: Response) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise LocalProtocolError(f"{response.status} to {_label(response)} in state {self.state}")
        self.last_response = wire = response.to_bytes()
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Send(wire)]
        self.state = State.COMPLETED
        self._waiting()
        return [Send(wire), self._wait("J", self.timers.timeout)]

    def on_timer(self, name: str) -> list[Action]:
        if name == "J" and self.state is State.COMPLETED:
            return self._terminate()
        return []


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


def _label(response: Response) -> str:
    """The request a response answers, for errors: its method and Call-ID (the request may be gone)."""
    method = (response.get("CSeq") or "").rpartition(" ")[2]
    return f"{method} {response.get('Call-ID')}"


def ack_for(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3)."""
    keep = ("via", "route", "from", "call-id", "max-forwards")
    headers = [h for h in invite.headers if h.key in keep]
    # Only the top Via: the ACK goes exactly where the INVITE went.
    via_index = next(i for i, h in enumerate(headers) if h.key == "via")
    top_via = invite.top_via
    headers = [h for h in headers if h.key != "via"]
    headers.insert(via_index, Header("Via", str(top_via)))
    headers.append(Header("To", response.get("To") or ""))
    headers.append(Header("CSeq", f"{invite.cseq[0]} ACK"))
    return Request("ACK", invite.uri, headers)


# -- matching -----------------------------------------------------------------------------------


def client_key(message: Request | Response) -> tuple[str, str]:
    """§17.1.3: a response matches the client transaction with its top branch and CSeq method."""
    branch = message.top_via.branch or ""
    method = message.method if isinstance(message, Request) else message.cseq[1]
    return branch, method


def server_key(request: Request) -> tuple[str, ...]:
    """§17.2.3: the server transaction a request belongs to; ACK matches its INVITE.

    Requests from RFC 2543 peers (no magic cookie) fall back to the older
    rule: Request-URI, From tag, Call-ID, CSeq number and top Via.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith("z9hG4bK") and len(branch) > len("z9hG4bK"):
        return branch, sys.intern(via.sent_by.lower()), method  # one copy per peer, not per transaction
    return (
        "rfc2543",
        str(request.uri),
        request.from_tag or "",
        request.call_id,
        str(request.cseq[0]),
        str(via),
        method,
    )
