"""application/pidf+xml (RFC 3863) with RPID activities (RFC 4480), for `Event: presence`.

A site's activities (hänvisning) are free-form profiles ("Lunch", "Möte", "Semester"; see
`site.model.Activity`): `rpid_activity` maps an activity's id or name to the RFC 4480 §3.2
activity a phone understands, by its Swedish or English keyword; anything else becomes
`<rpid:other>` with the text as given, so no activity is lost. Being on a call adds
`<rpid:on-the-phone/>`. The activity's end time goes in the `until` attribute of
`<rpid:activities>` (RFC 4480 §3.1, fromUntil). The document's shape follows the RFC 4479 data
model: one <tuple> with the basic status and the note, one <dm:person> with the activities.
"""

import unicodedata
import xml.etree.ElementTree as ET
from datetime import datetime

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
CONTENT_TYPE = "application/pidf+xml"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# RFC 4480 §3.2 activity elements (besides <other>, which carries text, and <unknown>).
RPID_ACTIVITIES = frozenset((
    "appointment", "away", "breakfast", "busy", "dinner", "holiday", "in-transit", "looking-for-work",
    "meal", "meeting", "on-the-phone", "performance", "permanent-absence", "playing", "presentation",
    "shopping", "sleeping", "spectator", "steering", "travel", "tv", "vacation", "working", "worship",
))  # fmt: skip

# Words of a site's activity id or name (casefolded, without diacritics) -> RFC 4480 activity.
ACTIVITY_WORDS = {
    "lunch": "meal", "fika": "meal", "mat": "meal", "frukost": "breakfast", "middag": "dinner",
    "mote": "meeting", "moten": "meeting", "sammantrade": "meeting", "konferens": "meeting",
    "semester": "vacation", "ledig": "vacation", "ledighet": "vacation", "helgdag": "holiday",
    "borta": "away", "ute": "away", "sjuk": "away", "vab": "away", "gatt": "away",
    "resa": "travel", "tjansteresa": "travel", "kundbesok": "appointment", "besok": "appointment",
    "upptagen": "busy", "presentation": "presentation", "pa vag": "in-transit",
}  # fmt: skip


def render_pidf(
    entity: str,
    basic_open: bool,
    activity: str | None = None,
    until: datetime | None = None,
    note: str | None = None,
    on_the_phone: bool = False,
) -> bytes:
    """A PIDF document (RFC 3863 §4) for one presentity, UTF-8.

    entity: the URI the watcher subscribed to. basic_open: <basic>open</basic> (reachable) or
    closed. activity: the site activity's id or name (mapped by `rpid_activity`), None when
    available. until: when the activity ends, timezone-aware (ValueError if naive); written only
    with an activity or on_the_phone. note: human text ("Lunch till 13:00") in the tuple's and
    the person's <note>. on_the_phone: the user has a confirmed call.
    """
    root = ET.Element("presence", {"xmlns": PIDF_NS, "xmlns:dm": DM_NS, "xmlns:rpid": RPID_NS})
    root.set("entity", entity)
    _tuple(root, basic_open, note)
    kinds = _activity_elements(activity, on_the_phone)
    if kinds or note:
        _person(root, kinds, until, note)
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode()


def rpid_activity(activity: str) -> str:
    """The RFC 4480 activity for a site activity id or name: an RFC 4480 name as is
    ("meeting"), else the first known word ("Möte hos kund" -> "meeting"), else "other"."""
    text = activity.strip().lower()
    if text in RPID_ACTIVITIES:
        return text
    plain = _plain(text)
    if plain in ACTIVITY_WORDS:
        return ACTIVITY_WORDS[plain]
    return next((ACTIVITY_WORDS[w] for w in plain.split() if w in ACTIVITY_WORDS), "other")


def _plain(text: str) -> str:
    """Casefolded, without diacritics (å, ä -> a; ö -> o), separators as single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(letters.replace("-", " ").replace("_", " ").split())


def _activity_elements(activity: str | None, on_the_phone: bool) -> list[tuple[str, str | None]]:
    """(RPID element name, text) pairs; text only for <other>."""
    kinds: list[tuple[str, str | None]] = []
    if activity:
        kind = rpid_activity(activity)
        kinds.append((kind, activity.strip() if kind == "other" else None))
    if on_the_phone:
        kinds.append(("on-the-phone", None))
    return kinds


def _tuple(root: ET.Element, basic_open: bool, note: str | None) -> None:
    """RFC 3863 §4.1: <tuple> with <status><basic>; the note after status (schema order)."""
    tuple_el = ET.SubElement(root, "tuple", {"id": "vaxelbox"})
    status = ET.SubElement(tuple_el, "status")
    ET.SubElement(status, "basic").text = "open" if basic_open else "closed"
    if note:
        ET.SubElement(tuple_el, "note").text = note


def _person(
    root: ET.Element, kinds: list[tuple[str, str | None]], until: datetime | None, note: str | None
) -> None:
    """RFC 4479 §4.1 <dm:person> with RFC 4480 <rpid:activities> (`until`, §3.1) and a note."""
    person = ET.SubElement(root, "dm:person", {"id": "p"})
    if kinds:
        activities = ET.SubElement(person, "rpid:activities")
        if until is not None:
            activities.set("until", _datetime(until))
        for name, text in kinds:
            ET.SubElement(activities, f"rpid:{name}").text = text
    if note:
        ET.SubElement(person, "dm:note").text = note


def _datetime(moment: datetime) -> str:
    """xs:dateTime with its UTC offset, seconds precision; ValueError for a naive datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"until must be timezone-aware, got {moment.isoformat()}")
    return moment.isoformat(timespec="seconds")
