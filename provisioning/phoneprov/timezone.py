"""A time zone as phones understand it: the POSIX TZ rule, which stays right in every year.

Phones cannot read the tz database, so vendors take either a POSIX string
(`CET-1CEST,M3.5.0,M10.5.0/3`) or the same rule in fields (month, week of
month, weekday, hour). Both come from the TZif file's footer (RFC 8536),
the rule the tz database itself uses beyond its last transition.
"""

import re
from dataclasses import dataclass
from importlib import resources

_OFFSET = r"[+-]?\d{1,2}(?::\d{2}){0,2}"
_ABBR = r"[A-Za-z]{3,}|<[^>]+>"
_RULE = re.compile(
    rf"(?P<std>{_ABBR})(?P<std_offset>{_OFFSET})"
    rf"(?:(?P<dst>{_ABBR})(?P<dst_offset>{_OFFSET})?"
    rf",M(?P<start>\d+\.\d\.\d)(?:/(?P<start_time>{_OFFSET}))?"
    rf",M(?P<end>\d+\.\d\.\d)(?:/(?P<end_time>{_OFFSET}))?)?"
)


class TimeZoneError(ValueError):
    pass


@dataclass(frozen=True)
class Transition:
    """A DST change: the `week`th (5 = last) `weekday` (0 = Sunday) of `month`, at local `time`."""

    month: int
    week: int
    weekday: int
    time: int  # seconds after local midnight

    @property
    def hour(self) -> int:
        return self.time // 3600

    @property
    def minute(self) -> int:
        return self.time % 3600 // 60


@dataclass(frozen=True)
class Dst:
    abbr: str
    delta: int  # seconds added in summer
    start: Transition
    end: Transition


@dataclass(frozen=True)
class TimeZoneRule:
    name: str
    posix: str
    std_abbr: str
    utc_offset: int  # seconds east of UTC in standard time
    dst: Dst | None

    @property
    def utc_offset_hours(self) -> str:
        sign = "-" if self.utc_offset < 0 else "+"
        hours, rest = divmod(abs(self.utc_offset), 3600)
        return f"{sign}{hours}" + (f":{rest // 60:02d}" if rest else "")


def zone_rule(name: str) -> TimeZoneRule:
    """The rule of an IANA zone, e.g. `Europe/Stockholm`."""
    return parse_posix(name, posix_string(name))


def posix_string(name: str) -> str:
    try:
        data = resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()
    except (FileNotFoundError, IsADirectoryError, ModuleNotFoundError):
        raise TimeZoneError(f"unknown time zone {name!r}") from None
    if not data.startswith(b"TZif") or data[4:5] < b"2":
        raise TimeZoneError(f"{name}: no POSIX rule in its TZif file (version 1)")
    return data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("ascii")


def parse_posix(name: str, posix: str) -> TimeZoneRule:
    match = _RULE.fullmatch(posix)
    if not match:
        raise TimeZoneError(f"{name}: cannot use the rule {posix!r} (only M-form DST rules are supported)")
    # POSIX offsets are west of UTC: "CET-1" is one hour east.
    std_offset = -_seconds(match["std_offset"])
    dst = None
    if match["dst"]:
        dst_offset = -_seconds(match["dst_offset"]) if match["dst_offset"] else std_offset + 3600
        dst = Dst(
            abbr=match["dst"].strip("<>"),
            delta=dst_offset - std_offset,
            start=_transition(match["start"], match["start_time"]),
            end=_transition(match["end"], match["end_time"]),
        )
    return TimeZoneRule(name, posix, match["std"].strip("<>"), std_offset, dst)


def _transition(rule: str, time: str | None) -> Transition:
    month, week, weekday = (int(x) for x in rule.split("."))
    return Transition(month, week, weekday, _seconds(time) if time else 7200)


def _seconds(offset: str) -> int:
    sign = -1 if offset.startswith("-") else 1
    parts = [int(p) for p in offset.lstrip("+-").split(":")] + [0, 0]
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2])
