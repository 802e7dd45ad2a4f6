"""DHCP hints: what to put in the office router's DHCP server so phones find the appliance.

Option 66 (boot server / URL) and 160 (Poly) point a phone at the appliance's
plain-HTTP address; the bootstrap it fetches there moves it to HTTPS. The
snippets match each vendor by its DHCP vendor class (option 60).
"""

from dataclasses import dataclass

from phoneprov.context import Appliance
from phoneprov.vendors import Vendor

# Option 60 prefixes the vendors' phones send (matched as a substring / prefix).
VENDOR_CLASSES = {
    "yealink": "yealink",
    "snom": "snom",
    "poly": "Polycom",
    "grandstream": "Grandstream",
    "gigaset": "Gigaset",
    "fanvil": "Fanvil",
}


@dataclass(frozen=True)
class Hint:
    vendor: Vendor
    vendor_class: str
    options: dict[int, str]  # option number -> value, only those the vendor uses


def hints(vendors: dict[str, Vendor], appliance: Appliance) -> list[Hint]:
    bases = {"base": appliance.base("https"), "http_base": appliance.base("http")}
    found = []
    for vendor in vendors.values():
        options = {
            number: value.format(**bases)
            for number, value in (
                (66, vendor.dhcp.option66),
                (160, vendor.dhcp.option160),
                (114, vendor.dhcp.option114),
                (43, vendor.dhcp.option43),
            )
            if value and number != 43  # 43 is vendor-encoded: described in notes, not emitted
        }
        found.append(Hint(vendor, VENDOR_CLASSES.get(vendor.id, vendor.name), options))
    return found


def dnsmasq(found: list[Hint]) -> str:
    lines = ["# Vaxelbox provisioning hints for dnsmasq (e.g. /etc/dnsmasq.d/vaxelbox.conf)"]
    for hint in found:
        tag = f"vaxelbox-{hint.vendor.id}"
        lines.append(f"dhcp-vendorclass=set:{tag},{hint.vendor_class}")
        for number, value in hint.options.items():
            lines.append(f'dhcp-option-force=tag:{tag},{number},"{value}"')
    return "\n".join(lines) + "\n"


def isc_dhcpd(found: list[Hint]) -> str:
    lines = [
        "# Vaxelbox provisioning hints for ISC dhcpd (include from dhcpd.conf)",
        "option vaxelbox-poly-boot-server code 160 = text;",
        "option vaxelbox-url code 114 = text;",
    ]
    names = {66: "tftp-server-name", 160: "vaxelbox-poly-boot-server", 114: "vaxelbox-url"}
    for hint in found:
        if not hint.options:
            continue
        prefix = hint.vendor_class
        lines.append(f'if substring(option vendor-class-identifier, 0, {len(prefix)}) = "{prefix}" {{')
        for number, value in hint.options.items():
            lines.append(f'    option {names[number]} "{value}";')
        lines.append("}")
    return "\n".join(lines) + "\n"
