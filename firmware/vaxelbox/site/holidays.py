"""Swedish public holidays (allmänna helgdagar) and de-facto closed days, for any year.

Computed, never typed in: Easter by the Gregorian computus, the rest by the
rules in the Swedish law on public holidays (lag 1989:253). Julafton,
midsommarafton and nyårsafton are not public holidays by law but nearly every
office is closed, so schedules treat them as closed days too.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    name: str
    public: bool  # False for the de-facto closed eves


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 19 * l_) // 433
    month = (h + l_ - 7 * m + 90) // 25
    day = (h + l_ - 7 * m + 33 * month + 19) % 32
    return date(year, month, day)


def _first_weekday_between(start: date, end: date, weekday: int) -> date:
    """The one day in [start, end] (a 7-day window) that falls on `weekday` (Mon=0)."""
    day = start + timedelta(days=(weekday - start.weekday()) % 7)
    assert day <= end
    return day


@cache
def swedish_holidays(year: int) -> tuple[Holiday, ...]:
    """All closed days of `year`, sorted by date."""
    easter = easter_sunday(year)
    midsommardagen = _first_weekday_between(date(year, 6, 20), date(year, 6, 26), 5)
    alla_helgons = _first_weekday_between(date(year, 10, 31), date(year, 11, 6), 5)
    days = [
        Holiday(date(year, 1, 1), "Nyårsdagen", True),
        Holiday(date(year, 1, 6), "Trettondedag jul", True),
        Holiday(easter - timedelta(days=2), "Långfredagen", True),
        Holiday(easter, "Påskdagen", True),
        Holiday(easter + timedelta(days=1), "Annandag påsk", True),
        Holiday(date(year, 5, 1), "Första maj", True),
        Holiday(easter + timedelta(days=39), "Kristi himmelsfärdsdag", True),
        Holiday(easter + timedelta(days=49), "Pingstdagen", True),
        Holiday(date(year, 6, 6), "Sveriges nationaldag", True),
        Holiday(midsommardagen - timedelta(days=1), "Midsommarafton", False),
        Holiday(midsommardagen, "Midsommardagen", True),
        Holiday(alla_helgons, "Alla helgons dag", True),
        Holiday(date(year, 12, 24), "Julafton", False),
        Holiday(date(year, 12, 25), "Juldagen", True),
        Holiday(date(year, 12, 26), "Annandag jul", True),
        Holiday(date(year, 12, 31), "Nyårsafton", False),
    ]
    return tuple(sorted(days, key=lambda h: h.day))


def holiday_on(day: date) -> Holiday | None:
    """The holiday or de-facto closed day falling on `day`, if any."""
    return next((h for h in swedish_holidays(day.year) if h.day == day), None)
