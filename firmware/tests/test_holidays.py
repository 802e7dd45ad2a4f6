"""Swedish holidays are computed for any year, and agree with an independent implementation."""

from datetime import date

import holidays as reference
import pytest
from vaxelbox.site.holidays import easter_sunday, holiday_on, swedish_holidays


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 6, 19), "Midsommarafton"),
        (date(2027, 3, 26), "Långfredagen"),
        (date(2025, 6, 21), "Midsommardagen"),
        (date(2026, 5, 14), "Kristi himmelsfärdsdag"),
        (date(2027, 11, 6), "Alla helgons dag"),
        (date(2025, 11, 1), "Alla helgons dag"),
        (date(2030, 6, 9), "Pingstdagen"),
        (date(2031, 12, 24), "Julafton"),
        (date(2032, 12, 31), "Nyårsafton"),
    ],
)
def test_known_dates(day, name):
    found = holiday_on(day)
    assert found is not None
    assert found.name == name


@pytest.mark.parametrize(
    ("year", "easter"),
    [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)), (2038, date(2038, 4, 25)),
     (2285, date(2285, 3, 22)), (1943, date(1943, 4, 25))],
)  # fmt: skip
def test_easter_including_earliest_and_latest_possible(year, easter):
    assert easter_sunday(year) == easter


def test_ordinary_days_are_not_holidays():
    assert holiday_on(date(2026, 6, 18)) is None
    assert holiday_on(date(2026, 11, 24)) is None


def test_eves_are_closed_but_not_public():
    kinds = {h.name: h.public for h in swedish_holidays(2026)}
    assert kinds["Julafton"] is False
    assert kinds["Midsommarafton"] is False
    assert kinds["Nyårsafton"] is False
    assert kinds["Juldagen"] is True


def test_agrees_with_the_holidays_package_from_2005_to_2100():
    """The current law (since 2005) against python-holidays, public days and de-facto eves apart."""
    for year in range(2005, 2101):  # python-holidays stops at 2100
        ours = swedish_holidays(year)
        public = set(reference.country_holidays("SE", years=year, include_sundays=False))
        eves = set(
            reference.country_holidays("SE", years=year, include_sundays=False, categories=("de_facto",))
        )
        assert {h.day for h in ours if h.public} == public, year
        assert {h.day for h in ours if not h.public} == eves, year
