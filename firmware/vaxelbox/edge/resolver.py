"""Finding the cloud PBX's servers from a proxy URI, as RFC 3263 §4 says: NAPTR, then SRV, then A/AAAA.

- An IP address is used as it is.
- A host name with an explicit port: its A/AAAA records.
- A host name with a transport but no port: SRV `_sip._udp`, `_sip._tcp` or `_sips._tcp`.
- A bare host name: NAPTR for the transports we speak (SIP+D2U, SIP+D2T,
  SIPS+D2T; only the last for a sips: URI), each leading to SRV; without
  NAPTR, SRV for each transport (TLS, TCP, UDP); without SRV, A/AAAA on the
  default port and transport.
The result is every target in the order to try them; the upstream fails over
along it. SRV targets of equal priority are ordered by weight, heaviest first
(deterministic rather than RFC 2782's weighted lottery: one office, one edge).
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from vaxelbox.site.fields import proxy_spec

NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}
NOTHING_THERE = (
    dns.resolver.NXDOMAIN,
    dns.resolver.NoAnswer,
    dns.resolver.NoNameservers,
    dns.exception.Timeout,
)


@dataclass(frozen=True, slots=True)
class CloudTarget:
    address: str  # an IP address
    port: int
    transport: str  # udp, tcp or tls
    name: str  # the host name, for TLS certificate checks


class CloudResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self._dns = resolver or dns.asyncresolver.Resolver()

    async def resolve(self, uri: str) -> list[CloudTarget]:
        scheme, host, port, transport = proxy_spec(uri)
        secure = scheme == "sips"
        if _is_ip(host):
            chosen = transport or ("tls" if secure else "udp")
            return [CloudTarget(host, port or DEFAULT_PORT[chosen], chosen, host)]
        if port is not None:
            chosen = transport or ("tls" if secure else "udp")
            return await self._addresses(host, port, chosen)
        if transport is not None:
            return await self._srv_or_default(host, transport)
        return await self._naptr(host, secure)

    async def _naptr(self, host: str, secure: bool) -> list[CloudTarget]:
        records = await self._query(host, "NAPTR")
        usable = [
            r for r in records
            if r.flags.decode().lower() == "s"
            and (service := r.service.decode().upper()) in NAPTR_SERVICES
            and (not secure or service == "SIPS+D2T")
        ]  # fmt: skip
        if usable:
            targets: list[CloudTarget] = []
            for record in sorted(usable, key=lambda r: (r.order, r.preference)):
                transport = NAPTR_SERVICES[record.service.decode().upper()]
                targets += await self._srv(record.replacement.to_text().rstrip("."), transport)
            if targets:
                return targets
        transports = ["tls"] if secure else ["tls", "tcp", "udp"]
        for transport in transports:
            if targets := await self._srv(f"{SRV_PREFIX[transport]}.{host}", transport):
                return targets + [
                    t for other in transports if other != transport
                    for t in await self._srv(f"{SRV_PREFIX[other]}.{host}", other)
                ]  # fmt: skip
        chosen = "tls" if secure else "udp"
        return await self._addresses(host, DEFAULT_PORT[chosen], chosen)

    async def _srv_or_default(self, host: str, transport: str) -> list[CloudTarget]:
        targets = await self._srv(f"{SRV_PREFIX[transport]}.{host}", transport)
        return targets or await self._addresses(host, DEFAULT_PORT[transport], transport)

    async def _srv(self, name: str, transport: str) -> list[CloudTarget]:
        records = sorted(await self._query(name, "SRV"), key=lambda r: (r.priority, -r.weight))
        targets: list[CloudTarget] = []
        for record in records:
            target = record.target.to_text().rstrip(".")
            if target:  # "." means: no service here
                targets += await self._addresses(target, record.port, transport)
        return targets

    async def _addresses(self, host: str, port: int, transport: str) -> list[CloudTarget]:
        found: list[str] = []
        for kind in ("A", "AAAA"):
            found += [r.address for r in await self._query(host, kind)]
        if not found:  # names from /etc/hosts and the like
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                return []
            found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return [CloudTarget(address, port, transport, host) for address in found]

    async def _query(self, name: str, kind: str) -> list[Any]:
        try:
            answer = await self._dns.resolve(name, kind)
        except (
            dns.resolver.NXDOMAIN,
            dns.resolver.NoAnswer,
            dns.resolver.NoNameservers,
            dns.exception.Timeout,
        ):
            # Nothing there (or no answer in time): the caller falls back to the next RFC 3263 step.
            return []
        return list(answer)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
