"""The agent's side of local survivable mode: the mode machine fed by cloud health, the installer's
override kept across restarts, and the local processors installed in the relay's chain.

One log line per mode change (`mode`, with old, new and reason); observers
(sd_notify STATUS, the CoAP `/status` and `/mode` resources) hear of each
change as it happens.
"""

import asyncio
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vaxelbox.agent.logs import get_logger
from vaxelbox.edge.failback import FailbackPlan, FailbackRunner, Restore, collect
from vaxelbox.edge.health import Change, CloudHealth, CloudState
from vaxelbox.edge.service import Edge
from vaxelbox.edge.upstream import Upstream
from vaxelbox.local.copy import CopyConfirmedCodes
from vaxelbox.local.plan_runner import LocalCalls
from vaxelbox.local.processors import (
    Authenticate,
    Emergency,
    InDialog,
    LocalPlanner,
    Registrar,
    StarCodes,
    not_served_locally,
)
from vaxelbox.local.registrar import LocalRegistrar, aor_for, user_for_aor
from vaxelbox.local.replay import Attempt, ReplayPlan, ReplayRunner, callers
from vaxelbox.local.routing import emergency_route_warning
from vaxelbox.local.state import StoredUserState
from vaxelbox.local.trunk import FallbackTrunk
from vaxelbox.local.uas import Confirmations
from vaxelbox.routing.chain import Target
from vaxelbox.routing.mode import Mode, ModeChange, ModeMachine
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.uri import parse_uri
from vaxelbox.site import Site
from vaxelbox.site.model import FallbackTrunk as FallbackTrunkConfig
from vaxelbox.store import Store

log = get_logger("vaxelbox.agent.mode")

FORCED_SETTING = "mode.forced_local"
# Tests and demos fix "now" for schedules and activities: an ISO 8601 moment with its offset.
NOW_VARIABLE = "VAXELBOX_NOW"


def site_now() -> datetime:
    """The moment local routing evaluates schedules and activities at (VAXELBOX_NOW overrides)."""
    fixed = os.environ.get(NOW_VARIABLE)
    return datetime.fromisoformat(fixed) if fixed else datetime.now(UTC)


class PhoneDigest(SipDigest):
    """Digest as phones speak it: the credentials' `uri` is hashed as sent but not compared with the
    Request-URI, because sipp and some phone firmware put the registrar's address there (Kamailio
    and Asterisk accept that as well). The nonce lifetime and nc replay detection bound the risk."""

    def uri_matches(self, given: str, request_uri: str) -> bool:
        return True


class LocalMode:
    def __init__(self, store: Store, health: CloudHealth, site: Callable[[], Site], edge: Edge) -> None:
        self.store = store
        self.site = site
        self.edge = edge
        forced = store.settings.get(FORCED_SETTING) == "1"
        self.machine = ModeMachine(time.time(), site().local.hold_down, forced=forced)
        self.observers: list[Callable[[ModeChange], None]] = []
        self.trunk = FallbackTrunk(None)
        self._trunk_config: FallbackTrunkConfig | None = None  # the site's trunk the above was made from
        self._failback: asyncio.Task[None] | None = None
        self._replay: asyncio.Task[None] | None = None  # the journal replay running or last run
        self._failback_state: tuple[str, FailbackPlan] | None = None  # ("running"|"done"|..., plan)
        self.observers.append(self._fail_back_when_online)
        self._install()
        health.subscribe(self._cloud_changed)
        if forced:
            log.warning("mode", old=None, new="local", reason=self.machine.reason)

    @property
    def mode(self) -> Mode:
        return self.machine.mode

    def status(self) -> dict[str, Any]:
        m = self.machine
        return {
            "mode": m.mode.value,
            "since": _iso(m.since),
            "reason": m.reason,
            "forced": m.forced,
            "hold_down": m.hold_down,
            "back_online_at": _iso(m.back_online_at),  # None unless the hold-down runs
            "failback": self._failback_summary(),
        }

    def force(self, local: bool) -> ModeChange | None:
        """The installer's override (`vaxelctl mode local|auto`), kept across restarts."""
        self.store.settings.set(FORCED_SETTING, "1" if local else None)
        now = time.time()
        return self._changed(self.machine.force_local(now) if local else self.machine.auto(now))

    async def run(self) -> None:
        """A supervisor service: ends the hold-down on time; follows the site's hold-down and trunk
        (a site pushed while the agent runs counts within a second)."""
        while True:
            site = self.site()
            self.machine.hold_down = site.local.hold_down
            if site.fallback_trunk != self._trunk_config:
                await self.prepare_trunk(site)
            self._changed(self.machine.tick(time.time()))
            await asyncio.sleep(1.0 + random.uniform(-0.1, 0.1))

    async def prepare_trunk(self, site: Site) -> None:
        """(Re)make the fallback trunk's way out from the site; warn when local mode has no 112 route."""
        if (warning := emergency_route_warning(site)) is not None:
            log.warning("local mode has no emergency route", detail=warning)
        trunk = self._trunk_config = site.fallback_trunk
        if trunk is None:
            self.trunk.upstream = None
            return
        assert self.edge.relay is not None
        upstream = Upstream(
            self.edge.transports, [trunk.uri], self.edge.addresses.wan, self.edge.settings.tls
        )
        try:
            await upstream.resolve()
        except OSError as exc:
            log.warning("fallback trunk cannot be resolved", uri=trunk.uri, error=str(exc))
        self.trunk.upstream = upstream
        self.trunk.prepare()

    def is_trunk(self, address: str) -> bool:
        upstream = self.trunk.upstream
        return upstream is not None and upstream.is_cloud(address)

    # -- wiring -----------------------------------------------------------------------------------

    def _install(self) -> None:
        relay = self.edge.relay
        assert relay is not None
        # MD5 first: phones (and sipp) answer the first challenge and several fail outright on a
        # SHA-256 one; RFC 8760 §2.4 leaves the order to the server. SHA-256 is still accepted.
        self.auth = auth = PhoneDigest(realm=self.site().cloud.domain, algorithms=("MD5", "SHA-256"))
        registrar = LocalRegistrar(auth, self.edge.bindings)
        planner = LocalPlanner(self.site, StoredUserState(self.store.users), self._registered, site_now)
        relay.set_chains(
            local=[
                InDialog(relay.trunk_hop),
                Registrar(registrar, self.site),
                Emergency(self.site, planner),
                Authenticate(auth, self.site),
                StarCodes(self.site, self.store.users, self.store.journal, planner),
                planner,
                not_served_locally,
            ],
            responses=[CopyConfirmedCodes(self.site, self.store.users, site_now)],
        )
        relay.mode = lambda: self.machine.mode
        relay.execute_plan = LocalCalls(relay.forking, self._contacts, self.trunk)
        relay.confirmations = Confirmations(relay.stack, relay.addresses, relay.forking.schedule)

    def _contacts(self, user_id: str) -> list[Target]:
        """A target per registered contact of the user, each on the flow it registered from."""
        relay = self.edge.relay
        assert relay is not None
        site = self.site()
        targets = []
        for binding, flow in self.edge.bindings.contacts_of(aor_for(site.user(user_id), site)):
            flow = flow or relay.flow_of(binding.transport, binding.remote)
            if flow is not None:
                label = f"{user_id} {binding.remote[0]}:{binding.remote[1]}"
                targets.append(Target("lan", flow, parse_uri(binding.contact), label, user_id))
        return targets

    def _registered(self, user_id: str) -> bool:
        return bool(self._contacts(user_id))

    def _cloud_changed(self, change: Change) -> None:
        self._changed(self.machine.cloud(change.new, change.at))
        if change.new is CloudState.UP and self.machine.mode is Mode.ONLINE and self._replay is None:
            # Started online with entries left from before a restart: no failback will come to replay
            # them, so the first answer from the cloud does.
            self._replay = asyncio.create_task(self._replay_journal())

    def _changed(self, change: ModeChange | None) -> ModeChange | None:
        if change is None:
            return None
        log.warning("mode", old=change.old.value, new=change.new.value, reason=change.reason)
        if change.new is Mode.LOCAL:
            self.trunk.prepare()
        for observer in self.observers:
            observer(change)
        return change

    # -- failback (issue 18): online again, re-register the phones with the cloud (edge/failback.py) --

    def _fail_back_when_online(self, change: ModeChange) -> None:
        """One failback at a time: a run that local mode cut short ends before the next begins."""
        if change.new is Mode.ONLINE:
            self._failback = asyncio.create_task(self._fail_back(self._failback))

    async def _fail_back(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        relay = self.edge.relay
        assert relay is not None
        site, started = self.site(), time.time()

        def credentials(aor: str) -> tuple[str, str] | None:
            user = user_for_aor(site, aor)
            return None if user is None else (user.sip.user, user.sip.password.get_secret_value())

        def still_needed(restore: Restore) -> bool:
            """Not if the phone re-registered through the cloud itself since, or the binding went."""
            binding = self.edge.bindings.get(*restore.key)
            return binding is not None and binding.last_seen <= started

        todo = collect(self.edge.bindings, credentials, relay.flow_of, started)
        plan = FailbackPlan(
            [restore for restore, _ in todo], site.cloud.domain, relay.addresses,
            site.local.failback_rate, time.monotonic(), still_needed=still_needed,
        )  # fmt: skip
        runner = FailbackRunner(
            relay.stack, relay.upstream, self.edge.bindings, {r.key: flow for r, flow in todo},
            lambda: self.machine.mode is Mode.ONLINE,
        )  # fmt: skip
        self._failback_state = ("running", plan)
        log.info("failback started", phones=plan.phones, rate=site.local.failback_rate)
        try:
            report = await runner.run(plan)
        except Exception:
            self._failback_state = ("failed", plan)
            log.exception("failback failed")
            return
        self._failback_state = ("stopped" if report.stopped else "done", plan)
        if report.stopped:
            log.warning("failback stopped", reason="local mode again", **report.as_dict())
        else:
            log.info("failback done", **report.as_dict())
            if self._replay is not None:
                await asyncio.gather(self._replay, return_exceptions=True)  # one replay at a time
            self._replay = asyncio.current_task()
            await self._replay_journal()

    # -- journal replay (issue 10): after failback, the codes dialled while local go to the cloud --

    async def _replay_journal(self) -> None:
        """Each pending journal entry placed to the cloud as its user, in order (local/replay.py);
        one line per finished entry, and a summary."""
        relay = self.edge.relay
        assert relay is not None
        site, journal = self.site(), self.store.journal
        entries = journal.pending()
        if not entries:
            return

        def attempted(attempt: Attempt) -> None:
            entry = attempt.entry
            journal.attempted(entry.id, attempt.answer, attempt.state)
            line = {"id": entry.id, "user": entry.user, "code": entry.code, "answer": attempt.answer}
            if attempt.state == "replayed":
                log.info("journal replayed", **line, state=attempt.state)
            elif attempt.final:
                log.warning("journal replayed", **line, state=attempt.state)
            else:
                log.warning("journal replay attempt failed", **line, retry_in=attempt.retry_in)

        plan = ReplayPlan(entries, callers(site), site.cloud.domain, relay.addresses.wan, time.monotonic())
        runner = ReplayRunner(
            relay.stack, relay.upstream, lambda: self.machine.mode is Mode.ONLINE, attempted
        )
        log.info("journal replay started", entries=len(entries))
        try:
            report = await runner.run(plan)
        except Exception:
            log.exception("journal replay failed")
            return
        if report.stopped:
            log.warning("journal replay stopped", reason="local mode again", **report.as_dict())
        else:
            log.info("journal replay done", **report.as_dict())

    def _failback_summary(self) -> dict[str, Any] | None:
        """The last (or running) failback: its state and report; None before the first."""
        if self._failback_state is None:
            return None
        state, plan = self._failback_state
        return {"state": state, **plan.report().as_dict()}


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
