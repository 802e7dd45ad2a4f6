"""What a star code changes in a user's state (forwards, activity, group log-in), one transaction
each, and why a code is refused. Shared by local mode (the appliance answers the code) and online
mode (the cloud answered the code with success, so the appliance's copy follows).

Refusals follow the operator's service description (the Telavox seed): `*75*`
for a group the user is not a member of answers "not active".
"""

from dataclasses import dataclass
from datetime import datetime

from vaxelbox.local.routing import directory
from vaxelbox.local.star_codes import (
    CancelForward,
    ClearActivity,
    ForwardStatus,
    GroupLogin,
    GroupLogout,
    SetActivity,
    SetForward,
    StarCode,
    until,
)
from vaxelbox.site import Site
from vaxelbox.site.model import Group, User
from vaxelbox.site.numbers import to_e164
from vaxelbox.store.user_state import UserStates

CHANGES = (SetForward, CancelForward, SetActivity, ClearActivity, GroupLogin, GroupLogout)


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome: `done` with what it did, or a refusal with its SIP status; `text` is for the
    phone's Reason header and the log."""

    done: bool
    text: str
    status: int = 200


def is_change(code: StarCode) -> bool:
    """Whether the code changes state (and so is journaled while local, and copied while online)."""
    return isinstance(code, CHANGES)


def apply(code: StarCode, user: User, site: Site, users: UserStates, now: datetime, origin: str) -> Applied:
    """Apply a state-changing code (or answer the status query) for `user`."""
    if isinstance(code, SetForward):
        target = _target(site, code.number)
        if target is None:
            return Applied(False, f"no extension {code.number} here", 404)
        users.set_forward(user.id, code.kind, target, code.seconds, origin)
        return Applied(True, f"forward {code.kind.replace('_', ' ')} to {code.number}")
    if isinstance(code, CancelForward):
        users.set_forward(user.id, code.kind, None, None, origin)
        return Applied(True, f"forward {code.kind.replace('_', ' ')} off")
    if isinstance(code, ForwardStatus):
        return _status(user, users)
    if isinstance(code, SetActivity):
        return _activity(code, user, site, users, now, origin)
    if isinstance(code, ClearActivity):
        users.clear_activity(user.id)
        return Applied(True, "available")
    if isinstance(code, GroupLogin | GroupLogout):
        return _group(code, user, site, users)
    return Applied(False, f"{code.code} is not a change", 400)


def _target(site: Site, number: str) -> str | None:
    """A forward target from the number in a code: an office extension as its user or group (so the
    forward stays inside), any other E.164 number as tel:; None for an unknown extension."""
    if number.startswith("+"):
        return f"tel:{number}"
    return directory(site).resolve(number, None)


def _status(user: User, users: UserStates) -> Applied:
    stored = users.forwards(user.id).get("always")
    target = stored.target if stored is not None else user.forwards.always
    if target is None:
        return Applied(False, "forward always is off", 404)
    return Applied(True, f"forward always is on, to {target}")


def _activity(
    code: SetActivity, user: User, site: Site, users: UserStates, now: datetime, origin: str
) -> Applied:
    profile = next((a for a in user.activities if a.number == code.profile), None)
    if profile is None:
        return Applied(False, f"no activity profile {code.profile}", 404)
    end = until(code.time, now, site.site.timezone, profile.default_minutes)
    users.set_activity(user.id, profile.id, end.timestamp() if end else None, origin)
    when = f"until {end.isoformat(timespec='minutes')}" if end else "until further notice"
    return Applied(True, f"{profile.name} {when}")


def _group(code: GroupLogin | GroupLogout, user: User, site: Site, users: UserStates) -> Applied:
    group = _group_named(site, code.group)
    if group is None or user.id not in {m.user for m in group.members}:
        return Applied(False, "not active", 403)  # the seed's answer: not a member of that group
    users.set_logged_in(group.id, user.id, isinstance(code, GroupLogin))
    return Applied(
        True, f"{'logged in to' if isinstance(code, GroupLogin) else 'logged out of'} {group.name}"
    )


def _group_named(site: Site, dialled: str) -> Group | None:
    """A group by what a user dials for it: its extension, its id or its number."""
    return next((g for g in site.groups if dialled in (g.extension, g.id) or _same(g.number, dialled)), None)


def _same(number: str | None, dialled: str) -> bool:
    if number is None:
        return False
    try:
        return to_e164(dialled) == number
    except ValueError:
        return False
