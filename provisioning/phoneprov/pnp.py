"""SIP PnP: answer a phone's multicast SUBSCRIBE (Event: ua-profile) with where to fetch its files.

Phones without DHCP hints multicast a SUBSCRIBE to 224.0.1.75:5060 naming
their MAC in the Request-URI (`MAC%3a0015654aa937`, `MAC%3A...`, `MAC0015...`)
and their vendor and model in the Event parameters. We answer 200, then send
a NOTIFY with the provisioning URL as `application/url`. Only known vendors,
and MACs that are assigned or may enrol, get an answer: an appliance stays
silent for phones that are not its own (another PnP server may serve them).
"""

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import structlog
from vaxelbox.sip.message import Header, Request, Response, parse_message
from vaxelbox.sip.responses import make_response, new_tag
from vaxelbox.sip.syntax import parse_params
from vaxelbox.sip.uri import SipUri

from phoneprov.budget import MissBudget
from phoneprov.device import device_mac
from phoneprov.vendors import Vendor

log = structlog.get_logger("phoneprov.pnp")

PNP_GROUP = "224.0.1.75"
PNP_PORT = 5060
DEDUPE_SECONDS = 32.0  # Timer F: a SUBSCRIBE retransmitted within this is the same request

Address = tuple[str, int]


@dataclass(frozen=True)
class Datagram:
    data: bytes
    to: Address


@dataclass(frozen=True)
class PnpRequest:
    mac: str
    vendor: Vendor
    model: str | None


@dataclass
class PnpResponder:
    """Sans-I/O: datagrams in, datagrams out. `admits(mac)` says whether a MAC is ours to answer."""

    vendors: dict[str, Vendor]
    admits: Callable[[str], bool]
    base_url: str  # https://<lan>:<port>
    local: Address  # where NOTIFY responses come back (our unicast socket)
    budget: MissBudget = field(default_factory=lambda: MissBudget(per_minute=10, first_backoff=60.0))
    _answered: dict[str, tuple[float, list[Datagram]]] = field(default_factory=dict)
    notified: set[str] = field(default_factory=set)  # Call-IDs whose NOTIFY got its 200

    def on_datagram(self, data: bytes, source: Address, now: float) -> list[Datagram]:
        try:
            message = parse_message(data)
        except ValueError:  # SipParseError, SipSyntaxError
            return []  # multicast garbage: silence, never an error storm
        if isinstance(message, Response):
            if message.cseq[1] == "NOTIFY" and message.status >= 200:
                self.notified.add(message.call_id)
            return []
        if message.method != "SUBSCRIBE":
            return []
        try:
            return self._subscribe(message, source, now)
        except ValueError:  # a header we need is malformed (headers parse lazily)
            return []

    def _subscribe(self, request: Request, source: Address, now: float) -> list[Datagram]:
        key = f"{request.call_id} {request.cseq[0]}"
        self._forget_old(now)
        if key in self._answered:
            return self._answered[key][1][:1]  # a retransmission: the 200 again, not another NOTIFY
        wanted = self._pnp_request(request)
        if wanted is None or not self.admits(wanted.mac):
            return []
        if self.budget.blocked_for(source[0], now) or self.budget.miss(source[0], now):
            log.warning("pnp refused", client=source[0], reason="rate")
            return []
        to_tag = new_tag()
        ok = make_response(request, 200, "OK", to_tag=to_tag)
        ok.add("Expires", "0")
        ok.add("Content-Length", "0")
        out = [Datagram(ok.to_bytes(), _response_address(request, source))]
        url = self._url(wanted)
        out.append(Datagram(self._notify(request, to_tag, url).to_bytes(), _notify_address(request, source)))
        self._answered[key] = (now, out)
        log.info("pnp answered", mac=wanted.mac, vendor=wanted.vendor.id, client=source[0], url=url)
        return out

    def _pnp_request(self, request: Request) -> PnpRequest | None:
        event = request.get("Event") or request.get("o")
        package, _, rest = (event or "").partition(";")
        if package.strip().lower() != "ua-profile":
            return None
        params = {
            k.lower(): (v or "").strip('"') for k, v in parse_params(";" + rest if rest else "").items()
        }
        vendor = self._vendor(params.get("vendor", ""))
        mac = _mac_of(request)
        if vendor is None or mac is None:
            return None
        return PnpRequest(mac, vendor, params.get("model"))

    def _vendor(self, name: str) -> Vendor | None:
        name = name.lower()
        return next((v for v in self.vendors.values() if v.pnp and name in v.pnp.event_vendors), None)

    def _url(self, wanted: PnpRequest) -> str:
        assert wanted.vendor.pnp is not None
        return wanted.vendor.pnp.url.format(base=self.base_url, mac=wanted.mac, model=wanted.model or "")

    def _notify(self, subscribe: Request, to_tag: str, url: str) -> Request:
        target = subscribe.contacts[0].uri if subscribe.contacts else subscribe.from_.uri
        host, port = self.local
        headers = [
            Header("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"),
            Header("Max-Forwards", "70"),
            Header("From", f"<{subscribe.to.uri}>;tag={to_tag}"),
            Header("To", str(subscribe.from_)),
            Header("Call-ID", subscribe.call_id),
            Header("CSeq", "1 NOTIFY"),
            Header("Event", "ua-profile"),
            Header("Subscription-State", "terminated;reason=timeout"),
            Header("Content-Type", "application/url"),
            Header("Content-Length", str(len(url.encode()))),
        ]
        return Request("NOTIFY", target, headers, url.encode())

    def _forget_old(self, now: float) -> None:
        for key in [k for k, (at, _) in self._answered.items() if now - at > DEDUPE_SECONDS]:
            del self._answered[key]


def _mac_of(request: Request) -> str | None:
    uri = request.uri
    user = unquote(uri.user or "") if isinstance(uri, SipUri) else ""
    found = re.fullmatch(r"(?i)mac:?([0-9a-f]{12})", user)
    return device_mac(found.group(1)) if found else None  # never a phantom (all zeros, multicast)


def _response_address(request: Request, source: Address) -> Address:
    """RFC 3261 18.2.2 with RFC 3581: the source port if rport was asked for, else the Via's port."""
    via = request.vias[0]
    if "rport" in via.params:
        return source
    return source[0], via.port or PNP_PORT


def _notify_address(request: Request, source: Address) -> Address:
    if request.contacts and isinstance(request.contacts[0].uri, SipUri):
        contact = request.contacts[0].uri
        if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", contact.host):  # an address, not a name to resolve
            return contact.host, contact.port or PNP_PORT
    return _response_address(request, source)
