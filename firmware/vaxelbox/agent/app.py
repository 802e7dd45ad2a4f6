"""The agent: loads the site, keeps it in the store, runs the services, obeys signals.

Site rules: the store is the one source of truth. `--site FILE` seeds it at
start and on SIGHUP, but only when the file's text changed since it was last
applied, so an edit made on the appliance (vaxelctl site push, phones assign,
rollback) survives restarts and reloads; a changed file that overwrites such an
edit is applied with a warning, in the log and in `vaxelctl status`, that names
both versions (the edit stays in the history for `site rollback`). A file that
fails validation is refused with every problem logged and the running (or
stored) site stays. Without `--site`, the stored active site runs, or the demo
site on a fresh data directory.
"""

import asyncio
import gc
import signal
import ssl
import time
from dataclasses import dataclass

from phoneprov.pki import PkiError

from vaxelbox import __version__
from vaxelbox.agent.console import (
    Ready,
    cannot_listen,
    management_ports,
    provisioning_ports,
    ready_summary,
    sip_ports,
)
from vaxelbox.agent.factory_reset import KEPT, WipeError, watch_requests, wipe
from vaxelbox.agent.local_mode import LocalMode
from vaxelbox.agent.logs import LogRing, Redactor, audit, get_logger, terminal
from vaxelbox.agent.management import Management
from vaxelbox.agent.options import RunOptions
from vaxelbox.agent.provisioning import Provisioning, site_identity
from vaxelbox.agent.sdnotify import SystemdNotifier
from vaxelbox.agent.supervisor import Supervisor
from vaxelbox.edge.health import Change, CloudHealth, CloudProber
from vaxelbox.edge.service import Edge, EdgeSettings, phone_tls_context
from vaxelbox.hw.board_services import BoardServices
from vaxelbox.mgmt.firmware import restart_soon
from vaxelbox.presence.server import PresenceServer
from vaxelbox.problems import read_config
from vaxelbox.routing.mode import ModeChange
from vaxelbox.sip.overload import transactions_for_ram
from vaxelbox.sip.transport import Limits
from vaxelbox.site import Site, SiteError, demo_site_text, parse_site
from vaxelbox.site.mark import without_mark
from vaxelbox.store import SiteVersion, Store, StoreError
from vaxelbox.store.sites import digest_of
from vaxelbox.update.trial import watch_deadline

log = get_logger("vaxelbox.agent")
SITE_RECHECK = 1.0  # s: how stale the active site may be when the store's stamp missed a change
STAMP_INTERVAL = 0.05  # s: how often current_site looks at the store's stamp at most


class StartupError(RuntimeError):
    """The agent cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ActiveSite:
    site: Site
    version: SiteVersion


class Agent:
    def __init__(
        self,
        options: RunOptions,
        redactor: Redactor,
        notifier: SystemdNotifier | None = None,
        log_ring: LogRing | None = None,
    ) -> None:
        self.options = options
        self.log_ring = log_ring
        self.redactor = redactor
        self.notifier = notifier or SystemdNotifier()
        self.supervisor = Supervisor()
        self.active: ActiveSite | None = None
        self._site_stamp: tuple[int, ...] = ()  # current_site's last stamp of the store, and its second
        self._site_looked = 0.0  # when current_site last took it (monotonic s)
        self.edge: Edge | None = None
        self.provisioning: Provisioning | None = None
        self.management: Management | None = None
        self.local: LocalMode | None = None
        self.presence: PresenceServer | None = None
        self.health = CloudHealth()
        self.board_services: BoardServices | None = None  # companion MCU, /dev/watchdog
        self._store: Store | None = None
        self._stopping = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._signal_tasks: set[asyncio.Task[bool]] = set()
        self.factory_reset_by: str | None = None  # who asked for the reset this run ends in
        self.factory_reset_done = False  # state wiped: `vaxelbox run` starts a fresh agent

    @property
    def store(self) -> Store:
        assert self._store, "the agent has not started"
        return self._store

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT. Raises StartupError if it cannot start."""
        try:
            self._store = await asyncio.to_thread(Store, self.options.data_dir)
        except StoreError as exc:
            raise StartupError(f"cannot open the data directory: {exc}") from None
        try:
            self._activate(await self._initial_site())
            await self._start_edge()
            await self._start_provisioning()
            # Before management answers anything: a status asked while it starts (it awaits mDNS)
            # must already show the board's companion. The supervisor starts them all below.
            self._add_services()
            await self._start_management()
            tune_garbage_collector()
            self.supervisor.start()
            self._install_signal_handlers()
            self._announce()
            await self._stopping.wait()
            if self.factory_reset_by is None:
                self.notifier.notify(STOPPING=1, STATUS="stopping")
            else:  # this process goes on: a fresh agent follows (systemd: reloading, then READY)
                self.notifier.reloading()
                self.notifier.notify(STATUS="factory reset")
            log.info("agent stopping")
            await self.supervisor.stop()
        finally:
            if self.management is not None:
                await self.management.stop()
            if self.provisioning is not None:
                await self.provisioning.stop()
            if self.edge is not None:
                await self.edge.stop()
            await asyncio.to_thread(self.store.close)
        log.info("agent stopped")
        if self.factory_reset_by is not None:
            await asyncio.to_thread(self._wipe, self.factory_reset_by)

    def stop(self) -> None:
        self._stopping.set()

    def factory_reset(self, origin: str) -> None:
        """Wipe this appliance's state and start again as a fresh box: the companion's long press and
        `vaxelbox factory-reset` (`origin` says which, for the log and the audit). The services stop,
        the store closes, the state goes (vaxelbox.agent.factory_reset: serial and pairing code stay)
        and `vaxelbox run` starts a new agent, which applies its --site as on a fresh box."""
        if self.factory_reset_by is None:
            log.warning("factory reset: stopping to wipe the state", by=origin)
            audit("factory-reset", "ok", None, origin, stage="requested")
            self.factory_reset_by = origin
        self.stop()

    def _wipe(self, origin: str) -> None:
        """After the store closed: remove the state, log and audit the outcome (the audit line goes to
        the log, which the wipe does not touch). A partial wipe is audited as failed; the agent still
        starts again, on what is left."""
        data_dir = self.options.data_dir
        try:
            removed = wipe(data_dir)
        except WipeError as exc:
            log.error(
                "factory reset incomplete", data_dir=str(data_dir), removed=exc.removed, reason=str(exc)
            )
            audit(
                "factory-reset", "failed", None, origin, stage="wiped", removed=exc.removed, reason=str(exc)
            )
        else:
            log.warning("factory reset done", data_dir=str(data_dir), removed=removed, kept=list(KEPT))
            audit("factory-reset", "ok", None, origin, stage="wiped", removed=removed, kept=list(KEPT))
        self.factory_reset_done = True

    async def reload(self) -> bool:
        """Apply the site file again (SIGHUP). A bad file is refused and the running site stays."""
        if self.options.site_file is None:
            log.warning("reload: no site file to read (started without --site)")
            return False
        async with self._reloading:
            self.notifier.reloading()
            try:
                self._activate(await self._apply_file())
                return True
            except SiteError as exc:
                self._log_refusal(exc)
                return False
            finally:
                self.notifier.notify(READY=1, STATUS=self._status())

    async def _initial_site(self) -> ActiveSite:
        stored = await asyncio.to_thread(self.store.sites.active)
        if self.options.site_file is not None:
            try:
                return await self._apply_file()
            except SiteError as exc:
                self._log_refusal(exc)
                if stored is None:
                    raise StartupError(f"{exc}\nno stored site to fall back to; fix the file") from None
        if stored is not None:
            try:
                return ActiveSite(parse_site(stored.source, f"stored site version {stored.number}"), stored)
            except SiteError as exc:  # e.g. stricter validation after a software update
                self._log_refusal(exc)
                raise StartupError(f"{exc}\nthe stored site no longer validates; start with --site") from None
        text = demo_site_text()
        version = await asyncio.to_thread(self.store.sites.apply, text, "demo site")
        return ActiveSite(parse_site(text, "demo site"), version)

    async def _apply_file(self) -> ActiveSite:
        """Validate the site file, then seed the store with it if it changed since it was last applied.
        Returns the site that is active afterwards. Raises SiteError."""
        path = self.options.site_file
        assert path is not None
        # Without vaxelctl's pull mark, so a pulled file is the same text as the version it came from.
        source = without_mark(await asyncio.to_thread(read_config, path, SiteError))
        site = parse_site(source, str(path))
        applied = await asyncio.to_thread(self.store.sites.apply_file, source, self._site_file_key())
        active, applied_digest = applied.active, digest_of(source)
        if applied.replaced is not None:
            log.warning(
                "site file replaced an edit made on the appliance",
                file=str(path),
                version=active.number,
                replaced_version=applied.replaced.number,
                replaced_origin=applied.replaced.origin,
                hint=f"vaxelctl site rollback {applied.replaced.number} brings the edit back",
            )
        elif not applied.changed and active.digest != applied_digest:
            log.info(
                "site file unchanged since it was applied; the newer version made on the appliance stays",
                file=str(path),
                running_version=active.number,
                origin=active.origin,
            )
        if active.digest == applied_digest:
            return ActiveSite(site, active)
        return ActiveSite(parse_site(active.source, f"stored site version {active.number}"), active)

    def _site_file_key(self) -> str:
        assert self.options.site_file is not None
        return str(self.options.site_file.absolute())

    def site_warning(self) -> str | None:
        """The warning to show while a site file's text overwrote an edit made on the appliance, naming
        both versions; None otherwise. Reads the store (so it survives a restart)."""
        if self.options.site_file is None or self.active is None:
            return None
        record = self.store.sites.file_record(self._site_file_key())
        if record is None or record.replaced is None or record.version != self.active.version.number:
            return None
        replaced = self.store.sites.get(record.replaced)
        origin = f" ({replaced.origin})" if replaced else ""
        return (
            f"site file {self.options.site_file} was applied as version {record.version} over version "
            f"{record.replaced}{origin}, made on the appliance; `vaxelctl site rollback {record.replaced}` "
            "brings that edit back"
        )

    def _activate(self, active: ActiveSite) -> None:
        # Secrets first: nothing about the new site may be logged before they are known.
        self.redactor.set_secrets(active.site.secrets())
        previous = self.active
        self.active = active
        if previous is None or previous.version.number != active.version.number:
            log.info(
                "site active",
                site=active.site.site.name,
                version=active.version.number,
                origin=active.version.origin,
                contents=active.site.summary(),
            )

    def _log_refusal(self, exc: SiteError) -> None:
        for problem in exc.problems:
            log.error("site refused", file=exc.source, problem=str(problem))
        running = self.active.version.number if self.active else None
        log.error("site file refused; the running site stays", file=exc.source, running_version=running)

    async def _start_edge(self) -> None:
        """Bind the SIP sockets before READY, so READY means the phones can be served."""
        assert self.active
        options = self.options
        try:
            identity = await asyncio.to_thread(site_identity, options)  # RSA keys the first time: ~0.1 s
        except PkiError as exc:  # e.g. an unreadable site CA: its message names the file and the way out
            raise StartupError(str(exc)) from None
        settings = EdgeSettings(
            lan=(options.lan.host, options.lan.port),
            wan=(options.wan.host, options.wan.port),
            proxies=cloud_proxies(self.active.site, options.cloud_override),
            tls=ssl.create_default_context(),
            limits=Limits(
                rate=options.rate_limit,
                burst=2 * options.rate_limit,
                max_transactions=transactions_for_ram(options.board.ram_mb if options.board else 1024),
            ),
            lan_tls=phone_tls_context(identity.certificate, identity.key),
            lan_tls_port=options.lan_tls.port,
        )
        edge = Edge(settings, self.store)
        try:
            await edge.start()
        except OSError as exc:
            await edge.stop()
            later = provisioning_ports(options) + management_ports(options)  # not bound yet: may be busy too
            raise StartupError(cannot_listen("SIP", sip_ports(options), exc, options, later)) from None
        assert edge.relay is not None
        assert edge.upstream is not None
        self.edge = edge
        self.health.subscribe(self._cloud_changed)
        edge.relay.on_cloud_signal = self._cloud_signal  # also told when the cloud's pongs stop
        prober = CloudProber(
            edge.stack, edge.upstream, self.health, edge.addresses.wan, self.active.site.cloud.probe_interval
        )
        self.supervisor.add("sip-edge", edge.maintain).listening = edge.listening
        self.supervisor.add("cloud-prober", prober.run)
        self.local = LocalMode(self.store, self.health, self.current_site, edge)
        edge.relay.is_trunk = self.local.is_trunk
        edge.relay.auth_guard.provisioned = lambda ip: max(  # a held phone re-provisioned is let through
            (d.last_seen for d in self.store.devices.all() if d.ip == ip), default=None
        )
        self.local.observers.append(self._mode_changed)
        await self.local.prepare_trunk(self.active.site)
        self.supervisor.add("local-mode", self.local.run)
        self._start_presence(edge)

    def _start_presence(self, edge: Edge) -> None:
        """The phones' presence server (busy lamps), in the relay's chain in both modes."""
        relay, local = edge.relay, self.local
        assert relay is not None
        assert edge.upstream is not None
        assert local is not None
        presence = PresenceServer(
            edge.stack, relay.addresses, relay.flow_of, edge.upstream, edge.bindings, self.current_site,
            local.auth, self.store.users, self.store.watches,
        )  # fmt: skip
        presence.mode = local.mode
        relay.services.append(presence)
        relay.observers.append(presence.office)
        local.observers.append(lambda change: presence.mode_changed(change.new))
        restored = presence.restore()
        if restored:
            log.info("presence subscriptions restored", watchers=restored)
        self.presence = presence
        self.supervisor.add("presence", presence.run)

    async def _start_provisioning(self) -> None:
        provisioning = Provisioning(self.options, self.store, self.current_site)
        try:
            await provisioning.start()
        except OSError as exc:
            await provisioning.stop()
            ports, later = provisioning_ports(self.options), management_ports(self.options)
            raise StartupError(cannot_listen("provisioning", ports, exc, self.options, later)) from None
        self.provisioning = provisioning

    async def _start_management(self) -> None:
        management = Management(self, self.log_ring)
        try:
            await management.start()
        except OSError as exc:
            await management.stop()
            ports = management_ports(self.options)
            raise StartupError(cannot_listen("management (CoAP)", ports, exc, self.options)) from None
        self.management = management
        self.supervisor.add("management-observers", management.refresh)
        if (slot_store := management.backend.firmware.slot_store) is not None:  # a trial's own deadline
            self.supervisor.add("firmware-trial", lambda: watch_deadline(slot_store, restart_soon))

    def current_site(self, changed: bool = False) -> Site:
        """The active site, following the store, which another process may change (`vaxelbox phones
        assign`). Asked on every SIP request, so the rule is: take the store's stamp (a stat of its
        files) at most every STAMP_INTERVAL (50 ms); query the store only when the stamp differs
        from the last one, and the stamp includes which SITE_RECHECK period (1 s) of the clock it
        was taken in, so a change the coarse stamp missed is read within a period too. `changed=True`
        (management just changed the site) stats and queries at once. A query waits for the
        store's lock, which a flush holds over an fsync. Called from worker threads: plain
        attribute swaps are atomic."""
        assert self.active
        now = time.monotonic()
        if not changed and now - self._site_looked < STAMP_INTERVAL:
            return self.active.site  # a burst of calls stats the store once
        self._site_looked, stamp = now, (*self.store.stamp(), int(now // SITE_RECHECK))
        if not changed and stamp == self._site_stamp:
            return self.active.site
        self._site_stamp = stamp
        number = self.store.sites.active_number()
        if number is not None and number != self.active.version.number:
            stored = self.store.sites.get(number)
            if stored is not None:
                try:
                    self._activate(ActiveSite(parse_site(stored.source, f"site version {number}"), stored))
                except SiteError as exc:
                    self._log_refusal(exc)
        return self.active.site

    def _cloud_signal(self, answered: bool) -> None:
        if answered:
            self.health.success(reason="relayed request answered")
        else:
            self.health.failure(reason="relayed request unanswered")

    def _cloud_changed(self, change: Change) -> None:
        log.info("cloud state", old=change.old.value, new=change.new.value, reason=change.reason)
        self.notifier.notify(STATUS=self._status())
        if self.management is not None:
            self.management.push("status", "mode")
        if self.board_services is not None:
            self.board_services.state_changed()

    def _mode_changed(self, change: ModeChange) -> None:
        self.notifier.notify(STATUS=self._status())
        if self.management is not None:
            self.management.push("status", "mode")
        if self.board_services is not None:
            self.board_services.state_changed()

    def _add_services(self) -> None:
        data_dir = self.options.data_dir  # `vaxelbox factory-reset` asks through a file there
        self.supervisor.add("factory-reset-requests", lambda: watch_requests(data_dir, self.factory_reset))
        if self.options.board is not None:
            self.board_services = BoardServices(self, self.options.board)
            self.board_services.add_to(self.supervisor)
        interval = self.notifier.watchdog_interval()
        if interval:
            self.supervisor.add("systemd-watchdog", lambda: self._ping_systemd(interval))

    async def _ping_systemd(self, interval: float) -> None:
        # The ping runs on the event loop, so a blocked loop misses it and systemd restarts us.
        while True:
            self.notifier.notify(WATCHDOG=1)
            await asyncio.sleep(interval)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)

    def _reload_in_background(self) -> None:
        task = asyncio.create_task(self.reload())
        self._signal_tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._signal_tasks.discard)

    def _announce(self) -> None:
        assert self.active
        site, options = self.active.site, self.options
        cloud = options.cloud_override or ", ".join(site.cloud.proxies)
        listening = [address for s in self.supervisor.services.values() for address in s.listening]
        if self.provisioning is not None:
            listening += self.provisioning.listening
        if self.management is not None:
            listening += self.management.listening
        log.info(
            "agent ready",
            version=__version__,
            board=options.board.name if options.board else "none (development host)",
            data_dir=str(options.data_dir),
            lan=str(options.lan),
            wan=str(options.wan),
            cloud=cloud,
            listening=listening,
            cloud_state=self.health.state.value,
        )
        self.notifier.notify(READY=1, STATUS=self._status())
        if self.management is not None:
            self.management.backend.firmware.healthy()  # a version on trial proved itself: commit it
        if (screen := terminal()) is not None:
            screen.write(ready_summary(self._ready()))
            screen.flush()

    def _ready(self) -> Ready:
        """What the summary on a terminal reports (see vaxelbox.agent.console)."""
        assert self.active
        options, health = self.options, self.health
        probed = health.last_success is not None or health.last_failure is not None
        return Ready(
            version=__version__,
            site=self.active.site.site.name,
            site_version=self.active.version.number,
            options=options,
            cloud=cloud_proxies(self.active.site, options.cloud_override),
            cloud_state=health.state.value if probed else "probing",
            pairing_code=self.management.backend.pairing.code
            if self.management and not options.board
            else None,
        )

    def _status(self) -> str:
        if self.active is None:
            return "no site"
        site = f"site {self.active.site.site.name!r} version {self.active.version.number}"
        mode = f", mode {self.local.mode.value}" if self.local is not None else ""
        return f"{site}, cloud {self.health.state.value}{mode}"


def cloud_proxies(site: Site, override: str | None) -> list[str]:
    """The cloud's proxy URIs in order: the --cloud override alone, or the site's list."""
    return [override] if override else list(site.cloud.proxies)


def tune_garbage_collector() -> None:
    """Fewer, shorter collector pauses under SIP load: what is loaded at start never dies, so it
    leaves the collector's view (gc.freeze); messages and transactions are short-lived, so the
    young generation may grow larger before each pass."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
