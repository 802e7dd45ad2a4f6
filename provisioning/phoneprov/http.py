"""The provisioning server's sockets: HTTP and HTTPS on the LAN, driving ProvisioningService.

One asyncio stream per connection reads requests one after another (`http11` parses them); each
request's decision runs in a thread because it reads the store. Not aiohttp, which served this
before: the agent kept its client, web framework and their libraries, about 10 MiB, for life,
for a server that only answers GETs (issue 12).
"""

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from phoneprov.http11 import (
    MAX_HEADERS,
    MAX_LINE,
    BadRequest,
    RequestHead,
    chunk_size,
    request_head,
    request_line_parts,
    response_head,
)
from phoneprov.pki import ServerIdentity
from phoneprov.service import HttpReply, HttpRequest, ProvisioningService

SERVER_HEADER = "vaxelbox"
KEEP_ALIVE = 75.0  # s a connection may wait for its next request (aiohttp's keepalive_timeout)
HEAD_TIMEOUT = 75.0  # s to send the rest of a request head once it began
LINGER = 10.0  # s to send a body the server reads only to drop (aiohttp's lingering_time)
MAX_DROPPED = 16 * 2**20  # bytes of a request body read and dropped before the connection closes
SHUTDOWN_GRACE = 2.0  # s the requests being answered get to finish when the server stops

log = logging.getLogger("phoneprov.http")


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
        limit = MAX_LINE + 2  # a longer line is refused (see _read_head)
        self._servers["http"] = await asyncio.start_server(
            self._plain, self.host, self.http_port, limit=limit
        )
        self._servers["https"] = await asyncio.start_server(
            self._secure, self.host, self.https_port, ssl=tls, limit=limit
        )

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
        try:
            while await self._exchange(reader, writer, client, secure):
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the peer went away or went quiet: nothing to answer
        finally:
            self._tasks.discard(task)
            self._idle.discard(writer)
            writer.close()

    async def _next_request_line(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """The next request line (b"" when the peer closed first), waited for up to KEEP_ALIVE; the
        connection counts as idle meanwhile (`stop` closes it). An empty line or two before it,
        which RFC 9112 §2.2 lets a server ignore, is skipped. Raises BadRequest."""
        self._idle.add(writer)
        try:
            async with asyncio.timeout(KEEP_ALIVE):
                for _ in range(3):
                    try:
                        line = await reader.readline()
                    except ValueError:  # the stream's limit
                        raise BadRequest(f"the request line is longer than {MAX_LINE} bytes") from None
                    if line != b"\r\n":
                        return line
        finally:
            self._idle.discard(writer)
        raise BadRequest("no request line")

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str, secure: bool
    ) -> bool:
        """Read one request, answer it, drop its body; whether the connection serves another."""
        try:
            head = await self._read_request(reader, writer)
        except BadRequest as refused:
            log.debug("bad request from %s: %s", client, refused)
            await _answer(writer, 1, HttpReply(400, f"{refused}\n".encode()), "GET", close=True)
            return False
        if head is None:
            return False  # closed (or cut) before a request
        try:
            reply = await asyncio.to_thread(self.service.handle, _request(head, client, secure))
        except Exception:  # a bug must cost one request, not the server: 500, as aiohttp answered
            log.exception("error handling %s %s from %s", head.method, head.target, client)
            await _answer(writer, head.minor, HttpReply(500, b"internal error\n"), head.method, close=True)
            return False
        log.debug(
            "%s %s %s %s %r", client, head.method, head.target, reply.status, head.headers.get("user-agent")
        )
        # A client waiting for 100 Continue will not send its body now that it has the answer.
        close = not head.keep_alive or (head.has_body and head.expects_continue)
        await _answer(writer, head.minor, reply, head.method, close, keep_alive_1_0=head.keep_alive)
        return not close and (not head.has_body or await _drop_body(reader, head))

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> RequestHead | None:
        """The next request's head, None when the peer closed before one. Raises BadRequest; a bad
        request line is refused before any header line is read."""
        first = await self._next_request_line(reader, writer)
        if not first.endswith(b"\n"):
            return None
        request_line_parts(first)
        async with asyncio.timeout(HEAD_TIMEOUT):
            return request_head(first, await _read_head(reader))


async def _read_head(reader: asyncio.StreamReader) -> list[bytes]:
    """The header lines up to the empty line that ends them. Raises BadRequest."""
    lines: list[bytes] = []
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # the stream's limit: a line longer than MAX_LINE
            raise BadRequest(f"a header line is longer than {MAX_LINE} bytes") from None
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        if not line.endswith(b"\r\n"):
            raise BadRequest("a header line must end with CRLF")
        if line == b"\r\n":
            return lines
        if len(lines) == MAX_HEADERS:
            raise BadRequest(f"more than {MAX_HEADERS} header lines")
        lines.append(line)


async def _answer(
    writer: asyncio.StreamWriter,
    minor: int,
    reply: HttpReply,
    method: str,
    close: bool,
    keep_alive_1_0: bool = False,
) -> None:
    headers = [("Server", SERVER_HEADER), ("Cache-Control", "no-store"), ("Content-Type", reply.content_type)]
    for name, value in reply.headers.items():
        headers += [(name, one) for one in ([value] if isinstance(value, str) else value)]
    head = response_head(minor, reply.status, headers, len(reply.body), close, keep_alive_1_0)
    # HEAD, 1xx, 204 and 304 carry no body; Content-Length still says what a GET would get.
    silent = method == "HEAD" or reply.status < 200 or reply.status in (204, 304)
    writer.write(head if silent else head + reply.body)
    await writer.drain()


async def _drop_body(reader: asyncio.StreamReader, head: RequestHead) -> bool:
    """Read the request's body and drop it (within LINGER and MAX_DROPPED); whether the stream is
    then at the next request. A malformed chunked body ends the connection."""
    try:
        async with asyncio.timeout(LINGER):
            if head.length is not None:
                return await _skip(reader, head.length)
            return await _skip_chunks(reader)
    except (BadRequest, ValueError):
        return False


async def _skip(reader: asyncio.StreamReader, size: int) -> bool:
    if size > MAX_DROPPED:
        return False
    while size:
        data = await reader.read(min(size, 65536))
        if not data:
            return False
        size -= len(data)
    return True


async def _skip_chunks(reader: asyncio.StreamReader) -> bool:
    dropped = 0
    while size := chunk_size(await reader.readline()):
        dropped += size
        if dropped > MAX_DROPPED or not await _skip(reader, size + 2):  # the chunk and its CRLF
            return False
    while (line := await reader.readline()) != b"\r\n":  # trailer fields, then the empty line
        if not line.endswith(b"\n"):
            return False
    return True


def _request(head: RequestHead, client: str, secure: bool) -> HttpRequest:
    return HttpRequest(
        method=head.method,
        target=head.target,
        path=head.path,
        user_agent=head.headers.get("user-agent", ""),
        authorization=head.headers.get("authorization"),
        client=client,
        secure=secure,
    )
