"""Finding appliances on the LAN: they announce `_coap._udp` by mDNS with rt=vaxelbox.dev."""

import asyncio
import socket
from typing import Any

from zeroconf import InterfaceChoice, ServiceListener, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from vaxelctl.client import EXIT_FAILED, EXIT_USAGE, ClientError

SERVICE_TYPE = "_coap._udp.local."


class _Collector(ServiceListener):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.add(name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.add(name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.discard(name)


async def discover_appliances(timeout: float = 3.0, interface: str | None = None) -> list[dict[str, Any]]:
    """Appliances that answered within `timeout` seconds: serial, address, port, model, firmware.

    `interface` is a local address to listen on; None listens on every interface. Raises
    ClientError when it cannot listen there: 2 if it is not an address, else 1."""
    try:
        zeroconf = AsyncZeroconf(interfaces=[interface] if interface else InterfaceChoice.All)
    except (OSError, ValueError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
        malformed = isinstance(exc, ValueError)  # not an address at all: usage
        raise ClientError(
            f"cannot listen for mDNS on {interface or 'any interface'}: {reason}",
            EXIT_USAGE if malformed else EXIT_FAILED,
        ) from None
    try:
        collector = _Collector()
        browser = AsyncServiceBrowser(zeroconf.zeroconf, SERVICE_TYPE, collector)
        await asyncio.sleep(timeout)
        await browser.async_cancel()
        found = []
        for name in sorted(collector.names):
            found += await _appliance(zeroconf, name)
        return found
    finally:
        await zeroconf.async_close()


async def _appliance(zeroconf: AsyncZeroconf, name: str) -> list[dict[str, Any]]:
    """One row per address of the service `name`, if it is a Vaxelbox appliance."""
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    if not await info.async_request(zeroconf.zeroconf, 1000):
        return []
    properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    if properties.get("rt") != "vaxelbox.dev":
        return []
    rows = []
    for address in info.addresses:
        family = socket.AF_INET6 if len(address) == 16 else socket.AF_INET
        rows.append(
            {
                "serial": properties.get("serial"),
                "address": socket.inet_ntop(family, address),
                "port": info.port,
                "model": properties.get("model"),
                "firmware": properties.get("firmware"),
            }
        )
    return rows
