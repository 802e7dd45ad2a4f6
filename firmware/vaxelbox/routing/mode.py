"""The operating mode: online (calls go through the cloud PBX) or local (the appliance routes them).

`ModeMachine` is sans-I/O: cloud-state changes, the installer's override and
clock ticks go in; a `ModeChange` (or None) comes out. Rules:

- online -> local as soon as the health monitor says the cloud is down
  (`CloudHealth` needs 3 misses in a row, about 3 s, so one lost probe never
  flips the office);
- local -> online only after the cloud has answered without a break for
  `hold_down` seconds (default 30 s, the site's `local.hold_down`), so a
  flapping link does not bounce the office between modes; a degraded or down
  report restarts the hold-down;
- `force_local()` (`vaxelctl mode local`, a drill) keeps local mode whatever
  the cloud does until `auto()` ends it; the agent persists the override.
"""

from dataclasses import dataclass
from enum import StrEnum

from vaxelbox.edge.health import CloudState

DEFAULT_HOLD_DOWN = 30.0


class Mode(StrEnum):
    ONLINE = "online"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class ModeChange:
    old: Mode
    new: Mode
    at: float  # wall clock, seconds
    reason: str


class ModeMachine:
    def __init__(self, now: float, hold_down: float = DEFAULT_HOLD_DOWN, forced: bool = False) -> None:
        """Starts online (the cloud is assumed until proven down), or local when `forced`."""
        self.hold_down = hold_down
        self.forced = forced
        self.mode = Mode.LOCAL if forced else Mode.ONLINE
        self.since = now
        self.reason = "forced local by an installer" if forced else "starting: the cloud is assumed up"
        self._cloud = CloudState.DEGRADED
        self._up_since: float | None = None

    def cloud(self, state: CloudState, now: float) -> ModeChange | None:
        """The health monitor's new state."""
        self._cloud = state
        if state is CloudState.UP:
            self._up_since = now if self._up_since is None else self._up_since
            return self.tick(now)
        self._up_since = None
        if state is CloudState.DOWN and self.mode is Mode.ONLINE:
            return self._become(Mode.LOCAL, now, "the cloud stopped answering")
        return None

    def tick(self, now: float) -> ModeChange | None:
        """Call about once a second: ends the hold-down when it has passed."""
        up_for = now - self._up_since if self._up_since is not None else -1.0
        if self.mode is Mode.LOCAL and not self.forced and up_for >= self.hold_down:
            return self._become(Mode.ONLINE, now, f"the cloud answered for {self.hold_down:g} s")
        return None

    @property
    def back_online_at(self) -> float | None:
        """When the office goes back online if the cloud keeps answering (local by the cloud's doing,
        the cloud up again: the hold-down runs), in the clock of `now`; else None."""
        if self.mode is Mode.LOCAL and not self.forced and self._up_since is not None:
            return self._up_since + self.hold_down
        return None

    def force_local(self, now: float) -> ModeChange | None:
        self.forced = True
        if self.mode is Mode.LOCAL:  # already local (the cloud is down): now it stays so by order
            self.reason = "forced local by an installer"
            return None
        return self._become(Mode.LOCAL, now, "forced local by an installer")

    def auto(self, now: float) -> ModeChange | None:
        """End an override: back online at once if the cloud is up, else after its hold-down."""
        self.forced = False
        if self._cloud is CloudState.DOWN:  # stays local, now because of the cloud, not an order
            self.reason = "override ended; the cloud is still unreachable"
            return None
        if self._cloud is CloudState.UP:  # online once it has answered for the hold-down, as always
            self._up_since = now if self._up_since is None else self._up_since
            self.reason = "override ended; the cloud answers again: back online after the hold-down"
            return self.tick(now)
        return self._become(Mode.ONLINE, now, "override ended")

    def _become(self, mode: Mode, now: float, reason: str) -> ModeChange | None:
        if mode is self.mode:
            return None
        change = ModeChange(self.mode, mode, now, reason)
        self.mode, self.since, self.reason = mode, now, reason
        return change
