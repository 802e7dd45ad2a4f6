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

Answers are cached for their TTL (at least `MIN_TTL`, at most `MAX_TTL`), so
the upstream can re-resolve whenever the shortest TTL it used runs out and
follow a moved SBC without a restart, at no cost while the records hold.
Failures are cached too (RFC 2308): a name that does not exist for its SOA
minimum (clamped to `NEGATIVE_TTL`..`MAX_NEGATIVE_TTL`), a server that does not
answer for `NEGATIVE_TTL`; so a failing DNS server sees at most one query per
name and type in that time, never a tight loop.
"""

import asyncio
import ipaddress
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.rdatatype
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
MIN_TTL = 5.0  # seconds: a TTL of 0 must not turn every request into a query
MAX_TTL = 3600.0  # seconds: a moved SBC is followed within the hour whatever its TTL said
NEGATIVE_TTL = 30.0  # seconds: a failure (or a name's absence) is believed at least this long
MAX_NEGATIVE_TTL = 300.0
HOSTS_TTL = 60.0  # seconds: names from /etc/hosts and the like carry no TTL


@dataclass(frozen=True, slots=True)
class CloudTarget:
    address: str  # an IP address
    port: int
    transport: str  # udp, tcp or tls
    name: str  # the host name, for TLS certificate checks


@dataclass(frozen=True, slots=True)
class Resolution:
    targets: list[CloudTarget]
    expires: float  # monotonic seconds: the shortest TTL among the records these came from runs out


class CloudResolver:
    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dns = resolver or dns.asyncresolver.Resolver()
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, list[Any]]] = {}  # (name, type) -> (until, records)
        self._expires = math.inf
        self.queries = 0  # sent to the DNS server (getaddrinfo lookups included)

    async def resolve(self, uri: str) -> list[CloudTarget]:
        """The targets for a proxy URI, in order (see the module's rules)."""
        return (await self.lookup(uri)).targets

    async def lookup(self, uri: str) -> Resolution:
        """The targets for a proxy URI and when the answers they came from expire."""
        self._expires = math.inf
        targets = await self._targets(uri)
        return Resolution(targets, self._expires)

    async def _targets(self, uri: str) -> list[CloudTarget]:
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
            found = await self._system_lookup(host, port)
        return [CloudTarget(address, port, transport, host) for address in found]

    async def _system_lookup(self, host: str, port: int) -> list[str]:
        if (cached := self._cached(host, "getaddrinfo")) is not None:
            return cached
        self.queries += 1
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return self._remember(host, "getaddrinfo", [], NEGATIVE_TTL)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return self._remember(host, "getaddrinfo", found, HOSTS_TTL)

    async def _query(self, name: str, kind: str) -> list[Any]:
        if (cached := self._cached(name, kind)) is not None:
            return cached
        self.queries += 1
        try:
            answer = await self._dns.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            # Nothing there: the caller falls back to the next RFC 3263 step; believed for the SOA minimum.
            return self._remember(name, kind, [], _negative_ttl(exc))
        except (dns.resolver.NoNameservers, dns.exception.Timeout):
            return self._remember(name, kind, [], NEGATIVE_TTL)  # the server failed: ask again later
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else MIN_TTL
        return self._remember(name, kind, list(answer), min(max(ttl, MIN_TTL), MAX_TTL))

    def _cached(self, name: str, kind: str) -> list[Any] | None:
        entry = self._cache.get((name, kind))
        if entry is None or entry[0] <= self._clock():
            return None
        self._expires = min(self._expires, entry[0])
        return entry[1]

    def _remember(self, name: str, kind: str, records: list[Any], ttl: float) -> list[Any]:
        until = self._clock() + ttl
        self._cache[(name, kind)] = (until, records)
        self._expires = min(self._expires, until)
        return records


def _negative_ttl(exc: dns.resolver.NXDOMAIN | dns.resolver.NoAnswer) -> float:
    """RFC 2308 §5: the SOA's minimum (capped by the SOA's own TTL), within our floor and ceiling."""
    responses: list[dns.message.Message] = []
    if isinstance(exc, dns.resolver.NXDOMAIN):
        responses = [r for r in exc.responses().values() if isinstance(r, dns.message.Message)]
    elif isinstance(response := exc.kwargs.get("response"), dns.message.Message):
        responses = [response]
    ttls = [
        min(rrset.ttl, rrset[0].minimum)
        for response in responses
        for rrset in response.authority
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset)
    ]
    return min(max(min(ttls, default=NEGATIVE_TTL), NEGATIVE_TTL), MAX_NEGATIVE_TTL)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
