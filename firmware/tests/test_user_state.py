"""Users' activities in the store, as local routing reads them."""

import time
from datetime import UTC, datetime

from vaxelbox.local.state import StoredUserState
from vaxelbox.site import demo_site
from vaxelbox.store import Store


def test_an_activity_lasts_until_its_end_and_survives_a_reopen(tmp_path):
    store = Store(tmp_path)
    anna = demo_site().user("anna")
    now = datetime.now(UTC)
    store.users.set_activity("anna", "lunch", time.time() + 60, "test")
    store.close()
    store = Store(tmp_path)  # a restart (or a power cut after the commit) keeps it
    state = StoredUserState(store.users)
    active = state.activity(anna, now)
    assert (active.activity.id, active.activity.forward) == ("lunch", "group:reception")
    assert state.activity(anna, datetime.fromtimestamp(time.time() + 61, UTC)) is None  # ended by itself
    assert store.users.clear_activity("anna") is True
    assert state.activity(anna, now) is None
    assert store.users.clear_activity("anna") is False
    store.close()


def test_until_further_notice_and_a_profile_the_site_no_longer_has(tmp_path):
    store = Store(tmp_path)
    state = StoredUserState(store.users)
    anna = demo_site().user("anna")
    store.users.set_activity("anna", "mote", None, "test")
    assert state.activity(anna, datetime(2030, 1, 1, tzinfo=UTC)).until is None
    store.users.set_activity("anna", "semester", None, "test")  # cecilia's profile, not anna's
    assert state.activity(anna, datetime.now(UTC)) is None
    assert [a.activity for a in store.users.activities()] == ["semester"]
    store.close()
