"""The way to the cloud PBX: its proxies in order, one long-lived connection, failover.

Host names are resolved with the system resolver (A/AAAA). NAPTR and SRV
lookups (RFC 3263) are not done yet: configure proxies with explicit ports.
"""

import asyncio
import socket
import ssl
from dataclasses import dataclass

from vaxelbox.sip.transport import Flow, TransportLayer


@dataclass(frozen=True, slots=True)
class CloudProxy:
    host: str
    port: int
    transport: str  # udp, tcp or tls


class Upstream:
    def __init__(
        self,
        transports: TransportLayer,
        proxies: list[CloudProxy],
        wan_local: tuple[str, int],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        assert proxies, "the site names at least one cloud proxy"
        self.transports = transports
        self.proxies = proxies
        self.wan_local = wan_local
        self.tls = tls
        self.current = 0
        self.addresses: set[str] = set()
        self._flow: Flow | None = None
        self._resolved: dict[CloudProxy, tuple[str, int]] = {}

    @property
    def proxy(self) -> CloudProxy:
        return self.proxies[self.current]

    async def resolve(self) -> None:
        """Learn the cloud's addresses, so only they are let in on the WAN side."""
        loop = asyncio.get_running_loop()
        for proxy in self.proxies:
            try:
                infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
            except OSError:
                continue
            self.addresses.update(str(info[4][0]) for info in infos)

    def is_cloud(self, address: str) -> bool:
        return address in self.addresses

    def ready_flow(self) -> Flow | None:
        """The open flow to the cloud, if there is one: sending on it needs no waiting, so
        messages leave in the order they came (an ACK never overtakes by a BYE)."""
        return self._flow if self._flow is not None and self._flow.alive else None

    async def flow(self) -> Flow:
        """A flow to the current cloud proxy; on failure, the next one (OSError when none answers)."""
        if (ready := self.ready_flow()) is not None:
            return ready
        errors = []
        for _ in range(len(self.proxies)):
            proxy = self.proxy
            try:
                self._flow = await self._open(proxy)
                return self._flow
            except OSError as exc:
                errors.append(f"{proxy.host}:{proxy.port}/{proxy.transport}: {exc}")
                self.fail_over()
        raise OSError("no cloud proxy reachable: " + "; ".join(errors))

    def fail_over(self) -> None:
        self._flow = None
        self._resolved.pop(self.proxy, None)  # resolve again next time: the address may have moved
        self.current = (self.current + 1) % len(self.proxies)

    async def _address(self, proxy: CloudProxy) -> tuple[str, int]:
        if proxy not in self._resolved:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
            self._resolved[proxy] = (str(infos[0][4][0]), proxy.port)
            self.addresses.add(self._resolved[proxy][0])
        return self._resolved[proxy]

    async def _open(self, proxy: CloudProxy) -> Flow:
        address = await self._address(proxy)
        if proxy.transport == "udp":
            return self.transports.udp_flow(address, local=self.wan_local)
        tls = self.tls if proxy.transport == "tls" else None
        return await asyncio.wait_for(
            self.transports.connect(proxy.transport, address, tls=tls, server_name=proxy.host), timeout=5
        )
