"""The miss budget: enumeration trips it, back-off doubles, quiet sources are forgiven."""

from phoneprov.budget import MissBudget


def test_budget_trips_after_per_minute_misses_and_backs_off_doubling():
    budget = MissBudget(per_minute=5, first_backoff=60, max_backoff=600, forgive_after=3600)
    now = 1000.0
    assert [budget.miss("192.0.2.9", now + i) for i in range(5)] == [0.0] * 5
    assert budget.miss("192.0.2.9", now + 5) == 60
    assert budget.blocked_for("192.0.2.9", now + 6) > 58
    assert budget.blocked_for("192.0.2.10", now + 6) == 0  # another source is not punished
    now += 70
    assert budget.blocked_for("192.0.2.9", now) == 0
    for i in range(5):
        budget.miss("192.0.2.9", now + i)
    assert budget.miss("192.0.2.9", now + 5) == 120  # second trip: twice as long
    now += 200
    for _ in range(3):
        for i in range(6):
            budget.miss("192.0.2.9", now + i)
        now += 700
    assert budget.blocked_for("192.0.2.9", now - 700 + 10) <= 600  # capped


def test_misses_spread_over_minutes_never_trip_and_quiet_sources_are_forgiven():
    budget = MissBudget(per_minute=5, first_backoff=60, forgive_after=600)
    for minute in range(30):
        for i in range(5):
            assert budget.miss("192.0.2.9", minute * 60.0 + i) == 0.0
    for i in range(6):
        budget.miss("192.0.2.8", 10_000 + i)
    for i in range(6):
        budget.miss("192.0.2.8", 10_100 + i)  # second trip: 120 s
    assert budget.blocked_for("192.0.2.8", 10_106) > 100
    later = 10_106 + 120 + 700
    for i in range(6):
        last = budget.miss("192.0.2.8", later + i)
    assert last == 60  # forgiven: back to the first back-off
