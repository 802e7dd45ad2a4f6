"""Opening hours in Stockholm time: weekly hours, holidays, temporary periods, DST."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from vaxelbox.site import demo_site, parse_site
from vaxelbox.site.schedule import opening

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture(scope="module")
def kontorstid():
    return demo_site().schedules[0]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM)


@pytest.mark.parametrize(
    ("moment", "is_open", "reason"),
    [
        (local(2026, 11, 24, 10, 0), True, "open: weekly hours 08:00-17:00"),
        (local(2026, 11, 24, 7, 59), False, "closed: outside weekly hours"),
        (local(2026, 11, 24, 17, 0), False, "closed: outside weekly hours"),
        (local(2026, 11, 27, 15, 30), False, "closed: outside weekly hours"),
        (local(2026, 11, 28, 10, 0), False, "closed: outside weekly hours"),
        (local(2026, 6, 19, 10, 0), False, "closed: Midsommarafton"),
        (local(2026, 12, 24, 10, 0), False, "closed: Julafton"),
        (local(2026, 7, 8, 10, 0), True, "open: Sommartider 09:00-15:00"),
        (local(2026, 7, 8, 16, 0), False, "closed: outside Sommartider"),
        (local(2026, 12, 29, 10, 0), False, "closed: Mellandagsstängt"),
    ],
)
def test_demo_office_hours(kontorstid, moment, is_open, reason):
    result = opening(kontorstid, moment, "Europe/Stockholm")
    assert (result.open, result.reason) == (is_open, reason)


def test_moments_in_utc_are_read_in_the_site_time_zone_across_dst(kontorstid):
    # 08:30 local on the Friday before and the Monday after the switch to summer time.
    assert opening(kontorstid, datetime(2026, 3, 27, 7, 30, tzinfo=UTC), "Europe/Stockholm").open
    assert opening(kontorstid, datetime(2026, 3, 30, 6, 30, tzinfo=UTC), "Europe/Stockholm").open
    # 07:30 local the same Friday: not yet open.
    assert not opening(kontorstid, datetime(2026, 3, 27, 6, 30, tzinfo=UTC), "Europe/Stockholm").open


def test_open_until_midnight_and_holidays_can_be_ignored(demo_with):
    text = demo_with("public_holidays = true", "public_holidays = false")
    text = text.replace('fri = ["08:00-15:00"]', 'fri = ["08:00-15:00", "20:00-24:00"]')
    schedule = parse_site(text).schedules[0]
    assert opening(schedule, local(2026, 11, 27, 23, 59), "Europe/Stockholm").open
    # Midsommarafton is a Friday: open, because this schedule ignores holidays.
    assert opening(schedule, local(2026, 6, 19, 10, 0), "Europe/Stockholm").open
