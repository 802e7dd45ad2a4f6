"""The provisioning server's sockets: HTTP and HTTPS on the LAN, driving ProvisioningService.

One asyncio stream per connection feeds an `h11.Connection`, which does all of HTTP/1.1 (request
parsing and its limits, bodies by Content-Length or chunked, keep-alive and close, HEAD, response
framing); each request's decision runs in a thread because it reads the store. Not aiohttp, which
served this before: the agent kept its client, web framework and their libraries, about 10 MiB,
for life, for a server that only answers GETs (issue 12).
"""

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

import h11
import structlog

from phoneprov.http11 import BadRequest, target_path
from phoneprov.pki import ServerIdentity
from phoneprov.service import HttpReply, HttpRequest, ProvisioningService

SERVER_HEADER = "vaxelbox"
KEEP_ALIVE = 75.0  # s a connection may wait for its next request (aiohttp's keepalive_timeout)
HEAD_TIMEOUT = 75.0  # s to send the rest of a request head once it began
LINGER = 10.0  # s to send a body the server reads only to drop (aiohttp's lingering_time)
MAX_DROPPED = 16 * 2**20  # bytes of a request body read and dropped before the connection closes
SHUTDOWN_GRACE = 2.0  # s the requests being answered get to finish when the server stops
READ_SIZE = 65536  # bytes asked of the stream at a time
INTERNAL_ERROR = HttpReply(500, b"internal error\n")

# h11 quotes what it could not read (`illegal request line: bytearray(b'GET /x?pass=...')`): a
# query, an Authorization line. The log keeps the words before the quote.
_QUOTED = re.compile(r"(?::\s*|\s+)(?:bytearray\()?b['\"].*", re.DOTALL)

log = structlog.get_logger("phoneprov.http")


@dataclass
class ProvisioningServer:
    service: ProvisioningService
    host: str
    http_port: int
    https_port: int
    identity: ServerIdentity
    _servers: dict[str, asyncio.Server] = field(default_factory=dict)  # by scheme
    _idle: set[asyncio.StreamWriter] = field(default_factory=set)  # connections between requests
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)  # one per open connection

    @property
    def listening(self) -> list[str]:
        return [f"provisioning {scheme} {self.host}:{port}" for scheme, port in self.ports().items()]

    def ports(self) -> dict[str, int]:
        """The bound ports by scheme (a port given as 0 is chosen by the kernel)."""
        return {scheme: server.sockets[0].getsockname()[1] for scheme, server in self._servers.items()}

    async def start(self) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2  # phones of the last decade speak 1.2
        tls.load_cert_chain(self.identity.certificate, self.identity.key)
        self._servers["http"] = await asyncio.start_server(self._plain, self.host, self.http_port)
        self._servers["https"] = await asyncio.start_server(self._secure, self.host, self.https_port, ssl=tls)

    async def stop(self) -> None:
        """Stop listening, close idle connections, give requests being answered SHUTDOWN_GRACE."""
        for server in self._servers.values():
            server.close()
        for writer in list(self._idle):
            writer.close()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connection(reader, writer, secure=False)

    async def _secure(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connection(reader, writer, secure=True)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secure: bool
    ) -> None:
        """Answer the connection's requests in turn until it closes, errs or stays idle too long."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else ""
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._exchange(conn, reader, writer, client, secure):
                conn.start_next_cycle()
        except (OSError, TimeoutError):
            pass  # the peer went away or went quiet: nothing to answer
        finally:
            self._tasks.discard(task)
            self._idle.discard(writer)
            writer.close()

    async def _exchange(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        secure: bool,
    ) -> bool:
        """Read one request, answer it, drop its body; whether the connection serves another."""
        method = "GET"  # how a refusal is framed before the request line is known
        try:
            event = await self._next_request(conn, reader, writer)
            if event is None:
                return False  # closed (or cut) before a request
            method = event.method.decode()
            request = _request(event, client, secure)
        except (h11.RemoteProtocolError, BadRequest) as refused:
            # As h11's docs show: answer with the status h11 suggests (400, 431, 501), then close.
            status = refused.error_status_hint if isinstance(refused, h11.RemoteProtocolError) else 400
            _log_refusal(conn, client, status, str(refused))
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, writer, HttpReply(status, f"{refused}\n".encode()), method, close=True)
            return False
        try:
            reply = await asyncio.to_thread(self.service.handle, request)
            # A client waiting for 100 Continue will not send its body now that it has the answer.
            response = _response(reply, close=conn.they_are_waiting_for_100_continue)
        except Exception:  # a bug must cost one request, not the server: 500, as aiohttp answered
            log.exception("provisioning request failed", client=client, method=method, path=request.path)
            await _send(conn, writer, INTERNAL_ERROR, method, close=True)
            return False
        log.debug("provisioning request", client=client, method=method, path=request.path,
                  status=reply.status, user_agent=request.user_agent)  # fmt: skip
        await _write(conn, writer, response, reply.body, method)
        return conn.our_state is h11.DONE and await _drop_body(conn, reader)

    async def _next_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> h11.Request | None:
        """The next request, None when the peer closed first. Waits up to KEEP_ALIVE for it to
        begin (the connection counts as idle meanwhile: `stop` closes it), then HEAD_TIMEOUT for
        the rest of its head. Raises h11.RemoteProtocolError, TimeoutError."""
        pending, closed = conn.trailing_data  # what came after the previous request
        if not pending and not closed:
            self._idle.add(writer)
            try:
                async with asyncio.timeout(KEEP_ALIVE):
                    conn.receive_data(await reader.read(READ_SIZE))
            finally:
                self._idle.discard(writer)
        async with asyncio.timeout(HEAD_TIMEOUT):
            event = await _next_event(conn, reader)
        return event if isinstance(event, h11.Request) else None


def _log_refusal(conn: h11.Connection, client: str, status: int, reason: str) -> None:
    """One line for a request refused before the service saw it, as the service logs its own
    refusals (fail2ban counts them), so an installer sees why a phone failed; a debug line only
    when the peer closed in the middle of its request (a phone switched off): no one was refused."""
    fields = {"client": client, "status": status, "detail": _unquoted(reason)}
    if conn.trailing_data[1]:  # h11 saw the end of the stream: the head was cut, not malformed
        log.debug("provisioning request cut", **fields)
    else:
        log.warning("provisioning refused", reason="bad-request", **fields)


def _unquoted(reason: str) -> str:
    """h11's reason for refusing a request without the bytes it quotes (they may hold secrets):
    `illegal header line: b'Authorization : Basic ...'` -> `illegal header line`."""
    return _QUOTED.sub("", reason)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    """The next event h11 reads from the stream (reading more as it needs).
    Raises h11.RemoteProtocolError."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(READ_SIZE))  # b"" tells h11 the peer closed
    assert not isinstance(event, type), event  # PAUSED comes only between requests, never here
    return event


def _request(event: h11.Request, client: str, secure: bool) -> HttpRequest:
    """What the service is asked. h11 allows only visible ASCII in the method and target, gives
    header names in lower case and values trimmed; the first value of a name counts. Raises
    BadRequest."""
    if event.http_version not in (b"1.0", b"1.1"):
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken here")
    method, target = event.method.decode(), event.target.decode()
    headers: dict[bytes, bytes] = {}
    for name, value in event.headers:
        headers.setdefault(name, value)
    authorization = headers.get(b"authorization")
    return HttpRequest(
        method=method,
        target=target,
        path=target_path(method, target),
        user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
        authorization=None if authorization is None else authorization.decode("latin-1"),
        client=client,
        secure=secure,
    )


def _response(reply: HttpReply, close: bool) -> h11.Response:
    """The reply's head: our headers, the service's, Content-Length (what a GET gets, HEAD too),
    Date (h11 writes none; email.utils is in the agent anyway), and `Connection: close` when the
    server closes after it (h11 adds that itself when the client asked for it or speaks HTTP/1.0).
    Raises h11.LocalProtocolError for a bad header."""
    headers = [("Server", SERVER_HEADER), ("Cache-Control", "no-store"), ("Content-Type", reply.content_type)]
    for name, value in reply.headers.items():
        headers += [(name, one) for one in ([value] if isinstance(value, str) else value)]
    headers += [("Content-Length", str(len(reply.body))), ("Date", formatdate(usegmt=True))]
    headers += [("Connection", "close")] if close else []
    return h11.Response(status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase)


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, reply: HttpReply, method: str, close: bool
) -> None:
    await _write(conn, writer, _response(reply, close), reply.body, method)


async def _write(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: h11.Response, body: bytes, method: str
) -> None:
    data = conn.send(response)
    if method != "HEAD" and response.status_code not in (204, 304):  # these carry no body
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    writer.write(data)
    await writer.drain()


async def _drop_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bool:
    """Read the rest of the request (a body the server drops, within LINGER and MAX_DROPPED);
    whether the connection can then serve the next request. A malformed body ends it."""
    dropped = 0
    try:
        async with asyncio.timeout(LINGER):
            while isinstance(event := await _next_event(conn, reader), h11.Data):
                dropped += len(event.data)
                if dropped > MAX_DROPPED:
                    return False
    except h11.RemoteProtocolError:
        return False
    return isinstance(event, h11.EndOfMessage)
