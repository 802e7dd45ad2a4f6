"""The way to the cloud PBX: its servers in order (RFC 3263), one long-lived connection, failover.

The site names the cloud's proxies as SIP URIs; each is resolved (NAPTR, SRV,
A/AAAA as `resolver.py` explains) into targets, and the upstream keeps one
flow to the current target, moving to the next when it fails.
"""

import asyncio
import ssl

from vaxelbox.edge.resolver import CloudResolver, CloudTarget
from vaxelbox.sip.transport import Flow, TransportLayer

CONNECT_TIMEOUT = 5.0


class Upstream:
    def __init__(
        self,
        transports: TransportLayer,
        proxies: list[str],
        wan_local: tuple[str, int],
        tls: ssl.SSLContext | None = None,
        resolver: CloudResolver | None = None,
    ) -> None:
        assert proxies, "the site names at least one cloud proxy"
        self.transports = transports
        self.proxies = proxies
        self.wan_local = wan_local
        self.tls = tls
        self.resolver = resolver or CloudResolver()
        self.targets: list[CloudTarget] = []
        self.current = 0
        self.addresses: set[str] = set()
        self._flow: Flow | None = None

    @property
    def target(self) -> CloudTarget | None:
        return self.targets[self.current] if self.targets else None

    async def resolve(self) -> None:
        """Resolve every proxy into targets; their addresses are the only ones let in on the WAN."""
        targets: list[CloudTarget] = []
        for uri in self.proxies:
            targets += await self.resolver.resolve(uri)
        self.targets = list(dict.fromkeys(targets))
        self.current = 0
        self.addresses |= {t.address for t in self.targets}

    def is_cloud(self, address: str) -> bool:
        return address in self.addresses

    def ready_flow(self) -> Flow | None:
        """The open flow to the cloud, if there is one: sending on it needs no waiting, so
        messages leave in the order they came (an ACK is never overtaken by a BYE)."""
        return self._flow if self._flow is not None and self._flow.alive else None

    async def flow(self) -> Flow:
        """A flow to the current target; on failure, the next one (OSError when none answers)."""
        if (ready := self.ready_flow()) is not None:
            return ready
        if not self.targets:
            await self.resolve()
        errors = []
        for _ in range(len(self.targets)):
            target = self.targets[self.current]
            try:
                self._flow = await self._open(target)
                return self._flow
            except OSError as exc:
                errors.append(f"{target.name}[{target.address}]:{target.port}/{target.transport}: {exc}")
                self.fail_over()
        if not self.targets:
            errors.append(f"no address found for {', '.join(self.proxies)}")
        self.targets = []  # resolve again next time: the cloud may have moved
        raise OSError("no cloud proxy reachable: " + "; ".join(errors))

    def fail_over(self) -> None:
        self._flow = None
        if self.targets:
            self.current = (self.current + 1) % len(self.targets)

    async def _open(self, target: CloudTarget) -> Flow:
        address = (target.address, target.port)
        if target.transport == "udp":
            return self.transports.udp_flow(address, local=self.wan_local)
        tls = self.tls if target.transport == "tls" else None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            # From the WAN address: the right interface on a two-armed board, and the address the
            # cloud sees in our Via, so it can reuse this connection (RFC 5923).
            return await self.transports.connect(
                target.transport, address, tls=tls, server_name=target.name, local_host=self.wan_local[0]
            )
