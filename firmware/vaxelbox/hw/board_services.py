"""The board's services under the agent's supervisor: the companion MCU and /dev/watchdog.

The companion's LEDs show the agent's real state (cloud and mode, enrolment window, firmware
update); its button acts through the code paths the command line uses: a short press opens the
enrolment window for ENROL_MINUTES, as `vaxelbox enrol open` does; held 10 s it resets the
appliance to its factory state, as `vaxelbox factory-reset` does (Agent.factory_reset).
"""

import time
from typing import TYPE_CHECKING, Any

from vaxelbox.agent.logs import audit, get_logger
from vaxelbox.agent.supervisor import Supervisor
from vaxelbox.edge.health import CloudState
from vaxelbox.hw import companion_protocol as wire
from vaxelbox.hw.board import Board
from vaxelbox.hw.companion import CompanionService, Leds
from vaxelbox.hw.watchdog import WatchdogPetter, systemd_owns_watchdog
from vaxelbox.mgmt.firmware import State
from vaxelbox.routing.mode import Mode

if TYPE_CHECKING:
    from vaxelbox.agent.app import Agent

log = get_logger("vaxelbox.board")
ENROL_MINUTES = 30  # the button's window, as `vaxelbox enrol open`'s default


class BoardServices:
    def __init__(self, agent: "Agent", board: Board) -> None:
        self.agent = agent
        self.board = board
        self.companion = (
            CompanionService(board.companion, self.leds, self.button) if board.companion else None
        )
        self.watchdog: WatchdogPetter | None = None
        if board.watchdog is not None:
            if systemd_owns_watchdog():
                log.info("watchdog left to systemd", device=board.watchdog.device)
            else:
                self.watchdog = WatchdogPetter(board.watchdog)

    def add_to(self, supervisor: Supervisor) -> None:
        if self.companion is not None:
            supervisor.add("companion", self.companion.run)
        if self.watchdog is not None:
            supervisor.add("watchdog", self.watchdog.run)

    def state_changed(self) -> None:
        if self.companion is not None:
            self.companion.poke()

    def alarms(self) -> list[dict[str, Any]]:
        return self.companion.alarms() if self.companion is not None else []

    def leds(self) -> Leds:
        """What the LEDs show now, from the agent's own state."""
        agent = self.agent
        if agent.local is not None and agent.local.mode == Mode.LOCAL:
            link = wire.LINK_LOCAL
        elif agent.health.state == CloudState.UP:
            link = wire.LINK_UP
        else:
            link = wire.LINK_DEGRADED
        window = agent.store.devices.enrolment()
        management = agent.management
        updating = management is not None and management.backend.firmware.status.state == State.UPDATING
        fault = wire.FAULT_AGENT if self._alarmed() else 0
        return Leds(link, window is not None and window.until > time.time(), updating, fault)

    def _alarmed(self) -> bool:
        """Whether `vaxelctl status` lists an alarm of the agent's own (today: a phone the auth guard
        holds for retrying a wrong password), shown as red fault code 3 (README, the LED table)."""
        edge = self.agent.edge
        return edge is not None and edge.relay is not None and bool(edge.relay.auth_guard.alarms())

    def button(self, event: int) -> bool:
        """A press on the companion's button; True when done."""
        if event == wire.BUTTON_SHORT:
            window = self.agent.store.devices.open_enrolment(ENROL_MINUTES)
            audit("enrol-open", "ok", None, "button", minutes=ENROL_MINUTES, until=window.until)
            self.state_changed()
            return True
        # Held 10 s: confirmed; the agent stops, wipes its state and starts again as a fresh box.
        log.warning("factory reset requested by the button: confirmed")
        self.agent.factory_reset("button")
        return True
