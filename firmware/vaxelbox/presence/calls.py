"""The office's own view of its calls: every call that crosses the appliance, as each office user's
dialogs (RFC 4235), in either mode. What the cloud cannot tell us in an outage, this can.

The relay reports three things (it calls the methods of `OfficeCalls` as a call observer):

- `request`: a request the chain settled; an office user's new INVITE is that user's dialog as
  initiator (trying), a BYE ends the call for everyone in it.
- `branch`: a response on a branch the appliance forked; a branch toward an office phone is the
  dialog of that phone's user as recipient (100 trying, 180/183 early, 2xx confirmed, failure
  terminated). A user whose desk phone and DECT handset both ring has one dialog: it is the best of
  its branches, so the handset's 487 after the desk phone answered changes nothing.
- `answered`: a response going back to the calling phone; it moves the caller's dialog.

Pure: no I/O. Dialogs go to `on_dialog(user, dialog)` (the presence cache) as they change.
"""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from vaxelbox.presence.model import Direction, LineDialog, LineState, Party
from vaxelbox.routing.chain import RequestContext, Target
from vaxelbox.sip.message import Request, Response

UserOf = Callable[[RequestContext, Target | None], str | None]  # the office user of a leg, or None
OnDialog = Callable[[str, LineDialog], None]
MAX_LEGS = 4000  # a bound on memory whatever peers send
MAX_AGE = 12 * 3600.0  # seconds: a call older than this lost its BYE (as routing.calls assumes)


@dataclass
class _Leg:
    user: str
    dialog: LineDialog
    started: float  # monotonic s
    branches: dict[int, LineState] = field(default_factory=dict)  # recipient: per forked branch


def dialog_id(call_id: str, direction: Direction) -> str:
    """A stable, XML-safe id for one user's side of a call."""
    return hashlib.sha1(f"{call_id}|{direction}".encode()).hexdigest()[:16]


def state_of(status: int, to_tag: str | None) -> LineState:
    """RFC 4235 §3.7.1: 100 trying; other 1xx proceeding, or early once it carries a To tag; 2xx
    confirmed; anything else terminated."""
    if status == 100:
        return LineState.TRYING
    if status < 200:
        return LineState.EARLY if to_tag else LineState.PROCEEDING
    return LineState.CONFIRMED if status < 300 else LineState.TERMINATED


class OfficeCalls:
    """Office users' dialogs by Call-ID, built from what the relay sees."""

    def __init__(
        self, caller_of: UserOf, callee_of: UserOf, aor: Callable[[str], str], on_dialog: OnDialog
    ) -> None:
        self.caller_of = caller_of  # the office user placing a request from the LAN
        self.callee_of = callee_of  # the office user of a LAN branch target
        self.aor = aor  # a user's identity URI, as watchers know it
        self.on_dialog = on_dialog
        self._legs: dict[tuple[str, Direction], list[_Leg]] = {}

    def __len__(self) -> int:
        return sum(len(legs) for legs in self._legs.values())

    # -- the relay's reports ------------------------------------------------------------------------

    def request(self, context: RequestContext) -> None:
        request = context.request
        if request.method == "BYE":
            self.ended(request.call_id, "remote-bye")
        elif _initial_invite(request) and context.side == "lan" and (context.targets or context.plan):
            user = self.caller_of(context, None)
            if user is not None and not self._legs.get((request.call_id, "initiator")):
                remote = Party(str(request.to.uri), _display(request.to.display))
                self._start(user, request, "initiator", remote, LineState.TRYING, request.from_tag)

    def branch(self, context: RequestContext, target: Target, response: Response | None) -> None:
        request = context.request
        if not _initial_invite(request) or target.side != "lan":
            return
        user = self.callee_of(context, target)
        if user is None:
            return
        legs = self._legs.get((request.call_id, "recipient"), [])
        leg = next((leg for leg in legs if leg.user == user), None)
        status = 408 if response is None else response.status
        tag = None if response is None else response.to_tag
        if leg is None:
            if status >= 300:
                return  # never rang: nothing to show
            # The caller's Contact as the remote target: where a colleague's phone sends its INVITE
            # with Replaces to pick the call up from a busy-lamp key (RFC 3891, RFC 4235 §4.1.6.2).
            contact = str(request.contacts[0].uri) if request.contacts else None
            remote = Party(str(request.from_.uri), _display(request.from_.display), contact)
            leg = self._start(user, request, "recipient", remote, state_of(status, tag), tag)
        leg.branches[id(target)] = state_of(status, tag)
        best = max(leg.branches.values())
        if best is LineState.CONFIRMED and leg.dialog.state is not LineState.CONFIRMED:
            leg.dialog = replace(leg.dialog, local_tag=tag)  # the answering phone's, not the first ringer's
            self._move(leg, best)
        elif best is not LineState.CONFIRMED:
            done = all(s is LineState.TERMINATED for s in leg.branches.values())
            reason = _reason(status) if done else None
            self._move(leg, best, local_tag=leg.dialog.local_tag or tag, reason=reason)

    def answered(self, context: RequestContext, response: Response) -> None:
        request = context.request
        if not _initial_invite(request) or context.side != "lan":
            return
        for leg in self._legs.get((request.call_id, "initiator"), []):
            state = state_of(response.status, response.to_tag)
            reason = _reason(response.status) if state is LineState.TERMINATED else None
            self._move(leg, state, remote_tag=response.to_tag, reason=reason)

    def expire(self, now: float) -> None:
        """End the legs older than MAX_AGE: their BYE was lost, and a lamp must not stay lit."""
        for legs in list(self._legs.values()):
            for leg in [leg for leg in legs if now - leg.started > MAX_AGE]:
                self._move(leg, LineState.TERMINATED, reason="timeout")

    def ended(self, call_id: str, reason: str) -> None:
        """The call is over for everyone in it (a BYE from either side)."""
        for direction in ("initiator", "recipient"):
            for leg in list(self._legs.get((call_id, direction), [])):
                self._move(leg, LineState.TERMINATED, reason=reason)

    # -- the legs -------------------------------------------------------------------------------------

    def _start(
        self,
        user: str,
        request: Request,
        direction: Direction,
        remote: Party,
        state: LineState,
        local_tag: str | None,
    ) -> _Leg:
        if len(self) >= MAX_LEGS:
            self._drop_oldest()
        dialog = LineDialog(
            dialog_id(request.call_id, direction), state, request.call_id, local_tag,
            request.from_tag if direction == "recipient" else None, direction, Party(self.aor(user)), remote,
        )  # fmt: skip
        leg = _Leg(user, dialog, time.monotonic())
        self._legs.setdefault((request.call_id, direction), []).append(leg)
        self.on_dialog(user, dialog)
        return leg

    def _move(self, leg: _Leg, state: LineState, *, reason: str | None = None, **tags: str | None) -> None:
        """Forward only (trying < proceeding < early < confirmed), or to terminated, which ends the leg."""
        old = leg.dialog
        if state is not LineState.TERMINATED and state <= old.state:
            return
        changes = {k: v for k, v in tags.items() if v and getattr(old, k) is None}
        leg.dialog = replace(old, state=state, reason=reason, **changes)  # type: ignore[arg-type]
        if state is LineState.TERMINATED:
            self._forget(leg)
        self.on_dialog(leg.user, leg.dialog)

    def _forget(self, leg: _Leg) -> None:
        key = (leg.dialog.call_id or "", leg.dialog.direction or "initiator")
        legs = self._legs.get(key, [])
        if leg in legs:
            legs.remove(leg)
        if not legs:
            self._legs.pop(key, None)

    def _drop_oldest(self) -> None:
        key = next(iter(self._legs))
        for leg in self._legs.pop(key):
            self.on_dialog(leg.user, replace(leg.dialog, state=LineState.TERMINATED, reason="error"))


def _initial_invite(request: Request) -> bool:
    return request.method == "INVITE" and request.to_tag is None


def _display(display: str | None) -> str | None:
    return display.strip('"') if display else None


def _reason(status: int) -> str:
    """RFC 4235 §4.1.5's event for a failed INVITE."""
    return "cancelled" if status == 487 else "timeout" if status == 408 else "rejected"
