"""Finding appliances on the LAN: they announce `_coap._udp` by mDNS with rt=vaxelbox.dev."""

import socket
import time
from typing import Any

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

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


def discover_appliances(timeout: float = 3.0, interface: str | None = None) -> list[dict[str, Any]]:
    """Appliances that answered within `timeout` seconds: serial, address, port, model, firmware."""
    zeroconf = Zeroconf(interfaces=[interface] if interface else None)
    try:
        collector = _Collector()
        ServiceBrowser(zeroconf, SERVICE_TYPE, collector)
        time.sleep(timeout)
        found = []
        for name in sorted(collector.names):
            info = zeroconf.get_service_info(SERVICE_TYPE, name, timeout=1000)
            if info is None:
                continue
            properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            if properties.get("rt") != "vaxelbox.dev":
                continue
            for address in info.addresses:
                family = socket.AF_INET6 if len(address) == 16 else socket.AF_INET
                found.append(
                    {
                        "serial": properties.get("serial"),
                        "address": socket.inet_ntop(family, address),
                        "port": info.port,
                        "model": properties.get("model"),
                        "firmware": properties.get("firmware"),
                    }
                )
        return found
    finally:
        zeroconf.close()
