"""Star codes ("plustjänster"): what a dialled `*21*0701740605#` asks for, as data. Pure: no I/O, no clock.

`parse(dialled)` takes the Request-URI user part as it arrives and returns one of the code types
below, None when the text is not a star code (it does not start with `*` or `#`), or raises
`StarCodeError` naming what is wrong: a text that starts with `*` or `#` is meant as a code, and a
wrong one must be refused, never guessed at. `until(...)` turns the time argument of `*24*` into
an end time. The codes and their meaning are Telavox's (DOMAIN.md, "Star codes"; the seed
`seeds/004_*.txt`, "Plustjänster").

Reading the dialled text:

- URI parameters after the first `;` (`;phone-context=...`, `;user=phone`) are dropped, then
  %-escapes are decoded (RFC 3261 19.1.4: an escaped character is that character, hex digits in
  either case), so `#` may come raw or as `%23`, `*` raw or as `%2A`/`%2a`. Decoding text that
  was decoded already changes nothing a keypad can produce (keypads have no `%`).
- The final `#` is optional everywhere: mobile phones dial the same codes without it ("Plustjänster
  mobil": `*21*<nummer>`, `#21`). `*80*` and `*31*` have none even on desk phones (they place a
  call at once); a final `#` there is tolerated too.
- Only ASCII digits count as digits (`٣` or `²` are refused, not read as 3 or 2).

Numbers (`nr` in `*21*nr#`, `*61*`, `*67*`, `*80*`, `*31*`, `*59*`, `*60*`): 2-6 digits not
starting with 0 is an internal extension and is kept as dialled (the site's extension rule, so
`112` or `1177` stay as dialled and routing decides); anything else is read like the site's
numbers (`to_e164`, Swedish region): `0701740605`, `0046701740605` and `+46701740605` all become
`+46701740605`. RFC 3966 visual separators (`-`, `.`, `(`, `)`, space) inside a number are dropped,
as local routing drops them. The seed allows "telefonnummer eller kortnummer" (a phone number or a
short number) for `*80*`, `*59*`, `*60*`, so `Pickup.extension` may hold an E.164 number too.

Not codes here:

- `#<nummer>#` (transfer the ongoing call) and `*` (take it back) are keypad tones inside a call,
  seen by the phone or the media path, never dialled as a new call. A dialled `#12345#` is refused
  with that explanation. A dialled `#21#` etc. is always the cancel code, never a transfer to an
  extension 21 (transfers are not dialled, so nothing is lost).
- `*#61#`, `*#67#`: only `*#21#` is a status query (Tele2 fixed, DOMAIN.md); others are refused.
- The site's `provisioning.pickup_prefix` may differ from `*80*`; this parser knows the cloud's
  codes only.

`*24*<profile>[*<time>]#`, time forms (the seed: "Tiden kan anges på följande sätt"), see
`until()` for the end each gives:

| digits | form      | meaning                                                     |
|--------|-----------|-------------------------------------------------------------|
| 1      | `days`    | that many days ahead; 0 = until further notice ("tills vidare") |
| 2      | `hours`   | that many hours ahead (01-99; "inledande nolla")            |
| 3      | `minutes` | that many minutes ahead (001-999)                           |
| 4      | `clock`   | time of day HHMM; if passed today, tomorrow                 |
| 6      | `date`    | date YYMMDD (year 20YY)                                     |

`00` hours and `000` minutes are refused: they would end the activity as it starts, and the seed
gives them no meaning (`0` is until further notice, `#24#` is back to available).
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Literal
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from vaxelbox.site.numbers import to_e164

ForwardKind = Literal["always", "no_answer", "busy"]
TimeForm = Literal["days", "hours", "minutes", "clock", "date"]

FORWARD_SERVICES: dict[ForwardKind, str] = {"always": "21", "no_answer": "61", "busy": "67"}
SECONDS_MIN, SECONDS_MAX = 5, 120  # *61*nr*seconds# (Tele2 fixed)
PROFILE_MIN, PROFILE_MAX = 1, 99  # as the site's Activity.number
_FORMS: dict[int, TimeForm] = {1: "days", 2: "hours", 3: "minutes", 4: "clock", 6: "date"}
_FORWARD_KINDS = {service: kind for kind, service in FORWARD_SERVICES.items()}
_EXTENSION = re.compile(r"[1-9][0-9]{1,5}")
_NUMBER = re.compile(r"\+?[0-9]{1,20}")
_SEPARATORS = re.compile(r"[ ().-]")
_SHOWN = 40  # characters of the dialled text quoted in an error; the rest is cut


class StarCodeError(ValueError):
    """A text that starts with `*` or `#` but is not a valid star code; the message says why."""


@dataclass(frozen=True, slots=True)
class ActivityTime:
    """The time argument of `*24*`: the digits as dialled and the form their count gives."""

    digits: str
    form: TimeForm

    def __post_init__(self) -> None:
        """Refuse digits whose count has no form, or whose value has no meaning in their form."""
        if not re.fullmatch(r"[0-9]+", self.digits) or _FORMS.get(len(self.digits)) is None:
            raise StarCodeError(
                f"time {self.digits!r} must be 1 digit (days), 2 (hours), 3 (minutes), 4 (HHMM) or 6 (YYMMDD)"
            )
        if _FORMS[len(self.digits)] != self.form:
            raise StarCodeError(f"time {self.digits!r} is not in the {self.form} form")
        if self.form in ("hours", "minutes") and int(self.digits) == 0:
            raise StarCodeError(
                f"time {self.digits!r} is a length of zero; use 0 for until further notice, "
                "or #24# to end the activity"
            )
        if self.form == "clock" and (int(self.digits[:2]) > 23 or int(self.digits[2:]) > 59):
            raise StarCodeError(f"time {self.digits!r} is not a time of day HHMM (0000 to 2359)")
        if self.form == "date":
            _date_of(self.digits)

    @classmethod
    def of(cls, digits: str) -> "ActivityTime":
        """The time `digits` as dialled, in the form their count gives; StarCodeError if invalid."""
        return cls(digits, _FORMS.get(len(digits), "days"))

    def describe(self) -> str:
        d = self.digits
        match self.form:
            case "days":
                return "until further notice" if d == "0" else f"for {d} day{'s' * (d != '1')}"
            case "hours":
                return f"for {int(d)} h"
            case "minutes":
                return f"for {int(d)} min"
            case "clock":
                return f"until {d[:2]}:{d[2:]}"
            case "date":
                return f"to the end of {_date_of(d).isoformat()}"


@dataclass(frozen=True, slots=True)
class SetForward:
    """`*21*nr#` always, `*61*nr#` / `*61*nr*seconds#` on no answer, `*67*nr#` on busy."""

    kind: ForwardKind
    number: str  # E.164, or an extension as dialled
    seconds: int | None = None  # only for no_answer: ring this long first (5-120)

    @property
    def code(self) -> str:
        delay = f"*{self.seconds}" if self.seconds is not None else ""
        return f"*{FORWARD_SERVICES[self.kind]}*{self.number}{delay}#"

    def describe(self) -> str:
        match self.kind:
            case "always":
                return f"forward all calls to {self.number}"
            case "no_answer":
                after = f" after {self.seconds} s" if self.seconds is not None else ""
                return f"forward unanswered calls to {self.number}{after}"
            case "busy":
                return f"forward calls when busy to {self.number}"


@dataclass(frozen=True, slots=True)
class CancelForward:
    """`#21#`, `#61#`, `#67#`."""

    kind: ForwardKind

    @property
    def code(self) -> str:
        return f"#{FORWARD_SERVICES[self.kind]}#"

    def describe(self) -> str:
        what = {"always": "all calls", "no_answer": "unanswered calls", "busy": "calls when busy"}
        return f"cancel forwarding of {what[self.kind]}"


@dataclass(frozen=True, slots=True)
class ForwardStatus:
    """`*#21#`: is forwarding of all calls on, and where to."""

    kind: Literal["always"] = "always"

    @property
    def code(self) -> str:
        return "*#21#"

    def describe(self) -> str:
        return "ask whether all calls are forwarded"


@dataclass(frozen=True, slots=True)
class SetActivity:
    """`*24*profile#` or `*24*profile*time#`: switch on the activity profile numbered `profile`."""

    profile: int  # 1-99, the site's Activity.number
    time: ActivityTime | None = None  # None: the profile's default length

    @property
    def code(self) -> str:
        return f"*24*{self.profile}" + (f"*{self.time.digits}" if self.time else "") + "#"

    def describe(self) -> str:
        length = self.time.describe() if self.time else "for the profile's default length"
        return f"activate profile {self.profile} {length}"


@dataclass(frozen=True, slots=True)
class ClearActivity:
    """`#24#`: back to available."""

    @property
    def code(self) -> str:
        return "#24#"

    def describe(self) -> str:
        return "end the activity (back to available)"


@dataclass(frozen=True, slots=True)
class GroupLogin:
    """`*75*group#`: log in to the answer group or queue dialled by its number."""

    group: str  # digits as dialled (the group's extension or number)

    @property
    def code(self) -> str:
        return f"*75*{self.group}#"

    def describe(self) -> str:
        return f"log in to group {self.group}"


@dataclass(frozen=True, slots=True)
class GroupLogout:
    """`#75*group#`: log out of the group."""

    group: str

    @property
    def code(self) -> str:
        return f"#75*{self.group}#"

    def describe(self) -> str:
        return f"log out of group {self.group}"


@dataclass(frozen=True, slots=True)
class Pickup:
    """`*80*ext`: answer the call ringing at a colleague (incoming direct calls only)."""

    extension: str  # an extension as dialled, or E.164 (the seed allows a phone number too)

    @property
    def code(self) -> str:
        return f"*80*{self.extension}"

    def describe(self) -> str:
        return f"pick up the call ringing at {self.extension}"


@dataclass(frozen=True, slots=True)
class HiddenCall:
    """`*31*nr`: call `number` without showing the caller id."""

    number: str

    @property
    def code(self) -> str:
        return f"*31*{self.number}"

    def describe(self) -> str:
        return f"call {self.number} with hidden caller id"


@dataclass(frozen=True, slots=True)
class ToVoicemail:
    """`*59*nr#`: send the ongoing call (transferred to this code) straight to `number`'s voicemail."""

    number: str

    @property
    def code(self) -> str:
        return f"*59*{self.number}#"

    def describe(self) -> str:
        return f"send the call to the voicemail of {self.number}"


@dataclass(frozen=True, slots=True)
class Bypass:
    """`*60*nr#`: call `number` past their activity, forwarding and call barring."""

    number: str

    @property
    def code(self) -> str:
        return f"*60*{self.number}#"

    def describe(self) -> str:
        return f"call {self.number} past their activity and forwarding"


StarCode = (
    SetForward
    | CancelForward
    | ForwardStatus
    | SetActivity
    | ClearActivity
    | GroupLogin
    | GroupLogout
    | Pickup
    | HiddenCall
    | ToVoicemail
    | Bypass
)


def parse(dialled: str) -> StarCode | None:
    """The star code in `dialled` (a Request-URI user part), None if it does not start with * or #.

    Raises StarCodeError, its message quoting the code (decoded, cut at 40 characters), when
    the text starts with `*` or `#` but is not a valid code.
    """
    text = unquote(dialled.partition(";")[0])
    if not text.startswith(("*", "#")):
        return None
    try:
        return _parse_code(text)
    except StarCodeError as exc:
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
        raise StarCodeError(f"{shown!r}: {exc}") from None


def _parse_code(text: str) -> StarCode:
    bad = re.sub(r"[0-9*#+ ().-]", "", text)
    if bad:
        raise StarCodeError(f"unexpected character {bad[0]!r} (a code has only digits, * and #)")
    body = text.removesuffix("#")
    if body.startswith("*#"):
        if body != "*#21":
            raise StarCodeError("the only status query is *#21# (forwarding of all calls)")
        return ForwardStatus()
    if "#" in body[1:]:
        raise StarCodeError("# may only start or end a code")
    service, *args = body[1:].split("*")
    if text[0] == "#":
        return _parse_hash(service, args)
    return _parse_star(service, args)


def _parse_hash(service: str, args: list[str]) -> StarCode:
    """`#21#`, `#61#`, `#67#`, `#24#`, `#75*group#`; a dialled `#nr#` is a transfer, refused."""
    if service in _FORWARD_KINDS or service == "24":
        if args:
            raise StarCodeError(f"#{service}# takes nothing after it")
        return ClearActivity() if service == "24" else CancelForward(_FORWARD_KINDS[service])
    if service == "75":
        return GroupLogout(_group(args))
    if _NUMBER.fullmatch(service) and not args:
        raise StarCodeError(
            "#<number># transfers an ongoing call, as keypad tones during the call; it is not a code "
            "to dial (cancel codes: #21#, #61#, #67#, #24#, #75*<group>#)"
        )
    raise StarCodeError("unknown code (cancel codes: #21#, #61#, #67#, #24#, #75*<group>#)")


def _parse_star(service: str, args: list[str]) -> StarCode:
    """`*<service>*<args>#` for every service that starts with *."""
    if service in _FORWARD_KINDS:
        return _parse_forward(_FORWARD_KINDS[service], args)
    if service == "24":
        return _parse_activity(args)
    if service == "75":
        return GroupLogin(_group(args))
    numbered = {"80": Pickup, "31": HiddenCall, "59": ToVoicemail, "60": Bypass}
    if service in numbered:
        return numbered[service](_one_number(service, args))
    raise StarCodeError(
        "unknown code (codes: *21*, *61*, *67*, *24*, *75*, *80*, *31*, *59*, *60*, *#21#, "
        "#21#, #61#, #67#, #24#, #75*)"
    )


def _parse_forward(kind: ForwardKind, args: list[str]) -> SetForward:
    service = FORWARD_SERVICES[kind]
    if kind == "no_answer" and len(args) == 2:
        return SetForward(kind, _number(args[0], service), _seconds(args[1]))
    return SetForward(kind, _one_number(service, args))


def _seconds(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,3}", text) or not SECONDS_MIN <= int(text) <= SECONDS_MAX:
        raise StarCodeError(f"the delay {text!r} must be {SECONDS_MIN} to {SECONDS_MAX} seconds")
    return int(text)


def _parse_activity(args: list[str]) -> SetActivity:
    if not args or len(args) > 2:
        raise StarCodeError("*24* needs a profile number and may take a time: *24*<profile>[*<time>]#")
    profile = args[0]
    if not re.fullmatch(r"[0-9]{1,2}", profile) or not PROFILE_MIN <= int(profile) <= PROFILE_MAX:
        raise StarCodeError(f"profile {profile!r} must be a number {PROFILE_MIN} to {PROFILE_MAX}")
    return SetActivity(int(profile), ActivityTime.of(args[1]) if len(args) == 2 else None)


def _group(args: list[str]) -> str:
    if len(args) != 1 or not re.fullmatch(r"[0-9]{1,15}", args[0]):
        raise StarCodeError("*75* and #75* need the group's number, digits only: *75*<group>#")
    return args[0]


def _one_number(service: str, args: list[str]) -> str:
    if len(args) != 1:
        needs = f"*{service}*<number>" + ("" if service in ("80", "31") else "#")
        raise StarCodeError(f"*{service}* takes one number: {needs}")
    return _number(args[0], service)


def _number(text: str, service: str) -> str:
    """An extension (2-6 digits, not starting with 0) as dialled, else the number in E.164."""
    digits = _SEPARATORS.sub("", text)
    if not digits:
        raise StarCodeError(f"*{service}* needs a number after it")
    if not _NUMBER.fullmatch(digits):
        raise StarCodeError(f"{text!r} is not a number (digits, + only first, at most 20 digits)")
    if _EXTENSION.fullmatch(digits):
        return digits
    try:
        return to_e164(digits)
    except ValueError:
        raise StarCodeError(
            f"{text!r} is neither an extension (2-6 digits, not starting with 0) nor a valid phone number"
        ) from None


def _date_of(digits: str) -> date:
    try:
        return date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:]))
    except ValueError:
        raise StarCodeError(f"time {digits!r} is not a date YYMMDD") from None


def until(time: ActivityTime | None, now: datetime, timezone: str, default_minutes: int) -> datetime | None:
    """When an activity switched on at `now` with `time` ends, in `timezone`; None: until further notice.

    - No time: `default_minutes` after now (the profile's default length: "Om man inte anger någon
      tid alls används den standardlängd som finns angiven på profilen"); 0 = until further notice.
    - Days (`1`-`9`): the same time of day that many calendar days ahead ("x dagar framåt", said
      like "x timmar framåt": a length from now), so across a DST change a day is 23 or 25 h.
      `0`: until further notice.
    - Hours, minutes: that much real time after now (across a DST change too).
    - HHMM: the first moment today the wall clock reads HH:MM; if that is now or passed, the same
      tomorrow ("Om tidpunkten har passerat denna dag menas nästa dag"). A time the clocks skip
      (02:30 on the spring change) is when they jump past it (03:00 CEST); a time they show twice
      (02:30 on the autumn change) is its first showing.
    - YYMMDD: to the end of that day (midnight after it). The seed only says "tolkas som datum";
      an end date is read as "till och med", as Swedish dates on validity usually are, so the
      named day is covered and today's date means the rest of today.

    `now` must be aware. Raises StarCodeError if the date has passed, ValueError for a naive
    `now` or a negative `default_minutes`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if default_minutes < 0:
        raise ValueError(f"default_minutes must be 0 or more, got {default_minutes}")
    zone = ZoneInfo(timezone)
    if time is None:
        return _after(now, timedelta(minutes=default_minutes), zone) if default_minutes else None
    # Compare instants by timestamp: aware datetimes sharing a zone compare by wall clock, which
    # is wrong in the hour the autumn change shows twice.
    instant = now.timestamp()
    today = now.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    match time.form:
        case "days":
            days = int(time.digits)
            return _first_moment(today + timedelta(days=days), zone) if days else None
        case "hours":
            return _after(now, timedelta(hours=int(time.digits)), zone)
        case "minutes":
            return _after(now, timedelta(minutes=int(time.digits)), zone)
        case "clock":
            at = clock_time(int(time.digits[:2]), int(time.digits[2:]))
            end = _first_moment(datetime.combine(today.date(), at), zone)
            if end.timestamp() <= instant:
                end = _first_moment(datetime.combine(today.date() + timedelta(days=1), at), zone)
            return end
        case "date":
            day = _date_of(time.digits)
            end = _first_moment(datetime.combine(day + timedelta(days=1), clock_time()), zone)
            if end.timestamp() <= instant:
                raise StarCodeError(f"the date {day.isoformat()} ({time.digits}) has passed")
            return end


def _after(now: datetime, length: timedelta, zone: ZoneInfo) -> datetime:
    """`length` of real time after `now` (aware arithmetic in one zone would add wall-clock time)."""
    return (now.astimezone(UTC) + length).astimezone(zone)


def _first_moment(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which the wall clock in `zone` reads `wall` (naive) or later."""
    first = wall.replace(tzinfo=zone, fold=0)
    if _wall(first, zone) == wall:
        return first.astimezone(UTC).astimezone(zone)
    # Skipped by a DST jump: fold=1 gives an instant before the jump, fold=0 one after. Find the
    # jump, on whole seconds as zone transitions are: wall(low) < wall <= wall(high).
    low = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = math.ceil(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (
            (middle, high) if _wall(datetime.fromtimestamp(middle, UTC), zone) < wall else (low, middle)
        )
    return datetime.fromtimestamp(high, zone)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """What the wall clock in `zone` reads at `moment` (via UTC: astimezone to its own zone is a no-op)."""
    return moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
