"""Local routing policy: which route plan (`vaxelbox.local.plan`) a call gets while the cloud is away.

Pure: no I/O, no clock, no asyncio. `plan_call(site, dialled, caller, now, state, registered)`
mirrors the cloud PBX's call handling (DOMAIN.md, "Call-handling semantics the local mode
mirrors") with these rules, in this order:

1. **Dialled text.** The Request-URI user part, %-decoded. URI parameters (`;phone-context=...`)
   and RFC 3966 visual separators (space, `-`, `.`, `(`, `)`) are dropped. Numbers are read like
   the site's (`to_e164`, Swedish region): `08-465 004 01`, `0846500401`, `+46846500401` and
   `0046846500401` are the same number.
2. **Emergency and urgent service numbers go out the trunk, always, first** - before extensions,
   forwards, groups or activities, from any caller (also one that is not an office phone: a life
   outweighs toll fraud). See `EMERGENCY`: 112, plus 911 (3GPP TS 22.101 makes handsets treat it as
   112; visitors dial it) and 90000 (Sweden's emergency number before 1996, still listed by
   libphonenumber), both sent as 112; 11414 (police, non-urgent), 11313 (information in accidents
   and crises), 1177 (healthcare advice), 116000 (missing children), 116111 (BRIS, children's
   helpline), sent as dialled. `+46`/`0046` in front is ignored. Without a fallback trunk:
   `Reject(503)`, why naming "no emergency route in local mode" (503 also lets a phone that can
   reach the cloud directly try its second server). `emergency_route_warning(site)` says so at load
   time, and names extensions that these numbers shadow.
3. **The site's own numbers.** A user's extension, direct number or mobile number -> that user; a
   group's extension or number -> the group; the main number -> its `entry` target. Looked up in a
   `Directory` built once per Site object (`directory(site)` caches it).
4. **External numbers** (a valid number not in the site, or a valid Swedish short number such as
   118 118) -> `Trunk(number, caller_id)` if the site has a fallback trunk. Only office phones may
   dial out: a caller without a site user gets `Reject(403 Forbidden)` (an outside caller must not
   be able to call out through the office's trunk - toll fraud); forwards of their call to an
   external number are the feature and are allowed. Caller id: the calling user's direct number,
   else the trunk's `caller_id`, else the main number (forwarded outside calls show the office's
   number: trunks refuse foreign caller ids). Without a trunk: `Reject(503 Service Unavailable)`,
   the status RFC 3398 gives Q.850 causes 34/38 (no circuit, network out of order) and that
   Asterisk and FreeSWITCH answer when every trunk is down: the number is right, the route is
   temporarily gone. Short numbers are sent as dialled, not E.164.
5. **Anything else** (not in the site, not a valid number): `Reject(404 Not Found)` (Q.850 cause 1,
   unallocated number). Star codes are answered before routing; here they are unknown numbers.

Targets (`user:`, `group:`, `menu:`, `voicemail:`, `tel:`) are followed like this:

- **User.** A user calling themselves (dialled directly) rings their other phones: no activity,
  no forwards (it is how you find a handset). Reached through a forward or overflow, the caller is
  on this very call: `Reject(486 Busy Here)`. Otherwise, if an activity (hänvisning) is active (its
  `until` not passed) and no number of the caller is in the user's VIP list (the presented number
  as E.164, and for an office phone also its user's direct and mobile numbers), the activity's
  target. Else forward `always`, else `Ring((user,))` for `no_answer_after` seconds if a no-answer
  forward is set (else without limit), `on_no_answer` and `on_unavailable` -> the no-answer
  target (an unregistered phone is a phone nobody answers, as in the cloud), `on_busy` -> the busy
  target.
- **Group.** Closed by its schedule (site time zone, Swedish holidays and eves) -> `closed`, else
  `overflow`, else `Reject(480)`. Members who can answer: logged in, registered now, without an
  active activity (VIP lists are for direct calls) and not the caller; none -> overflow, else
  `Reject(480)`. Members' personal forwards and activities do not apply inside a group, as in
  Swedish cloud PBXs: a group call rings the member's phones or skips them. `parallel` ->
  `Ring(members, ring_time)`, every outcome -> overflow. `sequential` -> one `Ring` per member in
  order, each with the member's `ring_time` (else the group's), every outcome -> the next member,
  the last -> overflow. Without an overflow the caller gets the best response seen.
- **Menu.** No media here, so no IVR: the menu's `default` target.
- **Voicemail.** Needs media the appliance has not: `Reject(480 Temporarily Unavailable)` at once,
  so the caller hears a clear failure, never silence until a timeout. (Ringing the user's mobile
  instead would defeat an activity like "meeting -> voicemail" and cost money.)
- **Tel.** An office number (a direct, group or main number) is routed inside the office, as the
  cloud would (the trunk would only send it back to the cloud); any other number -> rule 4 (a
  user's mobile as a forward target is the real mobile, out the trunk).
- **Loops and depth.** A target already on the way -> `Reject(480)`, why "forward loop [...]";
  more than `MAX_FORWARDS` hops after the dialled target -> `Reject(480)`, why "too many
  forwards [...]". A target that is not in the site (state can outlive a site edit) -> `Reject(404)`.

Every `why` is one short line for logs and the Reason header: the rule, then the way the call
took in brackets (`voicemail needs the cloud; local mode has none [101 -> user:anna -> (activity
mote) voicemail:anna]`); no control characters, quotes or backslashes, at most `MAX_WHY`
characters, never a secret.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol

import phonenumbers
from phonenumbers import shortnumberinfo

from vaxelbox.local.plan import Plan, Reject, Ring, Trunk
from vaxelbox.site.model import Activity, Forwards, Group, Menu, Schedule, Site, User
from vaxelbox.site.numbers import DEFAULT_REGION, to_e164
from vaxelbox.site.schedule import opening
from vaxelbox.site.targets import Target, TargetKind

MAX_FORWARDS = 5
"""Hops a call may take after its dialled target (forwards, overflow, closed, menu default)."""

MAX_WHY = 200
"""Longest `why`, in characters."""

EMERGENCY: Mapping[str, str] = {
    "112": "112",  # SOS Alarm
    "911": "112",  # emergency on every GSM handset (3GPP TS 22.101); visitors dial it
    "90000": "112",  # Sweden's emergency number until 1996
    "11414": "11414",  # Polisen, non-urgent
    "11313": "11313",  # information in accidents and crises
    "1177": "1177",  # Vårdguiden, healthcare advice
    "116000": "116000",  # missing children hotline
    "116111": "116111",  # BRIS, children's helpline
}
"""Emergency and urgent service numbers as dialled -> what the trunk is asked to call."""

_VISUAL_SEPARATORS = re.compile(r"[\s\-.()]")


class UserState(Protocol):
    """The users' dynamic state (issue 10 will store it); `SiteDefaults` is the site as written."""

    def forwards(self, user: User) -> Forwards:
        """The user's forwards: the site's, or what the user set since."""
        ...

    def activity(self, user: User, now: datetime) -> "ActiveActivity | None":
        """The user's active activity at `now`, None if none or it has ended."""
        ...

    def logged_in(self, group: Group, user_id: str) -> bool:
        """Whether member `user_id` is logged in to `group`."""
        ...


@dataclass(frozen=True, slots=True)
class ActiveActivity:
    """An activity a user switched on, until `until` (aware; None: until further notice)."""

    activity: Activity
    until: datetime | None


class SiteDefaults(UserState):
    """The site's own forwards, every member logged in, and `activities` (user id -> activity,
    none by default) active until their `until`; `logged_out` holds (group id, user id) pairs."""

    def __init__(
        self,
        activities: Mapping[str, ActiveActivity] | None = None,
        logged_out: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._activities = dict(activities or {})
        self._logged_out = frozenset(logged_out)

    def forwards(self, user: User) -> Forwards:
        return user.forwards

    def activity(self, user: User, now: datetime) -> ActiveActivity | None:
        active = self._activities.get(user.id)
        return active if active is not None and not _ended(active, now) else None

    def logged_in(self, group: Group, user_id: str) -> bool:
        return (group.id, user_id) not in self._logged_out


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: `user` is the site user id of an office phone (None from outside); `number` is
    the number as presented (E.164, national or an extension), for VIP matching."""

    user: str | None
    number: str | None


class Directory:
    """A site's lookup tables, built once per Site object (use `directory(site)`)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.users: dict[str, User] = {u.id: u for u in site.users}
        self.groups: dict[str, Group] = {g.id: g for g in site.groups}
        self.menus: dict[str, Menu] = {m.id: m for m in site.menus}
        self.schedules: dict[str, Schedule] = {s.id: s for s in site.schedules}
        self.vip: dict[str, frozenset[str]] = {u.id: frozenset(u.vip) for u in site.users}
        self.extensions: dict[str, str] = {}
        self.office: dict[str, str] = {site.main.number: site.main.entry}
        self.mobiles: dict[str, str] = {}
        for user in site.users:
            self.extensions.setdefault(user.extension, f"user:{user.id}")
            if user.direct_number:
                self.office.setdefault(user.direct_number, f"user:{user.id}")
            if user.mobile:
                self.mobiles.setdefault(user.mobile, f"user:{user.id}")
        for group in site.groups:
            self.extensions.setdefault(group.extension, f"group:{group.id}")
            if group.number:
                self.office.setdefault(group.number, f"group:{group.id}")

    def resolve(self, text: str, number: str | None) -> str | None:
        """The target that dialled `text` (cleaned; `number` its E.164 form if valid) reaches."""
        if text in self.extensions:
            return self.extensions[text]
        if number is None:
            return None
        return self.office.get(number) or self.mobiles.get(number)


_directories: list[Directory] = []


def directory(site: Site) -> Directory:
    """The `Directory` of `site`, cached for the last few Site objects (a site is immutable)."""
    for found in _directories:
        if found.site is site:
            return found
    built = Directory(site)
    _directories.insert(0, built)
    del _directories[4:]
    return built


def plan_call(
    site: Site,
    dialled: str,
    caller: Caller,
    now: datetime,
    state: UserState,
    registered: Callable[[str], bool],
) -> Plan:
    """The route plan for a call to `dialled` (Request-URI user part, %-decoded) from `caller` at
    `now` (aware). `registered(user_id)`: the user has a registered contact now. Never raises for
    any `dialled`; rules in the module docstring."""
    book = directory(site)
    text = _clean(dialled)
    origin = _printable(text)[:32] or "(empty)"
    short = _short_digits(text)
    if short in EMERGENCY:  # the same test as is_emergency
        return _emergency(book, caller, short, origin)
    number = _e164(text)
    call = _Call(book, caller, _caller_numbers(book, caller), now, state, registered)
    if (target := book.resolve(text, number)) is not None:
        return _follow(call, target, _Path((), origin), "")
    if number is None and short is not None and _valid_short(short):
        number = short
    if number is None:
        return _reject(404, "Not Found", "no such extension or number", origin)
    if call.caller_user is None:
        return _reject(403, "Forbidden", "only office phones may call out", origin)
    return _external(call, number, _Path((), origin).then(f"tel:{number}", ""))


def is_emergency(dialled: str) -> bool:
    """Whether `dialled` (as `plan_call` takes it) is an emergency or urgent service number,
    which `plan_call` sends to the trunk from any caller, before anything else."""
    return _short_digits(_clean(dialled)) in EMERGENCY


def emergency_route_warning(site: Site) -> str | None:
    """What an installer must hear at load time about emergency calls in local mode, or None."""
    found = []
    if site.fallback_trunk is None:
        found.append(
            "no fallback_trunk: while the cloud is unreachable the office phones cannot call 112 "
            "or any external number"
        )
    shadowed = sorted(
        {
            x
            for x in [*(u.extension for u in site.users), *(g.extension for g in site.groups)]
            if x in EMERGENCY
        }
    )
    if shadowed:
        found.append(
            f"extension {', '.join(shadowed)} is an emergency or service number: "
            "local mode always sends it out to the trunk"
        )
    return "; ".join(found) or None


# --- the way a call takes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    """The targets a call has passed (for loops) and the same for people (for `why`)."""

    targets: tuple[str, ...]
    text: str

    def then(self, target: str, how: str) -> "_Path":
        step = f"({how}) {target}" if how else target
        return _Path((*self.targets, target), f"{self.text} -> {step}")


@dataclass(frozen=True, slots=True)
class _Call:
    book: Directory
    caller: Caller
    caller_numbers: frozenset[str]
    now: datetime
    state: UserState
    registered: Callable[[str], bool]

    @property
    def caller_user(self) -> str | None:
        """The caller's user id if it is a user of this site."""
        return self.caller.user if self.caller.user in self.book.users else None


def _follow(call: _Call, text: str, path: _Path, how: str) -> Plan:
    """Where target `text` sends the call, reached from `path` because of `how`."""
    target = _target(text)
    key = str(target) if target else _printable(text)[:40]
    if key in path.targets:
        return _reject(480, "Temporarily Unavailable", "forward loop", path.then(key, how).text)
    if len(path.targets) > MAX_FORWARDS:
        return _reject(480, "Temporarily Unavailable", "too many forwards", path.then(key, how).text)
    here = path.then(key, how)
    if target is None:
        return _reject(404, "Not Found", "not a target", here.text)
    if target.kind is TargetKind.VOICEMAIL:
        return _reject(
            480, "Temporarily Unavailable", "voicemail needs the cloud; local mode has none", here.text
        )
    if target.kind is TargetKind.TEL:
        return _tel(call, target.ref, here)
    return _FOLLOW[target.kind](call, target.ref, here)


def _user(call: _Call, user_id: str, path: _Path) -> Plan:
    user = call.book.users.get(user_id)
    if user is None:
        return _reject(404, "Not Found", "no such user in the site", path.text)
    if user.id == call.caller_user:
        if len(path.targets) == 1:
            return Ring((user.id,), None, _why("calling yourself: your other phones", path.text))
        return _reject(486, "Busy Here", "forwarded back to the caller", path.text)
    active = _active(call, user)
    if active is not None and not call.caller_numbers & call.book.vip[user.id]:
        return _follow(call, active.activity.forward, path, f"activity {active.activity.id}")
    forwards = call.state.forwards(user)
    if forwards.always:
        return _follow(call, forwards.always, path, "always")
    no_answer = _follow(call, forwards.no_answer, path, "no answer") if forwards.no_answer else None
    busy = _follow(call, forwards.busy, path, "busy") if forwards.busy else None
    ring_time = float(forwards.no_answer_after) if forwards.no_answer else None
    return Ring((user.id,), ring_time, _why("", path.text), no_answer, busy, no_answer)


def _group(call: _Call, group_id: str, path: _Path) -> Plan:
    group = call.book.groups.get(group_id)
    if group is None:
        return _reject(404, "Not Found", "no such group in the site", path.text)
    if (shut := _closed(call, group)) is not None:
        target = group.closed or group.overflow
        if target:
            return _follow(call, target, path, shut)
        return _reject(480, "Temporarily Unavailable", f"group {shut}", path.text)
    overflow = _follow(call, group.overflow, path, "overflow") if group.overflow else None
    members = [m for m in group.members if _can_answer(call, group, m.user)]
    if not members:
        return overflow or _reject(
            480, "Temporarily Unavailable", "nobody in the group can answer", path.text
        )
    if group.strategy == "parallel":
        users = tuple(m.user for m in members)
        return Ring(users, float(group.ring_time), _why("", path.text), overflow, overflow, overflow)
    plan = overflow
    for i in reversed(range(len(members))):
        member = members[i]
        why = _why("", f"{path.text}, member {i + 1}/{len(members)} {member.user}")
        ring_time = float(member.ring_time or group.ring_time)
        plan = Ring((member.user,), ring_time, why, plan, plan, plan)
    assert plan is not None  # members is not empty
    return plan


def _menu(call: _Call, menu_id: str, path: _Path) -> Plan:
    menu = call.book.menus.get(menu_id)
    if menu is None:
        return _reject(404, "Not Found", "no such menu in the site", path.text)
    return _follow(call, menu.default, path, "menu default")


_FOLLOW: dict[TargetKind, Callable[[_Call, str, _Path], Plan]] = {
    TargetKind.USER: _user,
    TargetKind.GROUP: _group,
    TargetKind.MENU: _menu,
}


def _tel(call: _Call, number: str, path: _Path) -> Plan:
    """A forward to a number: inside the office if it is one of the office's numbers."""
    inside = call.book.office.get(number)
    if inside is not None:
        return _follow(call, inside, path, "office number")
    return _external(call, number, path)


def _external(call: _Call, number: str, path: _Path) -> Plan:
    trunk = call.book.site.fallback_trunk
    if trunk is None:
        return _reject(
            503, "Service Unavailable", "external calls need the cloud or a fallback trunk", path.text
        )
    return Trunk(number, _caller_id(call.book, call.caller_user), _why("external", path.text))


def _emergency(book: Directory, caller: Caller, short: str, origin: str) -> Plan:
    dial = EMERGENCY[short]
    if book.site.fallback_trunk is None:
        return _reject(
            503, "Service Unavailable", "no emergency route in local mode: no fallback trunk", origin
        )
    user = caller.user if caller.user in book.users else None
    return Trunk(dial, _caller_id(book, user), _why(f"emergency number {dial}", origin))


# --- small judgements -------------------------------------------------------------------------


def _active(call: _Call, user: User) -> ActiveActivity | None:
    """The user's activity if it is still running at `now` (a state may lag behind the clock)."""
    active = call.state.activity(user, call.now)
    return active if active is not None and not _ended(active, call.now) else None


def _ended(active: ActiveActivity, now: datetime) -> bool:
    return active.until is not None and active.until <= now


def _can_answer(call: _Call, group: Group, user_id: str) -> bool:
    """Whether a group call may ring member `user_id` now."""
    user = call.book.users.get(user_id)
    return (
        user is not None
        and user_id != call.caller_user
        and call.state.logged_in(group, user_id)
        and call.registered(user_id)
        and _active(call, user) is None
    )


def _closed(call: _Call, group: Group) -> str | None:
    """Why the group's schedule is closed now ("closed: Julafton"), None if open or unscheduled."""
    schedule = call.book.schedules.get(group.schedule) if group.schedule else None
    if schedule is None:
        return None
    result = opening(schedule, call.now, call.book.site.site.timezone)
    return None if result.open else result.reason


def _caller_id(book: Directory, user_id: str | None) -> str:
    """The calling user's direct number, else the trunk's caller id, else the main number."""
    user = book.users.get(user_id) if user_id else None
    if user is not None and user.direct_number:
        return user.direct_number
    trunk = book.site.fallback_trunk
    return trunk.caller_id if trunk is not None and trunk.caller_id else book.site.main.number


def _caller_numbers(book: Directory, caller: Caller) -> frozenset[str]:
    """The caller's numbers as E.164, for VIP lists: the presented one, and the office user's."""
    found = set()
    if caller.number and (number := _e164(_clean(caller.number))):
        found.add(number)
    user = book.users.get(caller.user) if caller.user else None
    if user is not None:
        found.update(n for n in (user.direct_number, user.mobile) if n)
    return frozenset(found)


# --- text -------------------------------------------------------------------------------------


def _clean(dialled: str) -> str:
    """The dialled text without URI parameters and visual separators."""
    return _VISUAL_SEPARATORS.sub("", dialled.partition(";")[0])


def _short_digits(text: str) -> str | None:
    """`text` as Swedish short digits (a `+46`/`0046` prefix dropped), None if not all digits."""
    for prefix in ("+46", "0046"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text if text.isascii() and text.isdigit() else None


def _e164(text: str) -> str | None:
    """`text` as an E.164 number if it is a valid one, read as the site reads numbers."""
    if not text or len(text) > 32:
        return None
    try:
        return to_e164(text)
    except ValueError:
        return None


def _valid_short(digits: str) -> bool:
    """Whether `digits` is a short number Swedish operators connect (118 118, 90101, ...)."""
    try:
        parsed = phonenumbers.parse(digits, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return False
    return shortnumberinfo.is_valid_short_number_for_region(parsed, DEFAULT_REGION)


@lru_cache(maxsize=1024)
def _target(text: str) -> Target | None:
    try:
        return Target.parse(text)
    except ValueError:
        return None


def _printable(text: str) -> str:
    """`text` safe inside a quoted Reason header and a log line."""
    return "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text)


def _why(rule: str, way: str = "") -> str:
    """`rule [way]`, or the way alone, made safe and short."""
    text = f"{rule} [{way}]" if rule and way else rule or way
    return _printable(text)[:MAX_WHY]


def _reject(status: int, reason: str, rule: str, way: str) -> Reject:
    return Reject(status, reason, _why(rule, way))
