"""PIDF with RPID activities (RFC 3863, RFC 4479, RFC 4480): the document parses back with
ElementTree, in the right namespaces, with the site's activities mapped to RFC 4480 ones."""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from vaxelbox.presence.pidf import (
    ACTIVITY_WORDS,
    DM_NS,
    PIDF_NS,
    RPID_ACTIVITIES,
    RPID_NS,
    render_pidf,
    rpid_activity,
)

P, DM, RP = "{" + PIDF_NS + "}", "{" + DM_NS + "}", "{" + RPID_NS + "}"
STOCKHOLM = ZoneInfo("Europe/Stockholm")


def _parse(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


def _activities(root: ET.Element) -> ET.Element:
    found = root.find(f"{DM}person/{RP}activities")
    assert found is not None
    return found


def test_available_user_is_open_tuple_without_person():
    root = _parse(render_pidf("sip:101@vaxelbox.lan", basic_open=True))
    assert root.tag == P + "presence"
    assert root.get("entity") == "sip:101@vaxelbox.lan"
    assert root.findtext(f"{P}tuple/{P}status/{P}basic") == "open"
    assert root.find(f"{DM}person") is None


def test_lunch_until_one_with_note():
    until = datetime(2024, 5, 30, 13, 0, tzinfo=STOCKHOLM)
    body = render_pidf("sip:101@vaxelbox.lan", True, "lunch", until, "Lunch till 13:00", False)
    root = _parse(body)
    activities = _activities(root)
    assert [child.tag for child in activities] == [RP + "meal"]
    assert activities.get("until") == "2024-05-30T13:00:00+02:00"
    assert datetime.fromisoformat(activities.get("until")) == until
    assert root.findtext(f"{P}tuple/{P}note") == "Lunch till 13:00"
    assert root.findtext(f"{DM}person/{DM}note") == "Lunch till 13:00"


def test_on_the_phone_in_a_meeting_lists_both_activities():
    root = _parse(render_pidf("sip:101@x", True, "Möte", None, None, on_the_phone=True))
    activities = _activities(root)
    assert [child.tag for child in activities] == [RP + "meeting", RP + "on-the-phone"]
    assert activities.get("until") is None


def test_on_the_phone_alone():
    activities = _activities(_parse(render_pidf("sip:101@x", True, on_the_phone=True)))
    assert [child.tag for child in activities] == [RP + "on-the-phone"]


def test_unknown_activity_becomes_other_with_its_name():
    root = _parse(render_pidf("sip:101@x", False, "Kurs i Göteborg <heldag>"))
    assert root.findtext(f"{P}tuple/{P}status/{P}basic") == "closed"
    (other,) = _activities(root)
    assert (other.tag, other.text) == (RP + "other", "Kurs i Göteborg <heldag>")


def test_namespaces_declared_once_on_root():
    body = render_pidf("sip:101@x", True, "semester", datetime(2024, 7, 1, tzinfo=UTC), "Semester")
    head = body.split(b">", 2)[1]
    for ns in (PIDF_NS, DM_NS, RPID_NS):
        assert body.count(f'"{ns}"'.encode()) == 1
        assert f'"{ns}"'.encode() in head


def test_utc_until_keeps_its_offset():
    activities = _activities(
        _parse(render_pidf("sip:1@x", True, "vacation", datetime(2024, 7, 1, 8, tzinfo=UTC)))
    )
    assert activities.get("until") == "2024-07-01T08:00:00+00:00"


def test_naive_until_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        render_pidf("sip:1@x", True, "lunch", datetime(2024, 7, 1, 8), None, False)


@pytest.mark.parametrize(
    ("activity", "kind"),
    [
        ("lunch", "meal"),  # demo site ids
        ("mote", "meeting"),
        ("semester", "vacation"),
        ("Lunch", "meal"),  # demo site names
        ("Möte", "meeting"),
        ("Semester", "vacation"),
        ("Möte hos kund", "meeting"),
        ("tjänsteresa", "travel"),
        ("Sjuk", "away"),
        ("meeting", "meeting"),  # RFC 4480 names pass through
        ("on-the-phone", "on-the-phone"),
        ("in-transit", "in-transit"),
        ("Kurs", "other"),
    ],
)
def test_site_activities_map_to_rpid(activity, kind):
    assert rpid_activity(activity) == kind


def test_every_mapped_word_is_an_rfc4480_activity():
    assert set(ACTIVITY_WORDS.values()) <= RPID_ACTIVITIES


def test_until_with_other_offset():
    tz = timezone(timedelta(hours=-5))
    activities = _activities(
        _parse(render_pidf("sip:1@x", True, "away", datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz)))
    )
    assert activities.get("until") == "2024-01-02T03:04:05-05:00"
