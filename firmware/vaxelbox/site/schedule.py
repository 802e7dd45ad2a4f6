"""Is a schedule open at a given moment? Evaluated in the site's time zone."""

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from vaxelbox.site.holidays import holiday_on
from vaxelbox.site.model import Schedule


@dataclass(frozen=True, slots=True)
class Opening:
    open: bool
    reason: str


def opening(schedule: Schedule, at: datetime, timezone: str) -> Opening:
    """Whether `schedule` is open at the aware moment `at`, and why.

    Precedence: a temporary closure, then a holiday, then temporary hours,
    then the weekly hours.
    """
    local = at.astimezone(ZoneInfo(timezone))
    day = local.date()
    period = next((t for t in schedule.temporary if t.first <= day <= t.last), None)
    if period and period.weekly is None:
        return Opening(False, f"closed: {period.reason or 'temporary closure'}")
    if schedule.public_holidays and (holiday := holiday_on(day)):
        return Opening(False, f"closed: {holiday.name}")
    weekly = period.weekly if period and period.weekly else schedule.weekly
    label = (period.reason or "temporary hours") if period else "weekly hours"
    now = local.time()
    for span in weekly.for_weekday(day.weekday()):
        start, end = (_clock(t) for t in span.split("-"))
        if start <= now and (end is None or now < end):
            return Opening(True, f"open: {label} {span}")
    return Opening(False, f"closed: outside {label}")


def _clock(text: str) -> time | None:
    """A clock time; None stands for 24:00, the end of the day."""
    return None if text == "24:00" else time.fromisoformat(text)
