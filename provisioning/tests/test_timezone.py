"""The POSIX rule handed to phones gives the same local time as the tz database, in any year."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from phoneprov.timezone import TimeZoneError, TimeZoneRule, Transition, parse_posix, zone_rule

ZONES = [
    "Europe/Stockholm",
    "Europe/Helsinki",
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "UTC",
]


def _nth_weekday(year: int, t: Transition) -> date:
    first = date(year, t.month, 1)
    day = first + timedelta(days=(t.weekday - (first.isoweekday() % 7)) % 7)
    day += timedelta(weeks=t.week - 1)
    while day.month != t.month:  # week 5 means the last one
        day -= timedelta(weeks=1)
    return day


def _offset(rule: TimeZoneRule, instant: datetime) -> int:
    """UTC offset at `instant` as a phone computes it from the rule alone."""
    if rule.dst is None:
        return rule.utc_offset
    year = instant.year
    start = datetime.combine(_nth_weekday(year, rule.dst.start), datetime.min.time(), UTC)
    start += timedelta(seconds=rule.dst.start.time - rule.utc_offset)
    end = datetime.combine(_nth_weekday(year, rule.dst.end), datetime.min.time(), UTC)
    end += timedelta(seconds=rule.dst.end.time - rule.utc_offset - rule.dst.delta)
    summer = start <= instant < end if start < end else not (end <= instant < start)
    return rule.utc_offset + (rule.dst.delta if summer else 0)


@pytest.mark.parametrize("zone", ZONES)
def test_rule_matches_tz_database_every_six_hours_for_fifteen_years(zone):
    rule = zone_rule(zone)
    tz = ZoneInfo(zone)
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    while instant.year < 2041:
        expected = instant.astimezone(tz).utcoffset()
        assert _offset(rule, instant) == expected.total_seconds(), f"{zone} at {instant}"
        instant += timedelta(hours=6)


def test_stockholm_fields_are_the_eu_rule():
    rule = zone_rule("Europe/Stockholm")
    assert rule.posix == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert (rule.std_abbr, rule.utc_offset, rule.utc_offset_hours) == ("CET", 3600, "+1")
    assert rule.dst is not None
    assert (rule.dst.start.month, rule.dst.start.week, rule.dst.start.weekday, rule.dst.start.hour) == (
        3,
        5,
        0,
        2,
    )
    assert (rule.dst.end.month, rule.dst.end.week, rule.dst.end.weekday, rule.dst.end.hour) == (10, 5, 0, 3)


def test_half_hour_zone_and_unknown_zone():
    assert zone_rule("Asia/Kolkata").utc_offset_hours == "+5:30"
    with pytest.raises(TimeZoneError, match="unknown time zone"):
        zone_rule("Europe/Atlantis")
    with pytest.raises(TimeZoneError, match="only M-form"):
        parse_posix("x", "EST5EDT,J60,J300")
