"""SIP over UDP, TCP and TLS with asyncio: listeners, reusable flows, limits, and the 400 for junk.

A flow is one path to a peer: a UDP socket and a remote address, or one TCP
or TLS connection. Messages arrive with the flow they came on, so whoever
answers or reaches that peer later uses the same path (NAT- and
connection-safe, as RFC 5626 intends). Nothing a peer sends can raise out of
here: a malformed request gets a stateless 400 (or 505, or 513 when too
large), a malformed response is dropped, and each is counted.
"""

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import ssl
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from vaxelbox.sip.errors import SipParseError
from vaxelbox.sip.framing import Frame, FramingError, Ping, StreamFramer
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.overload import (
    SHED_TAG,
    OverloadControl,
    acks_a_refusal,
    carries_credentials,
    starts_new_work,
    transactions_for_ram,
)
from vaxelbox.sip.responses import error_response_for_raw

HostPort = tuple[str, int]
MessageHandler = Callable[[Request | Response, "Flow"], None]
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024
MAX_UDP_PEERS = 8192  # flows kept per UDP socket (an office has hundreds of phones)
RECEIVE_SIZE = 65_536  # one datagram, whatever its size (larger than max_message: 513, not cut)
READ_BATCH = 64  # datagrams read per wake-up of a UDP socket
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the socket module lacks the name
_TIMESPEC = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
LAG_TICK = 0.05  # s between two looks at the event loop's lateness (streams' sojourn)
LAG_TARGET, LAG_INTERVAL = 0.100, 0.200  # s: a loop that late that long is overloaded
SHED_LOG_EVERY = 1000  # refusals between two log lines: a flood must not flood the log
_flow_ids = itertools.count(1)
log = logging.getLogger("vaxelbox.sip.transport")


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int = 65_535  # octets; larger -> 513 (UDP) or closed connection (streams)
    rate: float = 200.0  # messages per second per source address, sustained; 0 = no limit
    burst: float = 400.0
    tracked_sources: int = 10_000  # bounded memory under a spoofed-source flood
    pong_timeout: float = 10.0  # seconds a ping on our own connection waits for its pong (RFC 5626 §4.4.1)
    keepalive_idle: int = 30  # seconds of silence before TCP probes a phone's connection
    keepalive_interval: int = 5  # seconds between those probes
    keepalive_probes: int = 3  # unanswered TCP probes before the connection is dead
    max_transactions: int = transactions_for_ram(1024)  # live ones; beyond, new work gets 503

    @property
    def keepalive_window(self) -> int:
        """Seconds after which a silent phone connection is found dead (idle + interval x probes)."""
        return self.keepalive_idle + self.keepalive_interval * self.keepalive_probes


class Flow:
    """One path to a peer. `send` never blocks; a dead flow reports `alive` False."""

    transport: str
    reliable: bool

    def __init__(self, local: HostPort, remote: HostPort) -> None:
        self.id = next(_flow_ids)
        self.local = local
        self.remote = remote
        self.last_seen = time.monotonic()

    @property
    def alive(self) -> bool:
        return True

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        (lhost, lport), (rhost, rport) = self.local, self.remote
        return f"<{self.transport} flow {self.id} {lhost}:{lport}->{rhost}:{rport}>"


class UdpFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, endpoint: "_UdpEndpoint", local: HostPort, remote: HostPort) -> None:
        super().__init__(local, remote)
        self._endpoint = endpoint

    def send(self, data: bytes) -> None:
        self._endpoint.sendto(data, self.remote)


class StreamFlow(Flow, asyncio.Protocol):
    """One TCP or TLS connection, framed by Content-Length, answering keepalive pings."""

    reliable = True

    def __init__(self, layer: "TransportLayer", transport_name: str, outbound: bool) -> None:
        Flow.__init__(self, ("", 0), ("", 0))
        self.transport = transport_name
        self.outbound = outbound
        self._layer = layer
        self._framer = StreamFramer(layer.limits.max_message)
        self._connection: asyncio.Transport | None = None
        self.ping_sent: float | None = None  # monotonic: our ping still waiting for its pong
        self._pending: list[bytes] = []  # written at the end of this turn of the event loop

    @property
    def alive(self) -> bool:
        return self._connection is not None and not self._connection.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()  # kept: each get_running_loop() is a getpid(2) call
        self.local = transport.get_extra_info("sockname")[:2]
        self.remote = transport.get_extra_info("peername")[:2]
        if not self.outbound:
            _keepalive(transport.get_extra_info("socket"), self._layer.limits)
        self._layer._flow_opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.ping_sent = None  # anything from the peer proves the connection alive, a pong above all
        for event in self._framer.feed(data):
            if isinstance(event, Frame):
                self._layer._received(event.data, self)
            elif isinstance(event, Ping):
                self.send(b"\r\n")
            elif isinstance(event, FramingError):
                self._layer.stats["framing_errors"] += 1
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection = None
        if exc is not None:  # not a close of ours or the peer's: a reset, a keepalive timeout
            log.info("connection lost: %r: %s", self, exc)
        self._layer._flow_closed(self)
        if exc is not None:
            self._layer.stats["flows_lost"] += 1
            self._layer.on_flow_lost(self, exc)

    def ping(self) -> None:
        """A CRLFCRLF keepalive (RFC 5626 §4.4.1); `ping_sent` holds until the pong (or any data)."""
        if self.ping_sent is None:
            self.ping_sent = time.monotonic()
        self.send(b"\r\n\r\n")

    def send(self, data: bytes) -> None:
        """Queue `data`; everything queued in one turn of the event loop goes in one write (one
        system call, where a burst read from the phones' sockets would otherwise cost one each)."""
        if self._connection is None:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        if self._connection is not None and data:
            self._connection.write(data)

    def close(self) -> None:
        if self._connection is not None:
            self._flush()
            self._connection.close()


class _UdpEndpoint:
    """One UDP socket, read in batches straight from the event loop's reader callback.

    Each datagram comes with its kernel receive timestamp (SO_TIMESTAMPNS, Linux), so the layer
    knows how long it waited in the socket's queue: its sojourn, what overload control reads.
    Reading up to READ_BATCH datagrams per wake-up costs one epoll round for a burst, not one each.
    """

    def __init__(self, layer: "TransportLayer", sock: socket.socket) -> None:
        self._layer = layer
        self.socket = sock
        self.local: HostPort = sock.getsockname()[:2]
        self._stamped = _enable_timestamps(sock)
        self._flows: dict[HostPort, UdpFlow] = {}  # one per peer, not one per datagram
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def flow(self, remote: HostPort) -> "UdpFlow":
        """The flow to `remote` through this socket: the same object for every datagram of a peer
        (thousands of transactions hold one). Bounded: forgotten all at once when full."""
        flow = self._flows.get(remote)
        if flow is None:
            if len(self._flows) >= MAX_UDP_PEERS:
                self._flows.clear()
            flow = self._flows[remote] = UdpFlow(self, self.local, remote)
        return flow

    def sendto(self, data: bytes, remote: HostPort) -> None:
        try:
            self.socket.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            self._layer.stats["udp_send_dropped"] += 1  # send buffer full: UDP's loss, retransmitted
        except OSError:
            self._layer.stats["udp_errors"] += 1  # e.g. ICMP port unreachable for an earlier send

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _flags, addr = self.socket.recvmsg(RECEIVE_SIZE, _ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._layer.stats["udp_errors"] += 1
                continue
            sojourn = _sojourn(ancillary) if self._stamped else None
            self._layer._received(data, self.flow((str(addr[0]), int(addr[1]))), sojourn)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.socket.fileno())
        self.socket.close()


def _enable_timestamps(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False  # not Linux: overload control reads the event loop's lateness only
    return True


def _sojourn(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """Seconds since the kernel received the datagram (its SCM_TIMESTAMPNS), or None."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return max(0.0, time.time() - (seconds + nanoseconds / 1e9))
    return None


class SourceLimiter:
    """A token bucket per source address, forgetting the least recently seen beyond a bound."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(source, (self._limits.burst, now))
        tokens = min(self._limits.burst, tokens + (now - last) * self._limits.rate)
        allowed = tokens >= 1
        self._buckets[source] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self._limits.tracked_sources:
            self._buckets.popitem(last=False)
        return allowed


class TransportLayer:
    """Every listener and connection of one SIP element, and the message counters."""

    def __init__(self, on_message: MessageHandler, limits: Limits | None = None) -> None:
        self.on_message = on_message
        self.on_flow_closed: Callable[[Flow], None] = lambda flow: None
        self.on_flow_failed: Callable[[Flow], None] = lambda flow: None  # no pong on our connection
        # A connection the network took away (reset, TCP keepalive or user timeout: the peer vanished
        # behind a NAT), told after on_flow_closed, with the error.
        self.on_flow_lost: Callable[[Flow, Exception], None] = lambda flow, error: None
        # Sources exempt from the per-source limit (the cloud carries a whole office's traffic).
        self.trusted: Callable[[str], bool] = lambda address: False
        self.limits = limits or Limits()
        self.stats: Counter[str] = Counter()
        self._limiter = SourceLimiter(self.limits)
        self._udp: dict[HostPort, _UdpEndpoint] = {}
        self._servers: list[asyncio.Server] = []
        self._streams: dict[tuple[str, HostPort], StreamFlow] = {}
        self._connecting: dict[tuple[str, HostPort], asyncio.Future[StreamFlow]] = {}
        self._drop_logged_at, self._drops_unlogged = -1.0e9, 0
        # Overload (sip.overload): datagrams' queueing, and the event loop's lateness for streams.
        self.queueing = OverloadControl()
        self.lateness = OverloadControl(LAG_TARGET, LAG_INTERVAL)
        # Whether raw bytes are a retransmission of a request already taken on (never refused).
        self.taken_on: Callable[[bytes], bool] = lambda data: False
        self.transactions: Callable[[], int] = lambda: 0  # how many are live (the stack's count)
        self._lag_timer: asyncio.TimerHandle | None = None
        self._shed_logged = 0  # the shed count at the last log line

    # -- listening --------------------------------------------------------------------------------

    async def listen_udp(self, host: str, port: int) -> HostPort:
        """Bind a UDP socket; raises OSError (EADDRINUSE...) as bind does."""
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            # Room for a burst of REGISTERs after a power cut (the kernel caps it at rmem_max).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        endpoint = _UdpEndpoint(self, sock)
        self._udp[endpoint.local] = endpoint
        self._watch_lag()
        return endpoint.local

    async def listen_stream(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> HostPort:
        loop = asyncio.get_running_loop()
        name = "tls" if tls else "tcp"
        server = await loop.create_server(lambda: StreamFlow(self, name, outbound=False), host, port, ssl=tls)
        self._servers.append(server)
        self._watch_lag()
        return server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for flow in list(self._streams.values()):
            flow.close()
        for endpoint in self._udp.values():
            endpoint.close()
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # -- sending ----------------------------------------------------------------------------------

    def udp_flow(self, remote: HostPort, local: HostPort | None = None) -> UdpFlow:
        """A flow to `remote` through one of our UDP sockets (the one bound to `local`, if given)."""
        endpoint = self._udp.get(local) if local else next(iter(self._udp.values()), None)
        if endpoint is None:
            raise OSError("no UDP socket to send from")
        return endpoint.flow(remote)

    def stream_flow(self, transport: str, remote: HostPort) -> StreamFlow | None:
        """The open connection to `remote`, if there is one."""
        flow = self._streams.get((transport, remote))
        return flow if flow is not None and flow.alive else None

    async def connect(
        self,
        transport: str,
        remote: HostPort,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        local_host: str | None = None,
    ) -> StreamFlow:
        """The connection to `remote`, reusing an open one; concurrent callers share one attempt."""
        key = (transport, remote)
        if (flow := self.stream_flow(*key)) is not None:
            return flow
        if key in self._connecting:
            return await asyncio.shield(self._connecting[key])
        future: asyncio.Future[StreamFlow] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            loop = asyncio.get_running_loop()
            _, flow = await loop.create_connection(
                lambda: StreamFlow(self, transport, outbound=True),
                remote[0],
                remote[1],
                ssl=tls,
                server_hostname=(server_name or remote[0]) if tls else None,
                local_addr=(local_host, 0) if local_host else None,
            )
            future.set_result(flow)
            return flow
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._connecting[key]

    def ping_outbound(self) -> int:
        """Send a CRLFCRLF keepalive (RFC 5626 §4.4.1) on every connection we opened."""
        flows = [f for f in self._streams.values() if f.outbound and f.alive]
        for flow in flows:
            flow.ping()
        return len(flows)

    def check_pongs(self, now: float | None = None) -> list[StreamFlow]:
        """Close every connection of ours whose ping got no pong within `pong_timeout` (RFC 5626
        §4.4.1: the flow has failed); each is logged, counted and told to `on_flow_failed`."""
        now = time.monotonic() if now is None else now
        failed = [
            f for f in self._streams.values()
            if f.ping_sent is not None and now - f.ping_sent > self.limits.pong_timeout
        ]  # fmt: skip
        for flow in failed:
            self.stats["pong_missing"] += 1
            log.warning(
                "no pong from %s %s:%s within %.0f s: connection closed (RFC 5626 §4.4.1)",
                flow.transport, *flow.remote, self.limits.pong_timeout,
            )  # fmt: skip
            flow.ping_sent = None
            flow.close()
            self.on_flow_failed(flow)
        return failed

    # -- receiving --------------------------------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        """Whether new work is being refused now (sip.overload)."""
        return self.queueing.shedding or self.lateness.shedding

    def load(self) -> dict[str, int | bool]:
        """For support (vaxelctl status): overload now, live transactions and their ceiling, and
        how much new work was refused since start, by why."""
        return {
            "overloaded": self.overloaded,
            "transactions": self.transactions(),
            "transaction_ceiling": self.limits.max_transactions,
            "refused_overload": self.stats["shed_overload"],
            "refused_full": self.stats["shed_full"],
            "overload_episodes": self.queueing.episodes + self.lateness.episodes,
        }

    def _received(self, data: bytes, flow: Flow, sojourn: float | None = None) -> None:
        """One message's bytes from `flow`; `sojourn`: seconds it waited in the socket's queue."""
        if sojourn is not None:
            self.queueing.observe(sojourn, time.monotonic())
        source = flow.remote[0]
        if self.limits.rate and not self.trusted(source) and not self._limiter.allow(source):
            self.stats["rate_limited"] += 1
            return
        if not data.strip(b"\r\n"):
            self.stats["keepalives"] += 1  # a CRLF keepalive over UDP
            return
        if data.startswith(b"ACK ") and acks_a_refusal(data):
            self.stats["shed_acks"] += 1  # hop by hop, for a refusal of ours: it ends here
            return
        if (why := self._sheds(data, source)) is not None:
            self._shed(data, flow, why)
            return
        if len(data) > self.limits.max_message:
            self._refuse(data, flow, SipParseError("Message Too Large", is_request=True, status=513))
            return
        try:
            message = parse_message(data)
        except SipParseError as error:
            self._refuse(data, flow, error)
            return
        self.stats["received"] += 1
        if isinstance(message, Request):
            stamp_received(message, flow)
        try:
            self.on_message(message, flow)
        except Exception:  # a bug above must not take the transport down with it
            self.stats["handler_errors"] += 1
            log.exception("message handler failed for %r", flow)

    def _sheds(self, data: bytes, source: str) -> str | None:
        """Why raw `data` is new work to refuse now ("full", "overload"), or None: at the transaction
        ceiling, any; overloaded, fresh attempts, and continuations (sip.overload.OverloadControl)
        only when severely so."""
        full = self.transactions() >= self.limits.max_transactions
        if not (full or self.overloaded) or not starts_new_work(data) or self.taken_on(data):
            return None
        if full:
            return "full"
        severe = self.queueing.severe or self.lateness.severe
        continues = self.trusted(source) or carries_credentials(data)
        return "overload" if severe or not continues else None

    def _shed(self, data: bytes, flow: Flow, why: str) -> None:
        """503 with Retry-After to new work while overloaded or at the transaction ceiling (RFC 3261
        §21.5.4), without parsing it and without keeping state: its ACK is known by our To tag
        (sip.overload.SHED_TAG). `why`: "overload" or "full", counted apart."""
        self.stats["shed"] += 1
        self.stats[f"shed_{why}"] += 1
        if self.stats["shed"] - self._shed_logged >= SHED_LOG_EVERY or self._shed_logged == 0:
            log.warning(
                "SIP %s: new requests refused with 503 (%d since start; overload episodes %d, "
                "live transactions %d of %d)",
                "overloaded" if why == "overload" else "at its transaction ceiling", self.stats["shed"],
                self.queueing.episodes + self.lateness.episodes, self.transactions(),
                self.limits.max_transactions,
            )  # fmt: skip
            self._shed_logged = self.stats["shed"]
        retry = f"Retry-After: {OverloadControl.retry_after()}"
        tag = f"{SHED_TAG}{secrets.token_hex(4)}"
        reply = error_response_for_raw(data, 503, "Service Unavailable", to_tag=tag, extra=(retry,))
        if reply is not None:
            flow.send(reply)

    def _watch_lag(self) -> None:
        """Look at the event loop's lateness every LAG_TICK s (what a stream's message waits)."""
        if self._lag_timer is None:
            loop = asyncio.get_running_loop()
            self._lag_timer = loop.call_later(LAG_TICK, self._lag_tick, loop.time() + LAG_TICK)

    def _lag_tick(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        self.lateness.observe(loop.time() - due, time.monotonic())
        self._lag_timer = loop.call_later(LAG_TICK, self._lag_tick, loop.time() + LAG_TICK)

    def _refuse(self, data: bytes, flow: Flow, error: SipParseError) -> None:
        if not error.is_request or data.startswith(b"SIP/"):
            self.stats["dropped_responses"] += 1
            self._log_dropped(flow, error.reason)
            return
        self.stats["bad_requests"] += 1
        reply = error_response_for_raw(data, error.status, error.reason)
        if reply is not None:
            flow.send(reply)

    def _log_dropped(self, flow: Flow, reason: str) -> None:
        """One line per dropped response, at most one a second (a flood must not flood the log)."""
        now = time.monotonic()
        self._drops_unlogged += 1
        if now - self._drop_logged_at < 1.0:
            return
        log.warning(
            "response dropped: from=%s:%s reason=%s (%d since the last line)",
            *flow.remote, reason, self._drops_unlogged,
        )  # fmt: skip
        self._drop_logged_at, self._drops_unlogged = now, 0

    def _flow_opened(self, flow: StreamFlow) -> None:
        self._streams[(flow.transport, flow.remote)] = flow

    def _flow_closed(self, flow: StreamFlow) -> None:
        if self._streams.get((flow.transport, flow.remote)) is flow:
            del self._streams[(flow.transport, flow.remote)]
        self.on_flow_closed(flow)


def stamp_received(request: Request, flow: Flow) -> None:
    """§18.2.1 and RFC 3581: note where the request really came from in its top Via."""
    via = request.top_via
    host, port = flow.remote
    changed = False
    if via.host != host:
        via.params["received"] = host
        changed = True
    if "rport" in via.params and via.params["rport"] is None:
        via.params["rport"] = str(port)
        via.params.setdefault("received", host)
        changed = True
    if changed:
        request.pop_first_value("Via")
        request.push_via(via)  # its parsed form kept: the transaction reads it next


def _keepalive(sock: socket.socket | None, limits: Limits) -> None:
    """TCP keepalive on a connection a phone opened: a phone gone behind a NAT is found dead within
    `limits.keepalive_window` (45 s by default) and its flow closed, rather than kept "live" for ever.
    TCP_USER_TIMEOUT bounds the same window when data of ours is left unacknowledged (a request sent
    to a phone that has just vanished), where keepalive does not probe.
    (RFC 5626 pings are the client's to send; phones that never ping still get this.)"""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (
        ("TCP_KEEPIDLE", limits.keepalive_idle),
        ("TCP_KEEPINTVL", limits.keepalive_interval),
        ("TCP_KEEPCNT", limits.keepalive_probes),
        ("TCP_USER_TIMEOUT", limits.keepalive_window * 1000),  # milliseconds
    )
    for option, value in options:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
