"""The agent's management service: the CoAP resource tree (vaxelbox.mgmt) over UDP and TCP,
behind OSCORE, announced by mDNS on the LAN; and the backend that answers for the agent."""

import asyncio
import ipaddress
import platform
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiocoap
from aiocoap.credentials import CredentialsMap
from phoneprov.device import installer_mac, normalise_mac
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from vaxelbox import __version__
from vaxelbox.agent.logs import LogRing, audit, get_logger
from vaxelbox.inventory import (
    already_assigned,
    assign,
    device_rows,
    not_in_site,
    seen_device,
    site_vendor,
    unassign,
)
from vaxelbox.local.registrar import user_for_aor
from vaxelbox.mgmt.firmware import FirmwareUpdate, restart_soon
from vaxelbox.mgmt.oscore_site import OscoreOnDemand
from vaxelbox.mgmt.payload import Conflict, PayloadError, field
from vaxelbox.mgmt.resources import Snapshot, build_site
from vaxelbox.mgmt.security import Installers, PairingCredentials, PairingSecret, write_private
from vaxelbox.mgmt.udp_errors import attribute_udp_errors
from vaxelbox.site import Site, SiteError, parse_site
from vaxelbox.site.edit import EditError
from vaxelbox.site.fields import colon_mac
from vaxelbox.site.model import Vendor
from vaxelbox.store import SiteConflict, SiteVersion
from vaxelbox.store.devices import SeenDevice
from vaxelbox.update import open_slots
from vaxelbox.update.rauc import RaucSlots

if TYPE_CHECKING:
    from vaxelbox.agent.app import Agent

log = get_logger("vaxelbox.management")
SERVICE_TYPES = ("_coap._udp.local.", "_coap._tcp.local.")  # both are served
REFRESH_INTERVAL = 0.5  # how often observable resources are compared with their last state


def serial_number(directory: Path) -> str:
    """This appliance's serial: the device tree's on a board, else one made on first start."""
    for path in (Path("/proc/device-tree/serial-number"), directory / "serial"):
        try:
            serial = path.read_bytes().strip(b"\x00\n ").decode()
            if serial:
                return serial
        except OSError:
            continue
    serial = "VXB-" + secrets.token_hex(4).upper()
    write_private(directory / "serial", serial + "\n")
    return serial


def _wrong_code(peer: str, attempts: int) -> None:
    """Pairing attempts that did not decrypt: the installer typed the code wrong, or someone guesses."""
    audit("pair", "refused", None, None, reason="wrong pairing code", peer=peer, attempts=attempts)


class ManagementBackend:
    """Answers the resources (vaxelbox.mgmt.resources.Backend) from the running agent."""

    def __init__(self, agent: "Agent", directory: Path, log_ring: LogRing | None) -> None:
        self.agent = agent
        self.store = agent.store
        self.serial = serial_number(directory)
        self.pairing = PairingSecret(directory, _wrong_code)
        self.installers = Installers(directory / "installers")
        # The key is read when an upload starts, so one installed while the agent runs counts.
        key = agent.options.firmware_key or agent.options.data_dir / "firmware-signing.pub"
        board = agent.options.board
        firmware_dir = agent.options.data_dir / "firmware"
        slot_store = open_slots(board.update, firmware_dir) if board and board.update else None
        # RAUC's slots are root file systems: trying one means rebooting the board.
        restart = slot_store.restart if isinstance(slot_store, RaucSlots) else restart_soon
        self.firmware = FirmwareUpdate(
            firmware_dir,
            key,
            slot_store,
            board.name if board else None,
            restart,
        )
        self._log_ring = log_ring
        self._started = time.monotonic()

    def device(self, full: bool) -> dict[str, Any]:
        board = self.agent.options.board
        public = {
            "model": board.name if board else "development host",
            "serial": self.serial,
            "firmware": __version__,
        }
        if not full:
            return public
        return {
            **public,
            "board": board.description if board else platform.node(),
            "uptime": round(time.monotonic() - self._started),
            "kernel": platform.release(),
        }

    def status(self) -> dict[str, Any]:
        agent = self.agent
        site = agent.current_site()
        devices = self.store.devices.all()
        errors = [r for r in (self._log_ring.records if self._log_ring else []) if r.get("level") == "error"]
        mode = self.mode()
        board = agent.board_services
        return {
            "cloud": agent.health.state.value,
            "mode": mode["mode"],
            "mode_since": mode["since"],
            "mode_reason": mode["reason"],
            "back_online_at": mode["back_online_at"],  # the hold-down's end, while it runs
            "site_version": agent.active.version.number if agent.active else None,
            "site_warning": agent.site_warning(),
            "phones": {
                "in_site": len(site.phones),
                "seen": len(devices),
                "enrolled": sum(1 for d in devices if d.enrolled_at is not None),
            },
            "registrations": len(agent.edge.bindings) if agent.edge else 0,
            "calls": None,  # the relay keeps no call table yet
            "last_errors": [{"at": r.get("timestamp"), "event": r.get("event")} for r in errors[-5:]],
            # The appliance's footprint on the cloud (edge.upstream.Upstream.footprint), for support.
            "cloud_traffic": agent.edge.upstream.footprint() if agent.edge and agent.edge.upstream else None,
            # Overload control and the transaction ceiling (vaxelbox.sip.overload).
            "sip_load": agent.edge.transports.load() if agent.edge else None,
            "alarms": _auth_alarms(agent, site, devices) + (board.alarms() if board else []),
            # The companion microcontroller's link and telemetry (vaxelbox.hw.companion), or None.
            "companion": board.companion.status() if board and board.companion else None,
        }

    def site(self) -> dict[str, Any]:
        active = self.store.sites.active()
        assert active is not None, "the agent always has a site"
        return {**_version_row(active, active.number), "source": active.source}

    def put_site(self, source: str, if_match: list[bytes], who: str) -> dict[str, Any]:
        active = self.store.sites.active()
        expected = None
        if if_match:
            if active is None or not any(active.digest.startswith(tag.hex()) for tag in if_match):
                now = active.number if active else "-"
                raise Conflict(f"the site changed meanwhile (now version {now}): pull it again")
            expected = active.digest
        try:
            parse_site(source, "pushed site")
        except SiteError as exc:
            raise PayloadError(_problems(exc)) from None
        try:
            version = self.store.sites.apply(source, f"pushed by installer {who}", if_active=expected)
        except SiteConflict as exc:
            raise Conflict(f"{exc}: pull it again") from None
        self.agent.current_site(changed=True)  # activate now, not at the next phone request
        return _version_row(version, version.number)

    def site_versions(self) -> list[dict[str, Any]]:
        active = self.store.sites.active_number()
        return [_version_row(v, active) for v in self.store.sites.history()]

    def rollback(self, number: int, who: str) -> dict[str, Any]:
        old = self.store.sites.get(number)
        if old is None:
            raise PayloadError(
                f"no site version {number}; kept: {[v.number for v in self.store.sites.history()]}"
            )
        try:
            parse_site(old.source, f"site version {number}")
        except SiteError as exc:
            raise PayloadError(f"version {number} no longer validates: {exc}") from None
        version = self.store.sites.apply(old.source, f"rollback to {number} by installer {who}")
        self.agent.current_site(changed=True)
        return _version_row(version, version.number)

    def phones(self) -> list[dict[str, Any]]:
        return device_rows(self.store)

    def change_phones(self, request: dict[str, Any], who: str) -> dict[str, Any]:
        try:
            if "assign" in request:
                mac = _mac(field(request, "assign", str))
                users = field(request, "users", list)
                if not users or not all(isinstance(u, str) for u in users):
                    raise PayloadError("users must be a non-empty list of user ids")
                dect = bool(field(request, "dect", bool, required=False))
                vendor = _vendor(field(request, "vendor", str, required=False))
                unchanged = already_assigned(self.store, mac, users, dect, vendor)
                if unchanged is not None:  # again: an identical site version would be noise
                    return self._phone_row(mac, unchanged, changed=False)
                version = assign(self.store, mac, users, dect, vendor)
            elif "unassign" in request:
                mac = _mac(field(request, "unassign", str))
                version = unassign(self.store, mac)
            else:
                raise PayloadError("send {assign: MAC, users: [...]} or {unassign: MAC}")
        except EditError as exc:
            raise PayloadError(str(exc)) from None
        except SiteError as exc:
            raise PayloadError(_problems(exc)) from None
        self.agent.current_site(changed=True)
        log.info("phones changed", installer=who, mac=colon_mac(mac), site_version=version.number)
        return self._phone_row(mac, version, changed=True)

    def _phone_row(self, mac: str, version: SiteVersion, changed: bool) -> dict[str, Any]:
        vendor = site_vendor(self.store, mac)
        # Seen, yet neither evidence nor the installer named its vendor: it gets no file.
        unknown = vendor is None and seen_device(self.store, mac) is not None
        return {
            "mac": colon_mac(mac),
            "site_version": version.number,
            "enrolled": self.store.devices.enrolled(mac) is not None,
            # The end of an enrolment window open for it now (s since the epoch), or None.
            "enrolment_until": self.store.devices.open_until(mac, time.time()),
            "changed": changed,  # False: it was assigned so already; no new site version
            "vendor": vendor,  # the site's word; None until the device or the installer says
            "vendor_unknown": unknown,
            # What --vendor accepts, whenever nobody named the vendor (seen or not): the installer may.
            "vendors": [v.value for v in Vendor] if vendor is None else [],
        }

    def enrolment(self) -> dict[str, Any]:
        window = self.store.devices.enrolment()
        is_open = window is not None and window.until > time.time()
        return {
            "open": is_open,
            "until": window.until if window and is_open else None,
            "macs": sorted(colon_mac(m) for m in window.macs) if window and window.macs else None,
        }

    def change_enrolment(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("close"):
            self.store.devices.close_enrolment()
        else:
            minutes = field(request, "open", int | float)  # type: ignore[arg-type]
            if not 1 <= minutes <= 24 * 60:
                raise PayloadError("open: minutes between 1 and 1440")
            macs = field(request, "macs", list, required=False)
            named = [_mac(m) for m in macs] if macs else None
            if stray := not_in_site(self.store, named or []):
                raise PayloadError(
                    f"{', '.join(colon_mac(m) for m in stray)}: not assigned in the site, so no "
                    f"enrolment window may name it; assign it first (vaxelctl phones assign MAC USER)"
                )
            before = self.enrolment()
            self.store.devices.open_enrolment(minutes, named)
            if before["open"]:  # it widened that window (the client says so)
                return {**self.enrolment(), "widened": {"macs": before["macs"], "until": before["until"]}}
        return self.enrolment()

    def registrations(self) -> list[dict[str, Any]]:
        edge = self.agent.edge
        if edge is None:
            return []
        return [
            {
                "aor": b.aor,
                "contact": b.contact,
                "transport": b.transport,
                "remote": f"{b.remote[0]}:{b.remote[1]}",
                "expires_in": b.expires_in(),
                "user_agent": b.user_agent,
            }
            for b in edge.bindings.all()
        ]

    def calls(self) -> dict[str, Any]:
        edge = self.agent.edge
        rows = edge.relay.call_table.rows() if edge is not None and edge.relay is not None else []
        return {"calls": rows, "available": True, "mode": self.mode()["mode"]}

    def journal(self) -> list[dict[str, Any]]:
        """What users changed by star code while local, with each entry's replay state."""
        return [entry.row() for entry in self.store.journal.entries()]

    def presence(self) -> dict[str, Any]:
        """Every user's line (idle, ringing, busy), activity and its end, watchers, upstream state."""
        presence = self.agent.presence
        if presence is None:
            return {"presence": [], "available": False, "reason": "the SIP edge has not started"}
        return {"presence": presence.rows(), "available": True, "mode": self.mode()["mode"]}

    def log(self) -> list[dict[str, Any]]:
        return list(self._log_ring.records)[-100:] if self._log_ring else []

    def mode(self) -> dict[str, Any]:
        """The operating mode (online/local), since when and why, and the override ("auto"/"local")."""
        local = self.agent.local
        assert local is not None, "the agent runs the edge before management"
        status = local.status()
        return {
            **status,
            "override": "local" if status["forced"] else "auto",
            "cloud": self.agent.health.state.value,
        }

    def set_mode(self, mode: str, who: str) -> dict[str, Any]:
        local = self.agent.local
        assert local is not None, "the agent runs the edge before management"
        local.force(mode == "local")
        return self.mode()


def _auth_alarms(agent: "Agent", site: Site, devices: list[SeenDevice]) -> list[dict[str, Any]]:
    """The phones the auth guard holds (edge.auth_guard.AuthGuard.alarms), each with its user (the
    site user of its AoR, else the digest username) and its MAC when provisioning saw one phone at its
    IP (or several, one of them assigned to that user): null when provisioning cannot tell."""
    if agent.edge is None or agent.edge.relay is None:
        return []
    alarms = []
    for alarm in agent.edge.relay.auth_guard.alarms():
        user = user_for_aor(site, alarm["aor"])
        ip = alarm["phone"].rsplit(":", 1)[0]
        macs = {d.mac for d in devices if d.ip == ip}
        if len(macs) > 1 and user is not None:
            macs &= {normalise_mac(p.mac) for p in site.phones if user.id in (*p.lines, *p.handsets)}
        mac = colon_mac(macs.pop()) if len(macs) == 1 else None
        alarms.append({**alarm, "user": user.id if user else alarm["username"], "mac": mac})
    return alarms


def _version_row(version: SiteVersion, active: int | None) -> dict[str, Any]:
    return {
        "version": version.number,
        "digest": version.digest,
        "origin": version.origin,
        "created": version.created_at,
        "active": version.number == active,
    }


def _problems(exc: SiteError) -> str:
    return "\n".join(str(p) for p in exc.problems) or str(exc)


def _mac(text: str) -> str:
    try:
        return installer_mac(text)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None


def _vendor(name: str | None) -> str | None:
    """The site's id of the vendor the installer named (any case), or a 4.00 naming the choices."""
    if name is None:
        return None
    choices = [v.value for v in Vendor]
    if name.strip().lower() not in choices:
        raise PayloadError(f"unknown vendor {name!r}: choose one of {', '.join(choices)}")
    return name.strip().lower()


class Management:
    """The CoAP server (UDP and TCP on the LAN address), its mDNS announcement, and observers."""

    def __init__(self, agent: "Agent", log_ring: LogRing | None) -> None:
        self.agent = agent
        self.directory = agent.options.data_dir / "mgmt"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.backend = ManagementBackend(agent, self.directory, log_ring)
        self._context: aiocoap.Context | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._snapshots: list[Snapshot] = []

    @property
    def listening(self) -> list[str]:
        if self._context is None:
            return []
        host, port = self.agent.options.lan.host, self.agent.options.coap_port
        return [f"management coap {host}:{port}", f"management coap+tcp {host}:{port}"]

    async def start(self) -> None:
        site, self._snapshots = build_site(self.backend)
        credentials = CredentialsMap()
        credentials[":pairing"] = PairingCredentials(self.backend.pairing)
        credentials[":installers"] = self.backend.installers
        self._context = await aiocoap.Context.create_server_context(
            OscoreOnDemand(site, credentials),  # the OSCORE stack loads with the first protected request
            bind=(self.agent.options.lan.host, self.agent.options.coap_port),
            transports=["udp6", "tcpserver"],
        )
        attribute_udp_errors(self._context)  # a watcher gone away must not end another's exchange
        await self._announce()

    def push(self, *names: str) -> None:
        """Tell the observers of these resources now, on an event (a mode or cloud change), rather
        than at the next poll (aiocoap's `updated_state()` push)."""
        for snapshot in self._snapshots:
            if snapshot.rt.rsplit(".", 1)[-1] in names:
                snapshot.changed()

    async def refresh(self) -> None:
        """Tell observers of every resource that changed (a service the supervisor runs)."""
        while True:
            for snapshot in self._snapshots:
                snapshot.changed()
            await asyncio.sleep(REFRESH_INTERVAL)

    async def stop(self) -> None:
        if self._zeroconf is not None:
            await self._zeroconf.async_unregister_all_services()
            await self._zeroconf.async_close()
        if self._context is not None:
            await self._context.shutdown()
        self.backend.installers.close()

    async def _announce(self) -> None:
        """`_coap._udp` and `_coap._tcp` on the LAN address only, TXT: rt, model, serial, firmware."""
        host = self.agent.options.lan.host
        if ipaddress.ip_address(host).is_loopback:
            log.info("mDNS off", reason="the LAN address is loopback: no laptop can discover it there")
            return
        device = self.backend.device(full=False)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._zeroconf = AsyncZeroconf(
            interfaces=[host], ip_version=IPVersion.V6Only if ":" in host else IPVersion.V4Only
        )
        for service_type in SERVICE_TYPES:
            info = ServiceInfo(
                service_type,
                f"Vaxelbox {device['serial']}.{service_type}",
                addresses=[socket.inet_pton(family, host)],
                port=self.agent.options.coap_port,
                properties={"rt": "vaxelbox.dev", **{k: str(v) for k, v in device.items()}},
                server=f"vaxelbox-{device['serial'].lower()}.local.",
            )
            await self._zeroconf.async_register_service(info)
            log.info("mDNS announced", service=info.name, address=host)
