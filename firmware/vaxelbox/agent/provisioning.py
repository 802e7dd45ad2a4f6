"""The agent's provisioning services: phoneprov's HTTP(S) server and SIP PnP responder, wired to
the store (devices, enrolment), the active site and this board's LAN address."""

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

from phoneprov.context import Appliance
from phoneprov.http import ProvisioningServer
from phoneprov.pki import ServerIdentity, ensure_site_pki
from phoneprov.pnp import PnpResponder
from phoneprov.pnp_server import PnpServer
from phoneprov.render import Renderer
from phoneprov.service import ProvisioningService
from phoneprov.vendors import load_vendors

from vaxelbox.agent.logs import get_logger
from vaxelbox.agent.options import RunOptions
from vaxelbox.site import Site
from vaxelbox.store import Store

log = get_logger("vaxelbox.provisioning")


def appliance_of(options: RunOptions) -> Appliance:
    return Appliance(
        options.lan.host, options.lan.port, options.http_port, options.https_port, options.lan_tls.port
    )


def site_identity(options: RunOptions) -> ServerIdentity:
    """The site CA (created once in <data>/pki) and its certificate for the LAN address: what HTTPS
    provisioning presents by default and SIP over TLS for phones presents always (phones are given
    this CA, /ca.pem, whatever certificate HTTPS uses)."""
    return ensure_site_pki(options.data_dir / "pki", options.lan.host)


def template_overrides(data_dir: Path) -> Path:
    """Where an installer puts template overrides: <data>/templates/<vendor>/..."""
    return data_dir / "templates"


class Provisioning:
    def __init__(self, options: RunOptions, store: Store, site: Callable[[], Site]) -> None:
        self.options = options
        self.store = store
        self.site = site
        self.http: ProvisioningServer | None = None
        self.pnp: PnpServer | None = None

    @property
    def listening(self) -> list[str]:
        return [*(self.http.listening if self.http else []), *(self.pnp.listening if self.pnp else [])]

    async def start(self) -> None:
        options = self.options
        identity = self._identity()
        appliance = appliance_of(options)
        vendors = load_vendors()
        service = ProvisioningService(
            site=self.site,
            book=self.store.devices,
            appliance=appliance,
            ca_pem=identity.ca_certificate.read_bytes(),
            renderer=Renderer(template_overrides(options.data_dir)),
            vendors=vendors,
        )
        self.http = ProvisioningServer(
            service, options.lan.host, options.http_port, options.https_port, identity
        )
        await self.http.start()
        if ipaddress.ip_address(options.lan.host).is_loopback:
            log.info("SIP PnP off", reason="the LAN address is loopback: no phones can multicast there")
            return
        responder = PnpResponder(vendors, self._pnp_admits, appliance.base("https"), local=("0.0.0.0", 0))
        pnp = PnpServer(responder, options.lan.host)
        try:
            await pnp.start()
            self.pnp = pnp
        except OSError as exc:  # e.g. an interface without multicast: phones then need DHCP hints
            await pnp.stop()
            log.warning("SIP PnP off", reason=f"cannot join 224.0.1.75 on {options.lan.host}: {exc}")

    async def stop(self) -> None:
        if self.pnp is not None:
            await self.pnp.stop()
        if self.http is not None:
            await self.http.stop()

    def _identity(self) -> ServerIdentity:
        options = self.options
        if options.https_certificate and options.https_key:
            return ServerIdentity(options.https_certificate, options.https_key, options.https_certificate)
        return site_identity(options)

    def _pnp_admits(self, mac: str) -> bool:
        """Answer PnP for assigned MACs, and for any MAC while an enrolment window admits it."""
        if self.site().phone(mac) is not None:
            return True
        window = self.store.devices.enrolment()
        return window is not None and window.admits(mac, time.time())
