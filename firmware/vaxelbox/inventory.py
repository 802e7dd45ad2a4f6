"""The devices provisioning has seen, and assigning them to users: shared by `vaxelbox phones`
on the appliance and `/phones` over CoAP.

An assignment is a new site version made from the active one (comments kept),
validated like any other; the agent picks it up at the phone's next request.
"""

from collections.abc import Callable
from typing import Any

from phoneprov.vendors import load_vendors

from vaxelbox.site import parse_site
from vaxelbox.site.edit import EditError, assign_phone, unassign_phone
from vaxelbox.site.fields import colon_mac
from vaxelbox.store import SiteVersion, Store
from vaxelbox.store.devices import SeenDevice


def device_rows(store: Store) -> list[dict[str, Any]]:
    """Every device seen, with the users it is assigned to (None: unassigned)."""
    active = store.sites.active()
    site = parse_site(active.source, "stored site") if active else None
    rows = []
    for device in store.devices.all():
        phone = site.phone(device.mac) if site else None
        users = (phone.lines or phone.handsets) if phone else []
        rows.append(
            {
                "mac": colon_mac(device.mac),
                "vendor": device.vendor,
                "model": device.model,
                "firmware": device.firmware,
                "ip": device.ip,
                "user_agent": device.user_agent,
                "assigned": ", ".join(users) if users else None,
                "enrolled": device.enrolled_at is not None,
                "first_seen": device.first_seen,
                "last_seen": device.last_seen,
            }
        )
    return rows


def assign(
    store: Store, mac: str, users: list[str], dect: bool = False, vendor: str | None = None
) -> SiteVersion:
    """Put the device (a bare MAC) on `users`' lines or handsets. `vendor` (a site vendor id) is the
    installer's word; without it the vendor provisioning identified, if any. Raises EditError or
    SiteError."""
    seen = seen_device(store, mac)
    active = store.sites.active()
    site = parse_site(active.source, "stored site") if active else None
    known = [u.id for u in site.users] if site else []
    if site is not None and (unknown := next((u for u in users if u not in known), None)):
        # Said here, not as the new site's `phones[N].lines[M]`, where validation would find it.
        raise EditError(f"no user {unknown!r} in the site ({', '.join(known)})")
    before = site.phone(mac) if site else None
    # The installer's word first, then what the device proved, then what the site said before.
    vendor = vendor or (seen.vendor if seen else None) or (before.vendor if before else None)
    model = (seen.model if seen else None) or (before.model if before else None)
    return _change_site(
        store,
        lambda source: assign_phone(source, mac, users, vendor, model, dect),
        f"assign {colon_mac(mac)} to {', '.join(users)}",
    )


def is_dect_base(seen: SeenDevice | None) -> bool:
    """Whether the device reported a model its vendor makes as a DECT base (W70B, M900, N870)."""
    vendor = load_vendors().get(seen.vendor or "") if seen else None
    return bool(seen and vendor and vendor.is_dect(seen.model))


def site_vendor(store: Store, mac: str) -> str | None:
    """The vendor the active site names for the device (a bare MAC), if any."""
    active = store.sites.active()
    phone = parse_site(active.source, "stored site").phone(mac) if active else None
    return phone.vendor if phone else None


def seen_device(store: Store, mac: str) -> SeenDevice | None:
    """What provisioning recorded of the device (a bare MAC), or None if it never asked."""
    return next((d for d in store.devices.all() if d.mac == mac), None)


def already_assigned(
    store: Store, mac: str, users: list[str], dect: bool = False, vendor: str | None = None
) -> SiteVersion | None:
    """The active site version if it already puts the device (a bare MAC) on exactly `users`
    (and names `vendor`, when given): assigning again would change nothing, so no new version."""
    active = store.sites.active()
    phone = parse_site(active.source, "stored site").phone(mac) if active else None
    if phone is None or (phone.type == "dect") != dect:
        return None
    if vendor is not None and phone.vendor != vendor:
        return None
    return active if list(phone.handsets if dect else phone.lines) == users else None


def not_in_site(store: Store, macs: list[str]) -> list[str]:
    """The MACs (bare) the active site assigns to nobody: no enrolment window may name them."""
    active = store.sites.active()
    site = parse_site(active.source, "stored site") if active else None
    return [mac for mac in macs if site is None or site.phone(mac) is None]


def unassign(store: Store, mac: str) -> SiteVersion:
    """Remove the device from the site and forget its provisioning credential."""
    version = _change_site(store, lambda source: unassign_phone(source, mac), f"unassign {colon_mac(mac)}")
    store.devices.forget(mac)
    return version


def _change_site(store: Store, change: Callable[[str], str], origin: str) -> SiteVersion:
    active = store.sites.active()
    if active is None:
        raise EditError("no site on this appliance yet: start the agent once, or push a site")
    source = change(active.source)
    parse_site(source, origin)
    return store.sites.apply(source, origin)
