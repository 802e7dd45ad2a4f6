"""The provisioning server's decisions, without sockets: a request in, a reply out.

Authorisation is per file, not per requester. A device file (one with a MAC
in its name) holds SIP secrets and goes only to that MAC, only if the site
assigns it, and only
  - during an enrolment window the installer opened, over HTTPS (first fetch
    issues the device its own digest credentials, inside the file), or
  - to a request that proves those credentials (HTTP Digest).
Everyone else asking for a device file gets the bootstrap (no secrets) or
the same 404 an unknown file gets. Misses count against the source's budget.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from vaxelbox.site import Site

from phoneprov.book import DeviceBook, Enrolled, Sighting
from phoneprov.budget import MissBudget
from phoneprov.context import Appliance, Credentials, build_context
from phoneprov.device import Device, is_device_mac
from phoneprov.digest import DigestAuth
from phoneprov.identify import AssignedVendor, Identification, identify
from phoneprov.render import Renderer, TemplateError
from phoneprov.vendors import Vendor, load_vendors

log = structlog.get_logger("phoneprov")

ENROLMENT_GRACE = 120.0  # after enrolling, a device fetches its other files before it uses its credentials
CA_PATH = "/ca.pem"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query as sent
    path: str  # decoded path
    user_agent: str
    authorization: str | None
    client: str  # source IP
    secure: bool  # arrived over HTTPS


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str | list[str]] = field(default_factory=dict)


NOT_FOUND = HttpReply(404, b"not found\n")


@dataclass
class ProvisioningService:
    site: Callable[[], Site]  # the active site, read per request (assignments change it)
    book: DeviceBook
    appliance: Appliance
    ca_pem: bytes
    renderer: Renderer = field(default_factory=Renderer)
    vendors: dict[str, Vendor] = field(default_factory=load_vendors)
    clock: Callable[[], float] = time.time
    budget: MissBudget = field(default_factory=MissBudget)
    digest: DigestAuth | None = None

    def __post_init__(self) -> None:
        self.digest = self.digest or DigestAuth(self.clock)

    def handle(self, request: HttpRequest) -> HttpReply:
        now = self.clock()
        if wait := self.budget.blocked_for(request.client, now):
            self._refuse(request, "backoff")
            return HttpReply(429, b"too many misses; wait\n", headers={"Retry-After": str(int(wait) + 1)})
        if request.method not in ("GET", "HEAD"):
            # Not an enumeration: Poly phones PUT their logs. Refused, but neither a miss nor a ban.
            return HttpReply(405, b"GET only\n", headers={"Allow": "GET, HEAD"})
        if request.path == CA_PATH:
            return HttpReply(200, self.ca_pem, "application/x-pem-file")
        site = self.site()
        assigned = AssignedVendor({p.mac: p.vendor for p in site.phones})
        found = identify(request.user_agent, request.path, self.vendors, assigned)
        if found.device.vendor is None:
            return self._unknown_vendor(request, found, now)
        if found.rule is None:
            if found.documented:  # the vendor's devices ask for it at every boot: not an attack
                log.info("file not served", path=request.path, vendor=found.device.vendor)
                return NOT_FOUND
            return self._miss(request, "unknown-file")
        if found.rule.kind == "common":
            if found.device.mac is not None:  # the User-Agent named it: worth listing for the installer
                self._record(request, found, now)
            return self._render(request, site, found, bootstrap=True)
        return self._device_file(request, site, found, now)

    def _unknown_vendor(self, request: HttpRequest, found: Identification, now: float) -> HttpReply:
        """No evidence names a vendor: never a file (a guess could send one vendor's secrets to
        another's phone). A MAC in the name is recorded with the User-Agent, so `vaxelbox phones`
        shows the device and the installer can name its vendor."""
        if found.device.mac is not None:
            self._record(request, found, now)
            log.info("device of unknown vendor", mac=found.device.mac, user_agent=request.user_agent)
        return self._miss(request, "unknown-vendor")

    def _device_file(self, request: HttpRequest, site: Site, found: Identification, now: float) -> HttpReply:
        mac = found.file_mac
        assert mac is not None  # device rules always capture the MAC
        if found.ua_mac is not None and found.ua_mac != mac:
            return self._miss(request, "mac-mismatch")
        phone = site.phone(mac)
        if phone is not None and phone.vendor is not None and phone.vendor != found.device.vendor:
            return self._miss(request, "vendor-mismatch")
        first_sighting = self._record(request, found, now)
        if phone is None:
            if first_sighting:
                self._count_miss(request, now)  # one host inventing MACs fills the device list
            log.info("unassigned device", mac=mac, vendor=found.device.vendor, client=request.client)
            return self._render(request, site, found, bootstrap=True)
        credentials = self._credentials(request, mac, now)
        if isinstance(credentials, HttpReply):
            return credentials
        if credentials is not None:
            return self._render(request, site, found, credentials=credentials)
        return self._render(request, site, found, bootstrap=True)

    def _credentials(self, request: HttpRequest, mac: str, now: float) -> "Credentials | HttpReply | None":
        """The device's credentials if this request may have its secrets; a reply if it must be refused
        or challenged; None if it gets the bootstrap (waiting for enrolment)."""
        enrolled = self.book.enrolled(mac)
        if not request.secure and not self.site().provisioning.plain_http_secrets:
            if enrolled is None:
                log.info("device waits for enrolment over https", mac=mac, client=request.client)
                return None
            return self._miss(request, "https-required")
        window = self.book.enrolment()
        admitted = window is not None and window.admits(mac, now)
        if enrolled is not None:
            if self._proves(request, mac, enrolled):
                return Credentials(mac, enrolled.credential)
            in_grace = admitted and now - enrolled.at < ENROLMENT_GRACE and request.client == enrolled.ip
            if in_grace:
                return Credentials(mac, enrolled.credential)
            if request.authorization:
                return self._miss(request, "bad-credentials", self._challenge())
            return self._challenge()
        if not admitted:
            log.info("assigned device waits for the enrolment window", mac=mac, client=request.client)
            return None
        credential = secrets.token_urlsafe(24)
        self.book.enrol(mac, Enrolled(credential, now, request.client))
        log.info("device enrolled", mac=mac, client=request.client)
        return Credentials(mac, credential)

    def _proves(self, request: HttpRequest, mac: str, enrolled: Enrolled) -> bool:
        assert self.digest
        verdict = self.digest.verify(
            request.method,
            request.target,
            request.authorization,
            lambda user: enrolled.credential if user == mac else None,
        )
        return verdict.username == mac

    def _challenge(self) -> HttpReply:
        assert self.digest
        return HttpReply(
            401, b"authentication required\n", headers={"WWW-Authenticate": self.digest.challenges()}
        )

    def _render(
        self,
        request: HttpRequest,
        site: Site,
        found: Identification,
        bootstrap: bool = False,
        credentials: Credentials | None = None,
    ) -> HttpReply:
        assert found.rule is not None
        assert found.device.vendor is not None
        device = (
            found.device if found.rule.kind == "device" else Device(None, found.device.vendor, None, None)
        )
        phone = site.phone(device.mac) if device.mac and not bootstrap else None
        dect = self._is_dect(site, found)
        context = build_context(
            site, device, phone, self.appliance, found.groups, credentials, dect, self.ca_pem.decode()
        )
        try:
            text = self.renderer.render(found.device.vendor, found.rule, context)
        except TemplateError as exc:
            log.error("template broken", error=str(exc), path=request.path)
            return HttpReply(500, b"configuration template broken; see the appliance log\n")
        log.info(
            "file served",
            path=request.path,
            client=request.client,
            vendor=found.device.vendor,
            mac=device.mac,
            contents="bootstrap" if context["bootstrap"] else "full",
        )
        return HttpReply(200, text.encode("utf-8"), found.rule.content_type)

    def _is_dect(self, site: Site, found: Identification) -> bool:
        """Whether the model (the User-Agent's, else the site's) is one of the vendor's DECT bases."""
        assert found.device.vendor is not None
        model = found.device.model
        if model is None and found.device.mac is not None and (phone := site.phone(found.device.mac)):
            model = phone.model
        return self.vendors[found.device.vendor].is_dect(model)

    def _record(self, request: HttpRequest, found: Identification, now: float) -> bool:
        device = found.device
        if device.mac is None or not is_device_mac(device.mac):
            return False  # identify yields no phantom (all zeros, multicast); this keeps it so
        sighting = Sighting(
            device.mac,
            device.vendor,
            device.model,
            device.firmware,
            request.client,
            request.user_agent,
            request.path,
            now,
        )
        return self.book.record(sighting)

    def _miss(self, request: HttpRequest, reason: str, reply: HttpReply = NOT_FOUND) -> HttpReply:
        self._refuse(request, reason)
        self._count_miss(request, self.clock())
        return reply

    def _count_miss(self, request: HttpRequest, now: float) -> None:
        if backoff := self.budget.miss(request.client, now):
            log.warning("provisioning source blocked", client=request.client, seconds=int(backoff))

    def _refuse(self, request: HttpRequest, reason: str) -> None:
        # One line per refusal, the same shape every time: fail2ban's filter matches it.
        log.warning("provisioning refused", client=request.client, reason=reason, path=request.path)
