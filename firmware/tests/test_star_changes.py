"""What each state-changing star code does to a user's state, and the journal, without sockets."""

from datetime import UTC, datetime

import pytest
from vaxelbox.local.changes import apply, is_change
from vaxelbox.local.plan import Ring
from vaxelbox.local.routing import Caller, plan_call
from vaxelbox.local.star_codes import parse
from vaxelbox.local.state import StoredUserState
from vaxelbox.site import demo_site
from vaxelbox.store import Store

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday, office hours


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    yield store
    store.close()


def dial(store, user_id: str, code: str):
    site = demo_site()
    return apply(parse(code), site.user(user_id), site, store.users, NOW, origin=code)


@pytest.mark.parametrize(
    ("code", "kind", "target"),
    [
        ("*21*102#", "always", "user:bjorn"),
        ("*21*0701740650#", "always", "tel:+46701740650"),
        ("*67*200#", "busy", "group:ekonomi"),
        ("*61*102*15#", "no_answer", "user:bjorn"),
    ],
)
def test_forwards_set_by_code_override_the_site(store, code, kind, target):
    assert dial(store, "anna", code).done
    forwards = StoredUserState(store.users).forwards(demo_site().user("anna"))
    assert getattr(forwards, kind) == target
    if code.startswith("*61*"):
        assert forwards.no_answer_after == 15


def test_cancelling_a_forward_overrides_the_sites_default_too(store):
    assert demo_site().user("fredrik").forwards.always == "user:anna"
    assert dial(store, "fredrik", "#21#").text == "forward always off"
    assert StoredUserState(store.users).forwards(demo_site().user("fredrik")).always is None
    plan = plan_call(
        demo_site(), "301", Caller("anna", None), NOW, StoredUserState(store.users), lambda u: True
    )
    assert isinstance(plan, Ring)
    assert plan.users == ("fredrik",)  # rings fredrik himself now


def test_status_query_says_on_or_off(store):
    assert not dial(store, "anna", "*#21#").done
    dial(store, "anna", "*21*102#")
    assert dial(store, "anna", "*#21#").text == "forward always is on, to user:bjorn"


def test_an_unknown_extension_is_refused(store):
    refused = dial(store, "anna", "*21*999#")
    assert (refused.done, refused.status) == (False, 404)


def test_activity_by_profile_number_with_the_profiles_default_and_an_unknown_profile(store):
    assert dial(store, "anna", "*24*1#").text.startswith("Lunch until 2026-11-30T12:00")  # 60 min, Stockholm
    assert StoredUserState(store.users).activity(demo_site().user("anna"), NOW).activity.id == "lunch"
    assert (dial(store, "anna", "*24*9#").status, dial(store, "anna", "#24#").text) == (404, "available")


def test_group_membership_decides_log_in(store):
    assert dial(store, "cecilia", "#75*200#").text == "logged out of Ekonomi"
    assert store.users.logged_in("ekonomi", "cecilia") is False
    refused = dial(store, "anna", "*75*200#")  # anna is not in Ekonomi: the seed says "not active"
    assert (refused.done, refused.status, refused.text) == (False, 403, "not active")


def test_which_codes_are_changes():
    assert [is_change(parse(c)) for c in ("*21*102#", "#75*200#", "*24*1#", "*#21#", "*80*102", "*31*102")] == [
        True, True, True, False, False, False,
    ]  # fmt: skip


def test_the_journal_keeps_order_and_each_attempt(tmp_path):
    store = Store(tmp_path)
    first = store.journal.add("anna", "*21*102#", "forward always to 102")
    second = store.journal.add("anna", "#21#", "forward always off")
    store.journal.attempted(first.id, "503 Service Unavailable", "pending")
    store.journal.attempted(first.id, "200 OK", "replayed")
    store.close()
    store = Store(tmp_path)  # reopened: nothing lost
    assert [e.code for e in store.journal.pending()] == ["#21#"]
    replayed = store.journal.entries()[0]
    assert (replayed.state, replayed.attempts, replayed.answer) == ("replayed", 2, "200 OK")
    assert replayed.replayed_at is not None
    assert second.id > first.id
    store.close()
