"""The A/B slot state machine (sans-I/O): install, try once, commit or roll back.

The state (`Slots`) is what a bootloader's environment holds: which slot is
primary, which one (if any) is to be tried once, and the trial in progress.
It is a plain value the caller persists (JSON via `to_dict` / `from_dict`)
before it carries out the actions a step returns. Each step takes the state
and one event and returns the new state and a list of actions; nothing here
reads a clock, a file or a process.

Events and who feeds them:
- `apply`: the agent, for a verified, staged bundle -> Install, TryOnce, Restart.
- `boot`: the board's init, at every start of the agent -> which slot to run;
  a trial still open at boot was cut by a reset or a power cut -> rolled back.
- `healthy`: the new agent once ready (SIP listening, management reachable).
- `failed`: the init or the agent (crash, hang, failed health check).
- `tick`: the init while a trial runs; past the deadline it fails.

Every refusal and every roll-back names its reason; results are LwM2M
Object 5's (/5/0/5).
"""

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from vaxelbox.update.lwm2m import Result

SLOT_NAMES = ("A", "B")


class Failure(StrEnum):
    """Why a trial failed."""

    CRASH = "crash"  # the new agent exited
    HANG = "hang"  # the watchdog reset the board
    HEALTH = "health"  # the agent's own health check failed
    DEADLINE = "deadline"  # no healthy report within the board file's deadline
    INTERRUPTED = "interrupted"  # a power cut or reset during the trial (seen at the next boot)


@dataclass(frozen=True)
class Bundle:
    """What the signed header says: `version` (dotted numbers), `boards` (board file names)."""

    version: str
    boards: tuple[str, ...]


@dataclass(frozen=True)
class Trial:
    """The slot on trial; `deadline` in the caller's clock (s), set once it booted."""

    slot: str
    version: str
    previous: str  # the slot to come back to
    started: bool = False
    deadline: float | None = None


@dataclass(frozen=True)
class Outcome:
    """The last update's end: an LwM2M result and the reason in words."""

    result: int
    reason: str


@dataclass(frozen=True)
class Slots:
    """A bootloader's view: `versions` per slot (None: empty), `primary`, `trial`, `outcome`."""

    versions: dict[str, str | None]
    primary: str = "A"
    bad: tuple[str, ...] = ()
    trial: Trial | None = None
    outcome: Outcome | None = None
    booted: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; `from_dict` reads it back."""
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, object]) -> "Slots":
        """Raises KeyError/TypeError/ValueError for a dict `to_dict` did not make."""
        trial, outcome = data.get("trial"), data.get("outcome")
        return Slots(
            versions=dict(data["versions"]),  # type: ignore[call-overload]
            primary=str(data["primary"]),
            bad=tuple(data.get("bad") or ()),  # type: ignore[arg-type]
            trial=Trial(**trial) if isinstance(trial, dict) else None,
            outcome=Outcome(**outcome) if isinstance(outcome, dict) else None,
            booted=data.get("booted"),  # type: ignore[arg-type]
        )

    @property
    def inactive(self) -> str:
        """The slot that is not primary: where the next bundle goes."""
        return SLOT_NAMES[1 - SLOT_NAMES.index(self.primary)]


@dataclass(frozen=True)
class Install:
    """Write the staged bundle's image into `slot` (the inactive one)."""

    slot: str


@dataclass(frozen=True)
class Restart:
    """Stop the running agent so the init boots the slot the state names."""

    reason: str


@dataclass(frozen=True)
class MarkGood:
    """Make `slot` the primary for good (RAUC: mark-good)."""

    slot: str


@dataclass(frozen=True)
class MarkBad:
    """`slot` failed its trial (RAUC: mark-bad); `reason` in words."""

    slot: str
    reason: str


Action = Install | Restart | MarkGood | MarkBad


class Refused(ValueError):
    """An update that must not start; `result` is LwM2M's, the message names the reason."""

    def __init__(self, reason: str, result: int = Result.UNSUPPORTED_PACKAGE) -> None:
        super().__init__(reason)
        self.result = result


@dataclass(frozen=True)
class Step:
    state: Slots
    actions: list[Action] = field(default_factory=list)


def version_key(version: str) -> tuple[int, ...]:
    """ "1.10.2" -> (1, 10, 2); raises Refused for anything but dotted numbers."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise Refused(f"version {version!r} is not dotted numbers (e.g. 1.4.2)") from None


def apply(state: Slots, bundle: Bundle, board: str, running: str, force: bool = False) -> Step:
    """Start an update to `bundle` on `board` whose agent runs version `running`.
    Raises Refused (another board, a downgrade or the same version unless `force`, a trial
    already running) before any action, so nothing is written for a refused bundle."""
    if state.trial is not None:
        raise Refused(f"an update to {state.trial.version} is on trial", Result.UPDATE_FAILED)
    if board not in bundle.boards:
        made_for = ", ".join(bundle.boards) or "no board"
        raise Refused(f"the bundle is for {made_for}, this appliance is {board}")
    new, old = version_key(bundle.version), version_key(running)
    if new <= old and not force:
        what = "the same version" if new == old else "a downgrade"
        raise Refused(f"{bundle.version} is {what} of the running {running}: apply with --force to install")
    slot = state.inactive
    trial = Trial(slot=slot, version=bundle.version, previous=state.primary)
    versions = {**state.versions, slot: bundle.version}
    bad = tuple(s for s in state.bad if s != slot)
    new_state = replace(state, versions=versions, bad=bad, trial=trial, outcome=None)
    return Step(new_state, [Install(slot), Restart(f"trying {bundle.version} in slot {slot}")])


def boot(state: Slots, now: float, deadline_s: float) -> Step:
    """The init starts the agent: the slot to run is `state.booted` of the result.
    A trial not yet started starts now (its only try, with a deadline `deadline_s` from `now`);
    one already started was cut by a reset or power cut: it is rolled back."""
    trial = state.trial
    if trial is None:
        return Step(replace(state, booted=state.primary))
    if not trial.started:
        started = replace(trial, started=True, deadline=now + deadline_s)
        return Step(replace(state, trial=started, booted=trial.slot))
    cut = _roll_back(state, Failure.INTERRUPTED, "the board was reset or lost power during the trial")
    return Step(cut.state, [a for a in cut.actions if not isinstance(a, Restart)])  # booting already


def healthy(state: Slots, now: float) -> Step:
    """The agent reports itself healthy; the trial's slot is committed if in time."""
    trial = state.trial
    if trial is None or state.booted != trial.slot:
        return Step(state)
    if trial.deadline is not None and now > trial.deadline:
        return _roll_back(state, Failure.DEADLINE, "it reported healthy after the deadline")
    outcome = Outcome(Result.SUCCESS, f"{trial.version} committed in slot {trial.slot}")
    committed = replace(state, primary=trial.slot, trial=None, outcome=outcome)
    return Step(committed, [MarkGood(trial.slot)])


def failed(state: Slots, kind: Failure, detail: str) -> Step:
    """The trial failed (`kind`, `detail` in words); without a trial running this changes nothing."""
    if state.trial is None or not state.trial.started:
        return Step(state)
    return _roll_back(state, kind, detail)


def tick(state: Slots, now: float) -> Step:
    """The init's clock: a started trial past its deadline fails."""
    trial = state.trial
    if trial is None or trial.deadline is None or now <= trial.deadline:
        return Step(state)
    return _roll_back(state, Failure.DEADLINE, "no healthy report within the deadline")


def _roll_back(state: Slots, kind: Failure, detail: str) -> Step:
    trial = state.trial
    assert trial is not None
    reason = f"{trial.version} rolled back ({kind.value}): {detail}; back on slot {trial.previous}"
    outcome = Outcome(Result.UPDATE_FAILED, reason)
    bad = (*state.bad, trial.slot) if trial.slot not in state.bad else state.bad
    back = replace(state, primary=trial.previous, trial=None, bad=bad, outcome=outcome, booted=trial.previous)
    actions: list[Action] = [MarkBad(trial.slot, reason)]
    if state.booted == trial.slot:
        actions.append(Restart(reason))
    return Step(back, actions)
