"""The presence cache's merge rules (issue 11), each classic busy-lamp failure as a test: stuck
blinking lamps, late `early` relighting, a losing fork branch darkening an answered call, a mobile
leg shown idle in an outage, stale cloud documents, and the office and cloud views of one call."""

import pytest
from vaxelbox.presence.cache import PresenceCache
from vaxelbox.presence.dialog_info import DialogInfo, parse, render
from vaxelbox.presence.model import LineDialog, LineState, Party

TRYING, EARLY, CONFIRMED, TERMINATED = (
    LineState.TRYING,
    LineState.EARLY,
    LineState.CONFIRMED,
    LineState.TERMINATED,
)
ANNA = "anna"


def dlg(state, id="c1", call_id="c1", local_tag="desk", remote_tag="caller", **more) -> LineDialog:
    return LineDialog(
        id=id,
        state=state,
        call_id=call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        direction="recipient",
        **more,
    )


def doc(version, *dialogs, full=True) -> DialogInfo:
    return DialogInfo(entity="sip:demo-101@cloud.example.net", version=version, full=full, dialogs=dialogs)


@pytest.fixture
def cache():
    return PresenceCache(max_ringing=200.0, tombstone=600.0)


# -- stuck blinking lamps -------------------------------------------------------------------------


def test_stuck_blinking_lamp_is_cleared(cache):
    """A ringing dialog whose end never came (lost CANCEL/487, PUBLISH race at the cloud) stops
    blinking after max_ringing, and the cloud repeating it in later documents does not restart it."""
    assert cache.office(ANNA, dlg(EARLY), now=0.0)
    cache.cloud(ANNA, doc(1, dlg(EARLY, id="k-1", call_id="c2")), now=0.0)
    cache.cloud(ANNA, doc(2, dlg(EARLY, id="k-1", call_id="c2")), now=150.0)  # repeated, no news
    assert cache.expire(199.0) == set()
    assert cache.line(ANNA) is EARLY
    assert cache.expire(201.0) == {ANNA}
    assert cache.line(ANNA) is TERMINATED
    assert cache.dialogs(ANNA) == []
    assert not cache.cloud(ANNA, doc(3, dlg(EARLY, id="k-1", call_id="c2")), now=250.0)
    assert cache.line(ANNA) is TERMINATED


def test_ringing_that_moves_on_is_not_cleared(cache):
    cache.office(ANNA, dlg(TRYING), now=0.0)
    cache.office(ANNA, dlg(EARLY), now=150.0)  # news: the clock restarts
    assert cache.expire(300.0) == set()
    assert cache.line(ANNA) is EARLY


def test_answered_after_long_ringing_still_shows_busy(cache):
    cache.office(ANNA, dlg(EARLY), now=0.0)
    cache.expire(201.0)
    assert cache.office(ANNA, dlg(CONFIRMED), now=210.0)
    assert cache.line(ANNA) is CONFIRMED


def test_confirmed_call_is_never_expired(cache):
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    assert cache.expire(10_000.0) == set()
    assert cache.line(ANNA) is CONFIRMED


# -- late messages ---------------------------------------------------------------------------------


def test_late_early_after_terminated_never_relights(cache):
    cache.office(ANNA, dlg(EARLY), now=0.0)
    assert cache.office(ANNA, dlg(TERMINATED), now=1.0)
    assert not cache.office(ANNA, dlg(EARLY), now=1.1)
    assert not cache.office(ANNA, dlg(CONFIRMED), now=1.2)  # a late 200 after CANCEL either
    assert cache.line(ANNA) is TERMINATED
    # the cloud: partial documents in order of version, the early one last (PUBLISH race)
    cache.cloud(ANNA, doc(1, dlg(EARLY, id="k-2", call_id="c2"), full=False), now=2.0)
    cache.cloud(ANNA, doc(2, dlg(TERMINATED, id="k-2", call_id="c2"), full=False), now=3.0)
    assert not cache.cloud(ANNA, doc(3, dlg(EARLY, id="k-2", call_id="c2"), full=False), now=3.1)
    assert cache.line(ANNA) is TERMINATED


def test_terminated_before_any_early_still_blocks_the_late_early(cache):
    assert not cache.office(ANNA, dlg(TERMINATED, reason="cancelled"), now=0.0)
    assert not cache.office(ANNA, dlg(EARLY), now=0.1)
    assert cache.line(ANNA) is TERMINATED


def test_tombstone_lasts_its_time_only(cache):
    cache.office(ANNA, dlg(EARLY), now=0.0)
    cache.office(ANNA, dlg(TERMINATED), now=1.0)
    cache.expire(602.0)
    assert cache.office(ANNA, dlg(EARLY), now=603.0)


def test_lower_state_is_a_late_message(cache):
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    assert not cache.office(ANNA, dlg(EARLY), now=0.1)
    assert cache.line(ANNA) is CONFIRMED


def test_new_call_lights_after_previous_ended(cache):
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    cache.office(ANNA, dlg(TERMINATED), now=5.0)
    assert cache.office(ANNA, dlg(EARLY, id="c9", call_id="c9"), now=6.0)
    assert cache.line(ANNA) is EARLY


def test_dialog_without_call_id_has_no_tombstone(cache):
    """Asterisk's dialog id is the extension, the same for every call: a new call must light."""
    cache.cloud(ANNA, doc(1, dlg(EARLY, id="101", call_id=None, local_tag=None, remote_tag=None)), now=0.0)
    cache.cloud(
        ANNA, doc(2, dlg(TERMINATED, id="101", call_id=None, local_tag=None, remote_tag=None)), now=1.0
    )
    assert cache.cloud(
        ANNA, doc(3, dlg(EARLY, id="101", call_id=None, local_tag=None, remote_tag=None)), now=9.0
    )
    assert cache.line(ANNA) is EARLY


# -- forks -----------------------------------------------------------------------------------------


def test_losing_fork_branch_never_darkens_answered_call(cache):
    """Anna's desk phone answers; her softphone's branch is cancelled (487) after the 200."""
    cache.office(ANNA, dlg(EARLY, local_tag="desk"), now=0.0)
    cache.office(ANNA, dlg(EARLY, local_tag="soft"), now=0.1)
    cache.office(ANNA, dlg(CONFIRMED, local_tag="desk"), now=3.0)
    assert not cache.office(ANNA, dlg(TERMINATED, local_tag="soft", reason="cancelled"), now=3.1)
    assert cache.line(ANNA) is CONFIRMED
    assert [d.local_tag for d in cache.dialogs(ANNA)] == ["desk"]
    assert cache.office(ANNA, dlg(TERMINATED, local_tag="desk", reason="remote-bye"), now=60.0)
    assert cache.line(ANNA) is TERMINATED


def test_losing_fork_branch_with_its_own_id_never_darkens_answered_call(cache):
    cache.office(ANNA, dlg(EARLY, id="c1;desk", local_tag="desk"), now=0.0)
    cache.office(ANNA, dlg(EARLY, id="c1;soft", local_tag="soft"), now=0.0)
    cache.office(ANNA, dlg(CONFIRMED, id="c1;desk", local_tag="desk"), now=3.0)
    cache.office(ANNA, dlg(TERMINATED, id="c1;soft", local_tag="soft"), now=3.1)
    assert cache.line(ANNA) is CONFIRMED
    assert len(cache.dialogs(ANNA)) == 1


def test_desk_branch_cancelled_at_office_never_darkens_mobile_answer(cache):
    """The cloud forks Anna's call to her desk (through the office) and her mobile; the mobile
    answers. The office sees only the desk branch end."""
    cache.office(ANNA, dlg(EARLY, local_tag="desk"), now=0.0)
    cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="k-1", local_tag="mobile")), now=4.0)
    cache.office(ANNA, dlg(TERMINATED, local_tag="desk", reason="cancelled"), now=4.1)
    assert cache.line(ANNA) is CONFIRMED
    assert [d.local_tag for d in cache.dialogs(ANNA)] == ["mobile"]


def test_ringing_branch_survives_another_branch_cancel(cache):
    cache.office(ANNA, dlg(EARLY, local_tag="desk"), now=0.0)
    assert not cache.office(ANNA, dlg(TERMINATED, local_tag="soft"), now=1.0)
    assert cache.line(ANNA) is EARLY


# -- outage ----------------------------------------------------------------------------------------


def test_mobile_leg_not_shown_idle_in_outage(cache):
    mobile = dlg(CONFIRMED, id="k-1", call_id="c1", local_tag="mobile")
    ringing = dlg(EARLY, id="k-2", call_id="c2", local_tag="desk2")
    cache.office(ANNA, dlg(TERMINATED, local_tag="desk", reason="cancelled"), now=0.0)
    cache.cloud(ANNA, doc(1, mobile, ringing), now=0.5)
    assert cache.cloud_gone(ANNA, now=10.0)  # the ringing one goes
    assert cache.dialogs(ANNA) == [mobile]
    assert cache.line(ANNA) is CONFIRMED
    assert cache.expire(5_000.0) == set()
    assert cache.line(ANNA) is CONFIRMED


def test_office_calls_follow_office_view_in_outage(cache):
    cache.cloud(ANNA, doc(1), now=0.0)
    cache.cloud_gone(ANNA, now=1.0)
    assert cache.office(ANNA, dlg(EARLY, call_id="c5", id="c5"), now=2.0)
    assert cache.office(ANNA, dlg(CONFIRMED, call_id="c5", id="c5"), now=3.0)
    assert cache.line(ANNA) is CONFIRMED
    assert cache.office(ANNA, dlg(TERMINATED, call_id="c5", id="c5"), now=9.0)
    assert cache.line(ANNA) is TERMINATED


def test_call_ending_in_outage_does_not_stay_busy(cache):
    """A call both views knew, frozen in the cloud's view, ends at the office during the outage."""
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="k-1", local_tag="caller", remote_tag="desk")), now=0.1)
    cache.cloud_gone(ANNA, now=5.0)
    assert cache.office(ANNA, dlg(TERMINATED, reason="local-bye"), now=20.0)
    assert cache.line(ANNA) is TERMINATED


def test_hung_up_call_goes_dark_without_waiting_for_the_cloud(cache):
    """The office relays the BYE: the cloud's copy of that call (Kamailio's pua_dialoginfo sends no
    tags) ends with it, so the lamp goes dark at once, not a cloud round trip later."""
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="padi-1", local_tag=None, remote_tag=None)), now=0.1)
    assert cache.office(ANNA, dlg(TERMINATED, reason="remote-bye"), now=5.0)
    assert cache.line(ANNA) is TERMINATED


def test_cancelled_desk_branch_does_not_end_the_clouds_tagless_copy(cache):
    """Only a BYE ends a tagless cloud copy: a cancelled office branch of a call answered elsewhere
    (the mobile leg) leaves it lit."""
    cache.office(ANNA, dlg(EARLY), now=0.0)
    cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="padi-1", local_tag=None, remote_tag=None)), now=0.1)
    cache.office(ANNA, dlg(TERMINATED, reason="cancelled"), now=1.0)
    assert cache.line(ANNA) is CONFIRMED


def test_cloud_gone_without_cloud_state_changes_nothing(cache):
    assert not cache.cloud_gone("nobody", now=0.0)
    cache.office(ANNA, dlg(EARLY), now=0.0)
    assert not cache.cloud_gone(ANNA, now=1.0)
    assert cache.line(ANNA) is EARLY


# -- cloud documents -------------------------------------------------------------------------------


def test_full_document_replaces_cloud_view(cache):
    a = dlg(CONFIRMED, id="k-a", call_id="ca")
    b = dlg(EARLY, id="k-b", call_id="cb")
    cache.cloud(ANNA, doc(1, a, b), now=0.0)
    assert cache.cloud(ANNA, doc(2, b), now=1.0)
    assert cache.dialogs(ANNA) == [b]
    assert not cache.cloud(ANNA, doc(3, a, full=False), now=1.5)  # left out = ended: no relight
    # after an outage: the frozen confirmed dialog lasts until the new subscription's full document
    cache.cloud(ANNA, doc(4, dlg(CONFIRMED, id="k-c", call_id="cc")), now=2.0)
    cache.cloud_gone(ANNA, now=3.0)
    assert cache.line(ANNA) is CONFIRMED
    assert cache.cloud(ANNA, doc(0), now=40.0)  # versions restart with the new subscription
    assert cache.line(ANNA) is TERMINATED


def test_partial_document_merges(cache):
    cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="k-a", call_id="ca")), now=0.0)
    cache.cloud(ANNA, doc(2, dlg(EARLY, id="k-b", call_id="cb"), full=False), now=1.0)
    assert {d.id for d in cache.dialogs(ANNA)} == {"k-a", "k-b"}


def test_stale_cloud_version_ignored(cache):
    cache.cloud(ANNA, doc(5, dlg(CONFIRMED, id="k-1")), now=0.0)
    assert not cache.cloud(ANNA, doc(4), now=1.0)  # older, arrived late
    assert not cache.cloud(ANNA, doc(5), now=1.1)  # repeated
    assert cache.line(ANNA) is CONFIRMED
    assert cache.cloud(ANNA, doc(6), now=2.0)
    assert cache.line(ANNA) is TERMINATED


def test_kamailio_documents_drive_the_lamp(cache):
    """Bodies as Kamailio's presence_dialoginfo renders them, through parse: ringing, answered,
    then its dummy terminated dialog once the call is over."""
    ringing = dlg(EARLY, id="u-1", call_id="c1", local=Party("sip:demo-101@cloud.example.net"))
    for version, dialogs in ((1, [ringing]), (2, [dlg(CONFIRMED, id="u-1", call_id="c1")])):
        cache.cloud(ANNA, parse(render("sip:demo-101@cloud.example.net", version, dialogs)), now=version)
        assert cache.line(ANNA) is dialogs[0].state
    dummy = dlg(
        TERMINATED, id="615293b33c62dec073e05d9421e9f48b", call_id=None, local_tag=None, remote_tag=None
    )
    assert cache.cloud(ANNA, doc(3, dummy), now=3.0)
    assert cache.line(ANNA) is TERMINATED


# -- merging the two views -------------------------------------------------------------------------


def test_office_and_cloud_views_of_same_call_merge_to_one_entry(cache):
    caller = Party("sip:+46701740605@cloud.example.net")
    cache.office(ANNA, dlg(EARLY, id="c1", remote=caller), now=0.0)
    assert cache.cloud(ANNA, doc(1, dlg(CONFIRMED, id="kamailio-uuid")), now=0.2)
    (merged,) = cache.dialogs(ANNA)
    assert (merged.id, merged.state) == ("kamailio-uuid", CONFIRMED)  # the higher state wins
    cache.office(ANNA, dlg(CONFIRMED, id="c1", remote=caller), now=0.3)
    (merged,) = cache.dialogs(ANNA)
    assert (merged.id, merged.remote) == ("c1", caller)  # a tie: the office's own view
    assert not cache.cloud(ANNA, doc(2), now=1.0)  # the cloud says ended; the office still sees it
    assert cache.line(ANNA) is CONFIRMED
    assert cache.office(ANNA, dlg(TERMINATED, id="c1"), now=9.0)
    assert cache.dialogs(ANNA) == []


def test_users_are_separate(cache):
    cache.office(ANNA, dlg(CONFIRMED), now=0.0)
    assert cache.line("bjorn") is TERMINATED
    assert cache.dialogs("bjorn") == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_ringing"):
        PresenceCache(max_ringing=0)
