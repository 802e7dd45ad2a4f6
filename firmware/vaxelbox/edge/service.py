"""The edge assembled: transports on the LAN and WAN sides, the transaction stack, the relay."""

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.relay import EdgeAddresses, EdgeRelay
from vaxelbox.edge.upstream import Upstream
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transaction import TimerSettings
from vaxelbox.sip.transport import Flow, Limits, TransportLayer
from vaxelbox.store import Store

log = logging.getLogger("vaxelbox.edge.service")


def phone_tls_context(certificate_chain: Path, key: Path) -> ssl.SSLContext:
    """The LAN side's TLS server context: our certificate chain (PEM: server certificate, then the
    site CA's) and its key. TLS 1.2 at least (RFC 8996 retires 1.0 and 1.1; every phone sold since
    about 2016 speaks 1.2). No client certificate is asked for: phones usually have none but their
    vendor's, which proves a model, not an office; a phone proves itself with SIP digest.
    Raises OSError/ssl.SSLError when the files are missing or do not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(certificate_chain, key)
    return context


@dataclass(frozen=True)
class EdgeSettings:
    lan: tuple[str, int]
    wan: tuple[str, int]
    proxies: list[str]  # the cloud's proxy URIs, in order
    timers: TimerSettings = field(default_factory=TimerSettings)
    limits: Limits = field(default_factory=Limits)
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # checks the cloud's certificate
    # Phones over TLS (RFC 5630): the server context (the site CA's certificate) and its port on the
    # LAN host; none: no TLS listener.
    lan_tls: ssl.SSLContext | None = field(default=None, compare=False)
    lan_tls_port: int = 5061


class Edge:
    def __init__(self, settings: EdgeSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.transports = TransportLayer(lambda message, flow: None, settings.limits)
        self.stack = SipStack(self.transports, settings.timers)
        self.bindings = BindingMirror(store)
        self.transports.on_flow_lost = self._flow_lost
        self.transports.on_flow_failed = self._flow_failed
        self.upstream: Upstream | None = None
        self.relay: EdgeRelay | None = None
        self.listening: list[str] = []

    async def start(self) -> None:
        lan_host, lan_port = self.settings.lan
        wan_host, wan_port = self.settings.wan
        lan = await self.transports.listen_udp(lan_host, lan_port)
        await self.transports.listen_stream(lan_host, lan[1])
        lan_tls = None
        if self.settings.lan_tls is not None:
            lan_tls = await self.transports.listen_stream(
                lan_host, self.settings.lan_tls_port, self.settings.lan_tls
            )
        wan = await self.transports.listen_udp(wan_host, wan_port)
        await self.transports.listen_stream(wan_host, wan[1])
        addresses = EdgeAddresses(lan, wan, lan_tls)
        self.upstream = Upstream(self.transports, self.settings.proxies, wan, self.settings.tls)
        await self.upstream.resolve()
        self.transports.trusted = self.upstream.is_cloud
        self.relay = EdgeRelay(self.stack, addresses, self.upstream, self.bindings)
        self.listening = [f"sip lan udp+tcp {lan[0]}:{lan[1]}", f"sip wan udp+tcp {wan[0]}:{wan[1]}"]
        if lan_tls is not None:
            self.listening.insert(1, f"sip lan tls {lan_tls[0]}:{lan_tls[1]}")

    @property
    def addresses(self) -> EdgeAddresses:
        assert self.relay is not None, "the edge has not started"
        return self.relay.addresses

    async def maintain(self, interval: float = 1.0) -> None:
        """Expire bindings, persist the mirror, keep upstream connections alive (a ping every 30 s;
        a connection whose pong does not come is closed, RFC 5626 §4.4.1). Runs until cancelled."""
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            self.bindings.expire()
            await asyncio.to_thread(self.bindings.flush)
            ticks += 1
            if ticks % 30 == 0:
                self.transports.ping_outbound()
            self.transports.check_pongs()

    def _flow_failed(self, flow: Flow) -> None:
        """No pong on one of our connections (RFC 5626 §4.4.1): the cloud's is a health signal,
        told to the relay's `on_cloud_signal` as a missed answer; another (the trunk's) is not."""
        if self.relay is not None and self.upstream is not None and self.upstream.is_cloud(flow.remote[0]):
            self.relay.on_cloud_signal(False)

    def _flow_lost(self, flow: Flow, error: Exception) -> None:
        """A connection the network took away (RFC 5626 §4.4.1: the flow failed): the bindings
        that lived on it are unreachable until they register again; one line says which."""
        lost = self.bindings.flow_lost(flow)
        if lost:
            log.warning(
                "flow failed: %r (%s): unreachable until registered again: %s",
                flow, error, ", ".join(f"{b.aor} at {b.contact}" for b in lost),
            )  # fmt: skip

    async def stop(self) -> None:
        await self.transports.close()
        await asyncio.to_thread(self.bindings.flush)
