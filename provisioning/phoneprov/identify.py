"""Identification: who is asking, and for which file (wazo-provd's extractor -> association idea).

A vendor is chosen only on positive evidence, strongest first:
  1. the User-Agent matches one of the vendor's shapes (vendor, model, firmware, often the MAC);
  2. the installer's word: the site names the vendor of the MAC in the file name;
  3. the MAC's OUI is the vendor's *and* the file name is one that vendor's devices use.
A file name alone never decides: `<mac>.cfg` is Yealink's, Fanvil's and Poly's at once, and
wazo-provd too reads the path only after the User-Agent has named the vendor. A request with no
evidence resolves to an unknown vendor (the service records it and answers 404).
"""

import re
from dataclasses import dataclass
from typing import Literal

from phoneprov.device import Device, device_mac
from phoneprov.vendors import FileRule, Vendor

Evidence = Literal["user-agent", "site", "oui"]


@dataclass(frozen=True)
class UserAgentInfo:
    vendor: str
    model: str
    firmware: str | None
    mac: str | None  # None also when the User-Agent names a phantom MAC (all zeros, multicast)


@dataclass(frozen=True)
class Identification:
    """What a request resolved to.

    `device.vendor` None: no evidence names a vendor. `rule` None: the vendor serves no such
    file (`documented` then says whether its devices ask for it anyway: not an attack).
    """

    device: Device
    ua_mac: str | None  # the MAC the User-Agent claims, if any
    rule: FileRule | None
    file_mac: str | None  # the MAC in a device file's name
    groups: dict[str, str]
    evidence: Evidence | None = None
    documented: bool = False


def parse_user_agent(user_agent: str, vendors: dict[str, Vendor]) -> UserAgentInfo | None:
    """The vendor whose User-Agent shape matches first (vendors in file order), or None."""
    for vendor in vendors.values():
        for pattern in vendor.user_agents:
            if match := pattern.search(user_agent):
                found = match.groupdict()
                mac = device_mac(found["mac"]) if found.get("mac") else None
                return UserAgentInfo(vendor.id, found["model"], found.get("firmware"), mac)
    return None


def vendor_by_oui(mac: str, vendors: dict[str, Vendor]) -> str | None:
    return next((v.id for v in vendors.values() if mac[:6] in v.oui), None)


def identify(
    user_agent: str, path: str, vendors: dict[str, Vendor], assigned_vendor: "AssignedVendor"
) -> Identification:
    """Resolve a request for `path` (leading `/` optional). `assigned_vendor(mac)` gives the site's
    vendor for an assigned MAC (the installer's word)."""
    ua = parse_user_agent(user_agent, vendors)
    path = path.lstrip("/")
    path_mac = mac_in_path(path)
    chosen = _evidence(ua, path, path_mac, vendors, assigned_vendor)
    if chosen is None:
        return Identification(Device(path_mac, None, None, None), None, None, None, {})
    vendor_id, evidence = chosen
    vendor = vendors[vendor_id]
    own = ua if ua is not None and ua.vendor == vendor_id else None
    model, firmware = (own.model, own.firmware) if own else (None, None)
    ua_mac = ua.mac if ua else None
    found = vendor.rule_for(path)
    if found is None:
        device = Device(path_mac or ua_mac, vendor_id, model, firmware)
        return Identification(device, ua_mac, None, None, {}, evidence, vendor.documents(path))
    rule, match = found
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    file_mac = device_mac(groups["mac"]) if "mac" in groups else None
    if "mac" in groups and file_mac is None:  # a phantom MAC in a device file's name: no device
        return Identification(Device(None, vendor_id, model, firmware), ua_mac, None, None, {}, evidence)
    device = Device(file_mac or ua_mac, vendor_id, model, firmware)
    return Identification(device, ua_mac, rule, file_mac, groups, evidence, True)


class AssignedVendor:
    """The site's vendor per assigned MAC (a callable, so tests and the agent can supply one)."""

    def __init__(self, vendors_by_mac: dict[str, str | None]) -> None:
        self._by_mac = vendors_by_mac

    def __call__(self, mac: str) -> str | None:
        return self._by_mac.get(mac)


_ANY_MAC = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{12}(?![0-9a-fA-F])")


def mac_in_path(path: str) -> str | None:
    """The first run of exactly 12 hex digits in `path` if it can name a device, else None."""
    found = _ANY_MAC.search(path)
    return device_mac(found.group()) if found else None


def _evidence(
    ua: UserAgentInfo | None,
    path: str,
    path_mac: str | None,
    vendors: dict[str, Vendor],
    assigned_vendor: AssignedVendor,
) -> tuple[str, Evidence] | None:
    """The vendor and what proves it, or None. A recognised User-Agent decides alone: a Yealink
    asking for a Poly file name gets nothing of Poly's."""
    if ua is not None:
        return ua.vendor, "user-agent"
    if path_mac is None:
        return None
    site_vendor = assigned_vendor(path_mac)
    if site_vendor in vendors and vendors[site_vendor].documents(path):
        return site_vendor, "site"
    oui_vendor = vendor_by_oui(path_mac, vendors)
    if oui_vendor is not None and vendors[oui_vendor].documents(path):
        return oui_vendor, "oui"
    return None
