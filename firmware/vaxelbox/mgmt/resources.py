"""The management resource tree (`vaxelbox.mgmt`): thin CoAP resources over the agent's state.

Every resource except /.well-known/core and the public part of /dev checks
the caller's OSCORE claims first (aiocoap's OscoreSiteWrapper only reports
them) and answers 4.01 otherwise. /pair accepts only a bootstrap (pairing)
context, and nothing else accepts one. Every request that changes something
leaves one `audit` log line (who, what, result) through `Audit`.
"""

import gc
import weakref
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from aiocoap import CHANGED, CREATED, DELETED, Code, Message, resource
from aiocoap.numbers import ContentFormat
from aiocoap.pipe import Pipe
from vaxelbox.agent.logs import audit, get_logger
from vaxelbox.bundle import BundleError
from vaxelbox.mgmt.firmware import BundleMismatch, FirmwareUpdate, UpdateRefused
from vaxelbox.mgmt.payload import Conflict, PayloadError, decode, field, reply
from vaxelbox.mgmt.security import INSTALLER_CLAIM_PREFIX, PAIRING_CLAIM, Installers, PairingSecret

RT_PREFIX = "vaxelbox."
log = get_logger("vaxelbox.mgmt")


class Backend(Protocol):
    """What the agent offers the resources (firmware/vaxelbox/agent/management.py)."""

    installers: Installers
    pairing: PairingSecret
    firmware: FirmwareUpdate

    def device(self, full: bool) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def site(self) -> dict[str, Any]: ...
    def put_site(self, source: str, if_match: list[bytes], who: str) -> dict[str, Any]: ...
    def site_versions(self) -> list[dict[str, Any]]: ...
    def rollback(self, number: int, who: str) -> dict[str, Any]: ...
    def phones(self) -> list[dict[str, Any]]: ...
    def change_phones(self, request: dict[str, Any], who: str) -> dict[str, Any]: ...
    def enrolment(self) -> dict[str, Any]: ...
    def change_enrolment(self, request: dict[str, Any]) -> dict[str, Any]: ...
    def registrations(self) -> list[dict[str, Any]]: ...
    def calls(self) -> dict[str, Any]: ...
    def journal(self) -> list[dict[str, Any]]: ...
    def presence(self) -> dict[str, Any]: ...
    def log(self) -> list[dict[str, Any]]: ...
    def mode(self) -> dict[str, Any]: ...
    def set_mode(self, mode: str, who: str) -> dict[str, Any]: ...


def local_time(epoch: float | None) -> str | None:
    """An epoch as a log line shows it: ISO 8601 in the appliance's local time, with its offset."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def claims_of(request: Message) -> list[str]:
    remote = request.remote
    return list(getattr(remote, "authenticated_claims", None) or [])


def installer_of(request: Message) -> str | None:
    """The installer whose OSCORE context protected the request, or None."""
    for claim in claims_of(request):
        if claim.startswith(INSTALLER_CLAIM_PREFIX):
            return claim.removeprefix(INSTALLER_CLAIM_PREFIX)
    return None


class Audit:
    """One management action's audit line, written when the `with` block ends: "ok", or the
    refusal (a PayloadError's reason; "conflict" for 4.12), or "failed" for anything else.

    `what` adds details (never a secret); `refused` records a refusal answered with a response
    rather than an exception; `quiet` drops the line if the action ends well (a block of an
    upload that is not its last)."""

    def __init__(self, backend: "Backend", request: Message, action: str, **details: Any) -> None:
        self.action = action
        self.installer = installer_of(request)
        self._installers = backend.installers
        self._name: str | None = None  # looked up once, when needed (not at every upload block)
        self._details = details
        self._refusal: str | None = None
        self._quiet = False

    def what(self, action: str | None = None, **details: Any) -> None:
        self.action = action or self.action
        self._details.update(details)

    def refused(self, reason: str) -> None:
        self._refusal = reason

    def quiet(self) -> None:
        self._quiet = True

    def by(self, installer: str) -> None:
        """The installer acting, when no installer context protected the request (pairing)."""
        self.installer, self._name = installer, None

    def name(self) -> str | None:
        """The acting installer's name, looked up now and kept: call it before an action that
        removes the installer (revoking yourself), so the line still says who it was."""
        if self._name is None:
            self._name = next((i.name for i in self._installers.all() if i.id == self.installer), None)
        return self._name

    def __enter__(self) -> "Audit":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if exc is None and self._refusal is None:
            if not self._quiet:
                self._write("ok")
        elif exc is None:
            self._write("refused", reason=self._refusal)
        elif isinstance(exc, PayloadError):
            self._write("conflict" if isinstance(exc, Conflict) else "refused", reason=str(exc))
        elif isinstance(exc, Exception):
            self._write("failed", reason=f"{type(exc).__name__}: {exc}")

    def _write(self, result: str, **details: Any) -> None:
        audit(self.action, result, self.installer, self.name(), **self._details, **details)


class Guarded:
    """Mixin: refuse (4.01, before any state is touched) a caller without an installer context."""

    def allowed(self, request: Message) -> bool:
        return installer_of(request) is not None

    async def render_to_pipe(self, pipe: Pipe) -> None:
        if not self.allowed(pipe.request):
            pipe.add_response(
                Message(
                    code=Code.UNAUTHORIZED,
                    payload=b"not paired with this appliance: run vaxelctl pair",
                    content_format=ContentFormat.TEXT,
                ),
                is_last=True,
            )
            return
        await super().render_to_pipe(pipe)  # type: ignore[misc]


class Snapshot(Guarded, resource.ObservableResource):
    """A read-only view; observers hear of every change (the service polls `changed`).

    A watcher that goes away (Ctrl-C sends nothing) is dropped by aiocoap when a notification to
    it fails (ICMP port unreachable, vaxelbox.mgmt.udp_errors): its render task is cancelled, the
    count here drops, and later changes render nothing for it. Only a debug line says so."""

    def __init__(self, rt: str, read: Callable[[], Any]) -> None:
        super().__init__()
        self.rt = RT_PREFIX + rt
        self.if_ = "core.s"
        self._read = read
        self._last: Any = None
        self.watchers = 0  # observations aiocoap holds for this resource
        # Whose each observation is (its installer), so a revoked installer's watch can be ended.
        self._observers: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()

    async def add_observation(self, request: Message, serverobservation: Any) -> None:
        await super().add_observation(request, serverobservation)
        self._observers[serverobservation] = installer_of(request)

    def revoked(self, installer: str) -> None:
        """End `installer`'s watches: their last notification is a 4.01 (RFC 7641 §3.2: an error
        response ends an observation). It went on hearing every change after its revocation."""
        for observation, who in list(self._observers.items()):
            if who == installer:
                observation.trigger(Message(code=Code.UNAUTHORIZED, payload=b"installer revoked"))
                del self._observers[observation]

    def update_observation_count(self, newcount: int) -> None:
        """aiocoap's hook, called when a watcher comes or goes."""
        self.watchers = newcount
        log.debug("coap watchers", resource=self.rt, watchers=newcount)

    def changed(self) -> None:
        if not self.watchers:
            return  # nobody is watching: no need to read the state
        current = self._read()
        if current != self._last:
            self._last = current
            self.updated_state()

    async def render_get(self, request: Message) -> Message:
        self._last = self._read()
        return reply(request, self._last)


class Device(resource.Resource):
    """/dev: who this is. Anyone may read the public part (discovery); installers get all of it."""

    rt = RT_PREFIX + "dev"
    if_ = "core.rp"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_get(self, request: Message) -> Message:
        return reply(request, self._backend.device(full=installer_of(request) is not None))


class Site(Guarded, resource.Resource):
    """/site: the site text (TOML). GET gives its ETag; PUT with If-Match replaces it (4.12 on conflict)."""

    rt = RT_PREFIX + "site"
    if_ = "core.p"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return True  # site files are small; let aiocoap reassemble them

    async def render_get(self, request: Message) -> Message:
        site = self._backend.site()
        return reply(request, site, etag=bytes.fromhex(site["digest"])[:8])

    async def render_put(self, request: Message) -> Message:
        with Audit(self._backend, request, "site-push") as audit:
            if request.opt.content_format not in (None, ContentFormat.TEXT):
                raise PayloadError("PUT the site as text/plain (the TOML file itself)")
            try:
                source = request.payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PayloadError(f"the site file is not UTF-8: {exc}") from None
            applied = self._backend.put_site(source, list(request.opt.if_match), installer_of(request) or "")
            audit.what(site_version=applied["version"])
            return reply(request, applied, code=CHANGED, etag=bytes.fromhex(applied["digest"])[:8])


class SiteVersions(Guarded, resource.Resource):
    rt = RT_PREFIX + "site.versions"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_get(self, request: Message) -> Message:
        return reply(request, self._backend.site_versions())


class SiteRollback(Guarded, resource.Resource):
    """POST {version: N}: make version N's text active again, as a new version."""

    rt = RT_PREFIX + "site.rollback"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "site-rollback") as audit:
            number = field(decode(request), "version", int)
            audit.what(to_version=number)
            applied = self._backend.rollback(number, installer_of(request) or "")
            audit.what(site_version=applied["version"])
            return reply(request, applied, code=CHANGED)


class Phones(Guarded, resource.Resource):
    """GET every device seen; POST {assign: MAC, users: [...], dect: bool, vendor: str} or
    {unassign: MAC}."""

    rt = RT_PREFIX + "phones"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_get(self, request: Message) -> Message:
        return reply(request, self._backend.phones())

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "phones") as audit:
            body = decode(request)
            if isinstance(body, dict) and isinstance(body.get("assign"), str):
                audit.what("phones-assign", mac=body["assign"], users=body.get("users"))
                if body.get("vendor") is not None:  # the installer's word on a device nobody could tell
                    audit.what(vendor=body["vendor"])
            elif isinstance(body, dict) and isinstance(body.get("unassign"), str):
                audit.what("phones-unassign", mac=body["unassign"])
            changed = self._backend.change_phones(body, installer_of(request) or "")
            audit.what(mac=changed["mac"], site_version=changed["site_version"])
            return reply(request, changed, code=CHANGED)


class Enrolment(Guarded, resource.Resource):
    """GET the window; POST {open: minutes, macs: [...]} or {close: true}."""

    rt = RT_PREFIX + "enrol"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_get(self, request: Message) -> Message:
        return reply(request, self._backend.enrolment())

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "enrol") as audit:
            body = decode(request)
            if isinstance(body, dict) and body.get("close"):
                audit.what("enrol-close")
            elif isinstance(body, dict):
                audit.what("enrol-open", minutes=body.get("open"), macs=body.get("macs"))
            window = self._backend.change_enrolment(body)
            audit.what(until=local_time(window["until"]))
            return reply(request, window, code=CHANGED)


class Mode(Guarded, resource.Resource):
    """GET the operating mode; PUT {mode: "local"} forces local mode for a drill, "auto" ends it."""

    rt = RT_PREFIX + "mode"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_get(self, request: Message) -> Message:
        return reply(request, self._backend.mode())

    async def render_put(self, request: Message) -> Message:
        with Audit(self._backend, request, "mode") as audit:
            mode = field(decode(request), "mode", str)
            audit.what(mode=mode)
            if mode not in ("auto", "local"):
                raise PayloadError("mode must be 'auto' or 'local'")
            return reply(request, self._backend.set_mode(mode, installer_of(request) or ""), code=CHANGED)


class Firmware(Guarded, resource.Resource):
    """/fw: PUT the bundle block-wise (Block1, BERT over TCP), streamed to disk as it arrives;
    GET the LwM2M Object 5 state; POST /fw/update to apply."""

    rt = RT_PREFIX + "fw"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend
        self._blocks = 0

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return request.code != Code.PUT  # PUT blocks go to disk one by one, never all in RAM

    async def render_get(self, request: Message) -> Message:
        return reply(request, _fw_status(self._backend.firmware))

    async def render_put(self, request: Message) -> Message:
        block = request.opt.block1
        if block is None:
            number, more, size_exponent = 0, False, 6
        else:
            number, more, size_exponent = block.block_number, block.more, block.size_exponent
        unit = 1024 if size_exponent == 7 else 2 ** (size_exponent + 4)  # BERT counts in 1 KiB
        self._blocks += 1
        if self._blocks % 16 == 0:
            # Each block's message sits in aiocoap's reference cycles until the collector runs;
            # with the agent's raised threshold (tune_garbage_collector) a bundle would pile up.
            gc.collect(0)
        with Audit(self._backend, request, "fw-upload") as audit:
            try:
                # If-Match names the bundle being sent (its image's SHA-256, 8 bytes): a resumed
                # upload must continue that same bundle, never another one's partial copy.
                bundle = request.opt.if_match[0].hex() if request.opt.if_match else None
                self._backend.firmware.write(number * unit, request.payload, last=not more, bundle=bundle)
            except UpdateRefused as exc:
                audit.refused(str(exc))
                return _refusal(exc)
            except BundleError as exc:
                raise PayloadError(f"bundle refused: {exc}") from None
            block1 = (number, more, size_exponent)
            if more:
                audit.quiet()  # one line per upload: at its last block
                return Message(code=Code.CONTINUE, block1=block1)
            status = self._backend.firmware.status
            audit.what(version=status.version, size=status.size)
            return reply(request, _fw_status(self._backend.firmware), code=CHANGED, block1=block1)


class FirmwareExecute(Guarded, resource.Resource):
    rt = RT_PREFIX + "fw.update"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "fw-apply") as audit:
            audit.what(version=self._backend.firmware.status.version)
            try:
                force = bool(decode(request).get("force")) if request.payload else False
                self._backend.firmware.update(force=force)
            except UpdateRefused as exc:
                audit.refused(str(exc))
                return _refusal(exc)
            return reply(request, _fw_status(self._backend.firmware), code=CHANGED)


def _fw_status(firmware: FirmwareUpdate) -> dict[str, Any]:
    s = firmware.status
    return {
        "state": int(s.state),
        "result": int(s.result),
        "received": s.received,
        "version": s.version,
        "size": s.size,
        "reason": s.reason,
        "sha256": s.sha256,
        "total": s.total,
        "slots": firmware.slot_view(),
    }


def _refusal(exc: UpdateRefused) -> Message:
    """4.08 when a block is out of order (the reason names the offset to resume at), 4.12 when it
    continues another bundle than the one on the appliance, else 5.03."""
    if isinstance(exc, BundleMismatch):
        code = Code.PRECONDITION_FAILED
    elif exc.resume_at is not None:
        code = Code.REQUEST_ENTITY_INCOMPLETE
    else:
        code = Code.SERVICE_UNAVAILABLE
    return Message(code=code, payload=str(exc).encode(), content_format=ContentFormat.TEXT)


class InstallerList(Guarded, resource.Resource):
    """GET the installers paired with this appliance; POST {revoke: id}."""

    rt = RT_PREFIX + "installers"

    def __init__(self, backend: Backend, snapshots: list[Snapshot]) -> None:
        super().__init__()
        self._backend = backend
        self._snapshots = snapshots  # whose watches a revocation ends

    async def render_get(self, request: Message) -> Message:
        me = installer_of(request)
        rows = [
            {"id": i.id, "name": i.name, "created": i.created, "you": i.id == me}
            for i in self._backend.installers.all()
        ]
        return reply(request, rows)

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "revoke-installer") as audit:
            installer = field(decode(request), "revoke", str)
            names = {i.id: i.name for i in self._backend.installers.all()}
            audit.what(revoked=installer, revoked_name=names.get(installer))
            audit.name()  # the revoker's name, while it exists (it may be revoking itself)
            if not self._backend.installers.revoke(installer):
                raise PayloadError(f"no installer {installer!r}")
            for snapshot in self._snapshots:
                snapshot.revoked(installer)
            return Message(code=DELETED)


class Pair(Guarded, resource.Resource):
    """POST {name: "..."} under the bootstrap context: a fresh installer context, once per attempt."""

    rt = RT_PREFIX + "pair"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    def allowed(self, request: Message) -> bool:
        return PAIRING_CLAIM in claims_of(request)

    async def render_post(self, request: Message) -> Message:
        with Audit(self._backend, request, "pair") as audit:
            context = request.remote.security_context
            self._backend.pairing.spend(context.id_context)
            name = field(decode(request), "name", str)
            if not 0 < len(name) <= 64 or not name.isprintable():
                raise PayloadError("name must be 1-64 printable characters")
            created = self._backend.installers.create(name)
            audit.by(created["installer"])  # the new installer's ID; never its secret
            return reply(request, {**created, "device": self._backend.device(full=True)}, code=CREATED)


def build_site(backend: Backend) -> tuple[resource.Site, list[Snapshot]]:
    """The resource tree, and the observable snapshots the service refreshes."""
    snapshots = {
        "status": Snapshot("status", backend.status),
        "registrations": Snapshot("registrations", backend.registrations),
        "calls": Snapshot("calls", backend.calls),
        "journal": Snapshot("journal", backend.journal),
        "presence": Snapshot("presence", backend.presence),
        "log": Snapshot("log", backend.log),
    }
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["dev"], Device(backend))
    for name, snapshot in snapshots.items():
        site.add_resource([name], snapshot)
    site.add_resource(["site"], Site(backend))
    site.add_resource(["site", "versions"], SiteVersions(backend))
    site.add_resource(["site", "rollback"], SiteRollback(backend))
    site.add_resource(["phones"], Phones(backend))
    site.add_resource(["enrol"], Enrolment(backend))
    site.add_resource(["mode"], Mode(backend))
    site.add_resource(["fw"], Firmware(backend))
    site.add_resource(["fw", "update"], FirmwareExecute(backend))
    site.add_resource(["installers"], InstallerList(backend, list(snapshots.values())))
    site.add_resource(["pair"], Pair(backend))
    return site, list(snapshots.values())
