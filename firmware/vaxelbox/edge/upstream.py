"""The way to the cloud PBX: its servers in order (RFC 3263), one long-lived connection, failover.

The site names the cloud's proxies as SIP URIs; each is resolved (NAPTR, SRV,
A/AAAA as `resolver.py` explains) into targets, and the upstream keeps one
flow to the current target, moving to the next when it fails.

Being a good neighbour to the cloud:
- the targets are re-resolved when the shortest TTL behind them runs out
  (answers are cached, `resolver.py`), so a moved SBC is followed without a
  restart; when DNS fails, the last targets found stay in use;
- a 503 with Retry-After from a target (RFC 3261 §21.5.4) holds that target
  for that long: nothing is sent to it, the next target is used (RFC 3263
  §4.3), and when every target is held `flow()` raises `CloudBusy`;
- every message sent to the cloud is counted (`traffic.py`): on the flows opened here, and on
  those the relay hands to `count` (answers to the cloud's requests, stateless forwards).
"""

import asyncio
import logging
import math
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

from vaxelbox.edge.resolver import NEGATIVE_TTL, CloudResolver, CloudTarget
from vaxelbox.edge.traffic import CloudTraffic
from vaxelbox.sip.message import Response
from vaxelbox.sip.transport import Flow, TransportLayer

log = logging.getLogger("vaxelbox.edge.upstream")

CONNECT_TIMEOUT = 5.0
MAX_RETRY_AFTER = 3600.0  # seconds: a longer (or garbled) wait is capped, so the cloud is tried again


class CloudBusy(OSError):
    """Every cloud target asked us to wait (503 Retry-After); `until` is when the first may be tried."""

    def __init__(self, until: float, message: str) -> None:
        super().__init__(message)
        self.until = until


class Upstream:
    def __init__(
        self,
        transports: TransportLayer,
        proxies: list[str],
        wan_local: tuple[str, int],
        tls: ssl.SSLContext | None = None,
        resolver: CloudResolver | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self.clock = clock
        self.fresh_until = -math.inf  # monotonic: when the DNS answers behind `targets` expire
        self.held: dict[CloudTarget, float] = {}  # target -> monotonic time its Retry-After ends
        self.traffic = CloudTraffic()
        # Told (seconds until the first is free, why) when a Retry-After leaves no target to use.
        self.all_held_observers: list[Callable[[float, str], None]] = []
        self._counted: weakref.WeakSet[Flow] = weakref.WeakSet()

    @property
    def target(self) -> CloudTarget | None:
        return self.targets[self.current] if self.targets else None

    async def resolve(self) -> None:
        """Resolve every proxy into targets; their addresses are the only ones let in on the WAN.
        Stays on the current target if it is still among them; when DNS finds nothing, keeps the
        targets it had (a DNS outage is no reason to lose the cloud)."""
        targets: list[CloudTarget] = []
        expires = math.inf
        for uri in self.proxies:
            found = await self.resolver.lookup(uri)
            targets += found.targets
            expires = min(expires, found.expires)
        targets = list(dict.fromkeys(targets))
        now = self.clock()
        self.fresh_until = expires if expires > now else now + NEGATIVE_TTL
        if not targets or targets == self.targets:
            return
        current = self.target
        if self.targets and current not in targets:
            log.warning("cloud moved: %s now resolves to %s", current, [t.address for t in targets])
            self._flow = None
        self.targets = targets
        self.current = targets.index(current) if current in targets else 0
        self.addresses |= {t.address for t in self.targets}

    async def refresh(self) -> None:
        """Re-resolve when the DNS answers behind the targets have expired (cheap otherwise)."""
        if not self.targets or self.clock() >= self.fresh_until:
            await self.resolve()

    def footprint(self) -> dict[str, Any]:
        """What the appliance sent the cloud (`CloudTraffic.snapshot`), plus "dns_queries" (int) and
        "held" ({"address:port/transport": seconds left} for targets a Retry-After holds)."""
        now = self.clock()
        held = {
            f"{t.address}:{t.port}/{t.transport}": round(until - now, 1)
            for t, until in self.held.items()
            if until > now
        }
        return {**self.traffic.snapshot(), "dns_queries": self.resolver.queries, "held": held}

    # -- Retry-After ------------------------------------------------------------------------------

    def held_until(self, target: CloudTarget | None = None) -> float | None:
        """When `target` (the current one by default) may be sent to again, if a 503 holds it."""
        target = target or self.target
        until = self.held.get(target) if target is not None else None
        if target is None or until is None:
            return None
        if until <= self.clock():
            del self.held[target]
            return None
        return until

    def hold(self, target: CloudTarget, seconds: float, why: str) -> None:
        """The cloud asked us not to send to `target` for `seconds`; move on to the next target."""
        seconds = min(max(seconds, 0.0), MAX_RETRY_AFTER)
        self.held[target] = self.clock() + seconds
        log.warning("cloud target %s:%s held for %.0f s: %s", target.address, target.port, seconds, why)
        if target == self.target:
            self.fail_over()
        frees = [self.held_until(t) for t in self.targets]
        if all(until is not None for until in frees):
            wait = min(until for until in frees if until is not None) - self.clock()
            for observer in self.all_held_observers:
                observer(wait, f"every cloud target asked us to wait ({why})")

    def on_response(self, response: Response, remote: tuple[str, int] | None = None) -> float | None:
        """A response from the cloud (to a probe or a relayed request); a 503 with Retry-After holds
        the target it came from (`remote`, else the current one). Returns the seconds held, if any."""
        if response.status != 503 or (seconds := retry_after(response)) is None:
            return None
        target = self.target
        if remote is not None:
            target = next((t for t in self.targets if (t.address, t.port) == remote), target)
        if target is not None:
            self.hold(target, seconds, f"{response.status} {response.reason}")
        return seconds

    def is_cloud(self, address: str) -> bool:
        return address in self.addresses

    def ready_flow(self) -> Flow | None:
        """The open flow to the cloud, if there is one: sending on it needs no waiting, so
        messages leave in the order they came (an ACK is never overtaken by a BYE)."""
        if self._flow is None or not self._flow.alive:
            return None
        if self.held_until() is not None:
            self._flow = None  # flow() moves on to the next target, or says CloudBusy
            return None
        return self._flow

    async def flow(self) -> Flow:
        """A flow to the current target; on failure, the next one (OSError when none answers,
        CloudBusy when every target is held by a Retry-After)."""
        await self.refresh()
        if (ready := self.ready_flow()) is not None:
            return ready
        errors = []
        held: list[float] = []
        for _ in range(len(self.targets)):
            target = self.targets[self.current]
            if (until := self.held_until(target)) is not None:
                held.append(until)
                self.fail_over()
                continue
            try:
                self._flow = self.count(await self._open(target))
                return self._flow
            except OSError as exc:
                errors.append(f"{target.name}[{target.address}]:{target.port}/{target.transport}: {exc}")
                self.fail_over()
        if held and not errors:
            self.traffic.suppress()
            wait = min(held) - self.clock()
            raise CloudBusy(min(held), f"the cloud asked us to wait (Retry-After): {wait:.0f} s left")
        if not self.targets:
            errors.append(f"no address found for {', '.join(self.proxies)}")
        self.targets = []  # resolve again next time: the cloud may have moved
        raise OSError("no cloud proxy reachable: " + "; ".join(errors))

    def fail_over(self) -> None:
        self._flow = None
        if self.targets:
            self.current = (self.current + 1) % len(self.targets)

    def count(self, flow: Flow) -> Flow:
        """Count every message sent on `flow` (retransmissions included) in `traffic`; returns it.
        For flows opened here, and for the relay's other flows to the cloud: the one a cloud request
        came in on (our answers), a stateless forward (a late response)."""
        if flow in self._counted:
            return flow
        self._counted.add(flow)
        send, traffic = flow.send, self.traffic
        label = f"{flow.remote[0]}:{flow.remote[1]}/{flow.transport}"

        def counted(data: bytes) -> None:
            traffic.sent(data, label)
            send(data)

        flow.send = counted  # type: ignore[method-assign]  # the same object: flow identity holds
        return flow

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


def retry_after(response: Response) -> float | None:
    """Seconds a Retry-After header asks for (its comment and parameters ignored), None without one."""
    value = (response.get("Retry-After") or "").split("(")[0].split(";")[0].strip()
    try:
        return float(int(value))
    except ValueError:
        return None
