"""The provisioning server's sockets: HTTP and HTTPS on the LAN, driving ProvisioningService.

aiohttp's low-level server parses HTTP; each request's decision runs in a
thread because it reads the store.
"""

import asyncio
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from phoneprov.pki import ServerIdentity
from phoneprov.service import HttpReply, HttpRequest, ProvisioningService

SERVER_HEADER = "vaxelbox"


@dataclass
class ProvisioningServer:
    service: ProvisioningService
    host: str
    http_port: int
    https_port: int
    identity: ServerIdentity
    _servers: dict[str, asyncio.Server] = field(default_factory=dict)  # by scheme
    _low_level: web.Server | None = None

    @property
    def listening(self) -> list[str]:
        return [f"provisioning {scheme} {self.host}:{port}" for scheme, port in self.ports().items()]

    def ports(self) -> dict[str, int]:
        """The bound ports by scheme (a port given as 0 is chosen by the kernel)."""
        return {scheme: server.sockets[0].getsockname()[1] for scheme, server in self._servers.items()}

    async def start(self) -> None:
        self._low_level = web.Server(self._handle)
        loop = asyncio.get_running_loop()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2  # phones of the last decade speak 1.2
        tls.load_cert_chain(self.identity.certificate, self.identity.key)
        serve = self._low_level
        self._servers["http"] = await loop.create_server(serve, self.host, self.http_port)
        self._servers["https"] = await loop.create_server(serve, self.host, self.https_port, ssl=tls)

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        if self._low_level is not None:
            await self._low_level.shutdown(timeout=2.0)
        for server in self._servers.values():
            await server.wait_closed()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        reply = await asyncio.to_thread(self.service.handle, _request(request))
        return _response(reply)


def _request(request: web.BaseRequest) -> HttpRequest:
    return HttpRequest(
        method=request.method,
        target=request.raw_path,
        path=request.path,
        user_agent=request.headers.get("User-Agent", ""),
        authorization=request.headers.get("Authorization"),
        client=request.remote or "",
        secure=request.secure,
    )


def _response(reply: HttpReply) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict(
        {"Server": SERVER_HEADER, "Cache-Control": "no-store", "Content-Type": reply.content_type}
    )
    for name, value in reply.headers.items():
        for one in [value] if isinstance(value, str) else value:
            headers.add(name, one)
    return web.Response(status=reply.status, body=reply.body, headers=headers)
