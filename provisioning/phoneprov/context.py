"""The template context: everything a vendor template may use, built from the site and the device.

The names here are the contract with the templates (see templates/README.md).
A bootstrap context carries no secret: no accounts, no keys, a throwaway
admin password, no provisioning credentials.
"""

import secrets
from dataclasses import dataclass
from typing import Any

from vaxelbox.site import Site
from vaxelbox.site.fields import colon_mac, proxy_parts
from vaxelbox.site.model import Phone, User

from phoneprov.device import Device
from phoneprov.timezone import zone_rule

BOOTSTRAP_RECHECK_MINUTES = 5  # unassigned phones ask often, so an assignment lands within minutes
REGISTER_EXPIRES = 300
FAILOVER_AFTER = 32  # Timer B/F: a server that did not answer a transaction for this long is gone
FAILBACK_INTERVAL = 60


@dataclass(frozen=True)
class Appliance:
    """Where the phones reach the appliance."""

    lan_host: str
    sip_port: int  # UDP and TCP
    http_port: int
    https_port: int
    sip_tls_port: int = 5061  # SIP over TLS (phone_transport = "tls")

    def base(self, scheme: str) -> str:
        host = f"[{self.lan_host}]" if ":" in self.lan_host else self.lan_host
        port = self.https_port if scheme == "https" else self.http_port
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{host}" + ("" if port == default else f":{port}")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def build_context(
    site: Site,
    device: Device,
    phone: Phone | None,
    appliance: Appliance,
    groups: dict[str, str],
    credentials: Credentials | None = None,
    dect: bool = False,
    ca_pem: str = "",
) -> dict[str, Any]:
    """The context for one file. `phone` None (or no credentials given) renders the bootstrap.
    `dect`: the device's model is a DECT base (the site's `type` decides when it assigns one).
    `ca_pem`: the site CA's certificate (PEM, public), for vendors that take it inline."""
    prov = site.provisioning
    full = phone is not None and credentials is not None
    tz = zone_rule(site.site.timezone)
    cloud_host, cloud_port, cloud_transport = proxy_parts(prov.phone_fallback or site.cloud.proxies[0])
    return {
        "bootstrap": not full,
        "device": _device(device, phone, dect),
        "match": groups,
        "site": {"name": site.site.name, "language": site.site.language},
        "accounts": _accounts(site, phone) if full else [],
        "multicell": _multicell(site, phone),
        "keys": _keys(site, phone) if full else [],
        "pickup_prefix": prov.pickup_prefix,
        "servers": [
            {
                "host": appliance.lan_host,
                "port": _sip_port(appliance, prov.phone_transport),
                "transport": prov.phone_transport,
            },
            {"host": cloud_host, "port": cloud_port, "transport": cloud_transport},
        ],
        "timers": {
            "register_expires": REGISTER_EXPIRES,
            "failover_after": FAILOVER_AFTER,
            "failback_interval": FAILBACK_INTERVAL,
        },
        "srtp": prov.srtp,
        "tz": tz,
        "ntp": list(prov.ntp),
        "admin_password": _admin_password(site) if full else secrets.token_urlsafe(18),
        "firmware_url": prov.firmware.get(phone.model or "") if phone else None,
        "provisioning": {
            "url": appliance.base("https"),
            "http_url": appliance.base("http"),
            "recheck_minutes": prov.recheck_minutes if full else BOOTSTRAP_RECHECK_MINUTES,
            "username": credentials.username if full and credentials else None,
            "password": credentials.password if full and credentials else None,
            # Over HTTPS, as the full file itself: a trust anchor fetched over plain HTTP could be
            # swapped by anyone on the LAN (the HTTPS server serves /ca.pem too).
            "ca_url": appliance.base("https") + "/ca.pem",
            "ca_pem": ca_pem,
        },
    }


def _sip_port(appliance: Appliance, transport: str) -> int:
    return appliance.sip_tls_port if transport == "tls" else appliance.sip_port


def _device(device: Device, phone: Phone | None, dect: bool) -> dict[str, Any]:
    mac = device.mac or ""
    return {
        "mac": mac,
        "mac_colon": colon_mac(mac) if mac else "",
        "mac_upper": mac.upper(),
        "vendor": device.vendor,
        "model": device.model or (phone.model if phone else None),
        "firmware": device.firmware,
        "type": phone.type if phone else ("dect" if dect else "desk"),
    }


def _accounts(site: Site, phone: Phone) -> list[dict[str, Any]]:
    users = phone.lines if phone.type == "desk" else _handsets(site, phone)
    return [_account(site, index, site.user(user_id)) for index, user_id in enumerate(users, 1)]


def _handsets(site: Site, phone: Phone) -> list[str]:
    """A DECT base's handset users. In a snom multicell chain the primary (data master) carries
    every base's handsets, its own first, and hands them to the others itself; a secondary none."""
    chain = site.dect_chain()
    if phone.mac not in {base.mac for base in chain}:
        return phone.handsets
    if phone.mac != chain[0].mac:
        return []
    return [user for base in chain for user in base.handsets]


def _multicell(site: Site, phone: Phone | None) -> dict[str, Any] | None:
    """The snom multicell chain this base is in (`chain_id`, `primary`: this base is the data
    master, `bases`: how many, `primary_mac`), or None: no chain, or not a base of it."""
    chain = site.dect_chain()
    if phone is None or phone.mac not in {base.mac for base in chain}:
        return None
    return {
        "chain_id": site.provisioning.dect_chain_id,
        "primary": phone.mac == chain[0].mac,
        "bases": len(chain),
        "primary_mac": colon_mac(chain[0].mac),
    }


def _account(site: Site, index: int, user: User) -> dict[str, Any]:
    return {
        "index": index,
        "user_id": user.id,
        "name": user.name,
        "extension": user.extension,
        "username": user.sip.user,
        "password": user.sip.password.get_secret_value(),
        "domain": site.cloud.domain,
        "label": f"{user.extension} {user.name.split()[0]}",
    }


def _keys(site: Site, phone: Phone) -> list[dict[str, Any]]:
    prov = site.provisioning
    keys: list[dict[str, Any]] = []

    def add(kind: str, label: str, extension: str, value: str, pickup: str = "") -> None:
        keys.append(
            {
                "index": len(keys) + 1,
                "kind": kind,
                "label": label,
                "extension": extension,
                "value": value,
                "pickup": pickup,
                "account": 1,
            }
        )

    for user_id in phone.blf:
        user = site.user(user_id)
        add("blf", user.name, user.extension, user.extension, prov.pickup_prefix + user.extension)
    if prov.group_keys and phone.lines:
        line_user = phone.lines[0]
        for group in site.groups:
            if any(member.user == line_user for member in group.members):
                add("group_login", f"In {group.name}", group.extension, f"*75*{group.extension}#")
                add("group_logout", f"Ut {group.name}", group.extension, f"#75*{group.extension}#")
    return keys


def _admin_password(site: Site) -> str:
    password = site.provisioning.admin_password
    # Without a site password the web UI stays locked: a fresh random one each time.
    return password.get_secret_value() if password else secrets.token_urlsafe(18)
