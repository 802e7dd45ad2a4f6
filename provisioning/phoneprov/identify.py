"""Identification: who is asking, and for which file (wazo-provd's extractor pipeline, simplified).

Three sources, strongest first: the User-Agent (vendor, model, firmware and
often the MAC), the requested file (its vendor's naming, and the MAC in a
device file's name), and the MAC's OUI (a hint only).
"""

import re
from dataclasses import dataclass

from phoneprov.device import Device, normalise_mac
from phoneprov.vendors import FileRule, Vendor


@dataclass(frozen=True)
class UserAgentInfo:
    vendor: str
    model: str
    firmware: str | None
    mac: str | None


@dataclass(frozen=True)
class Identification:
    """The device and the file rule a request resolved to (rule None: no vendor serves this path)."""

    device: Device
    ua_mac: str | None  # the MAC the User-Agent claims, if any
    rule: FileRule | None
    file_mac: str | None  # the MAC in a device file's name
    groups: dict[str, str]


def parse_user_agent(user_agent: str, vendors: dict[str, Vendor]) -> UserAgentInfo | None:
    for vendor in vendors.values():
        for pattern in vendor.user_agents:
            if match := pattern.search(user_agent):
                found = match.groupdict()
                mac = normalise_mac(found["mac"]) if found.get("mac") else None
                return UserAgentInfo(vendor.id, found["model"], found.get("firmware"), mac)
    return None


def vendor_by_oui(mac: str, vendors: dict[str, Vendor]) -> str | None:
    return next((v.id for v in vendors.values() if mac[:6] in v.oui), None)


def identify(
    user_agent: str, path: str, vendors: dict[str, Vendor], assigned_vendor: "AssignedVendor"
) -> Identification:
    """Resolve a request. `assigned_vendor(mac)` gives the site's vendor for an assigned MAC."""
    ua = parse_user_agent(user_agent, vendors)
    path = path.lstrip("/")
    order = _vendor_order(ua, path, vendors, assigned_vendor)
    for vendor_id in order:
        found = vendors[vendor_id].rule_for(path)
        if found is None:
            continue
        rule, match = found
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        file_mac = normalise_mac(groups["mac"]) if "mac" in groups else None
        device = Device(
            mac=file_mac or (ua.mac if ua else None),
            vendor=vendor_id,
            model=ua.model if ua and ua.vendor == vendor_id else None,
            firmware=ua.firmware if ua and ua.vendor == vendor_id else None,
        )
        return Identification(device, ua.mac if ua else None, rule, file_mac, groups)
    device = Device(ua.mac if ua else None, ua.vendor if ua else None, ua and ua.model, ua and ua.firmware)
    return Identification(device, ua.mac if ua else None, None, None, {})


class AssignedVendor:
    """The site's vendor per assigned MAC (a callable, so tests and the agent can supply one)."""

    def __init__(self, vendors_by_mac: dict[str, str | None]) -> None:
        self._by_mac = vendors_by_mac

    def __call__(self, mac: str) -> str | None:
        return self._by_mac.get(mac)


_ANY_MAC = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{12}(?![0-9a-fA-F])")


def _vendor_order(
    ua: UserAgentInfo | None, path: str, vendors: dict[str, Vendor], assigned_vendor: AssignedVendor
) -> list[str]:
    """Which vendors' naming to try for `path`. A recognised User-Agent decides alone: a Yealink
    asking for a Poly file name gets nothing. Otherwise the site's vendor for a MAC in the name,
    then the OUI, then every vendor."""
    if ua is not None:
        return [ua.vendor]
    order: list[str] = []
    if found := _ANY_MAC.search(path):
        mac = found.group().lower()
        order += [v for v in (assigned_vendor(mac), vendor_by_oui(mac, vendors)) if v]
    return list(dict.fromkeys([*order, *vendors]))
