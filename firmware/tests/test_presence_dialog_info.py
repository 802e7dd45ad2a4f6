"""RFC 4235 dialog-info documents: what the real notifiers send parses, ours round-trips, bad input
is refused with a message that says what is wrong, and entity expansion never happens."""

import time
import xml.etree.ElementTree as ET

import pytest
from vaxelbox.presence.dialog_info import NS, DialogInfoError, fits, parse, render
from vaxelbox.presence.model import LineDialog, LineState, Party

Q = "{" + NS + "}"

# Kamailio presence_dialoginfo's NOTIFY, aggregated from two pua_dialoginfo PUBLISHes
# (include_callid, include_tags, include_localremote and attribute_display on, the module's
# defaults apart from the last): default namespace, attributes in build_dialoginfo's order, the
# display name on <target> (parse_uri's user part), remote before local, libxml's indentation.
KAMAILIO = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="7" state="full" entity="sip:demo-101@cloud.example.net">
  <dialog id="c0a8e1f2-9d4b-4a71-8f3e-2b1d6c5a7e90" call-id="5d2f7a3c1b9e4d08@192.0.2.20" local-tag="as6f1e2d3c" remote-tag="1928301774" direction="recipient">
    <state>confirmed</state>
    <remote>
      <identity>sip:+46701740605@cloud.example.net</identity>
      <target display="+46701740605" uri="sip:+46701740605@cloud.example.net"/>
    </remote>
    <local>
      <identity>sip:demo-101@cloud.example.net</identity>
      <target display="demo-101" uri="sip:demo-101@192.0.2.40:5060;transport=udp"/>
    </local>
  </dialog>
  <dialog id="7b3e9a10-44c2-4f0d-9e6b-0a1f2c3d4e5f" call-id="e8a1@198.51.100.7" local-tag="b7c1" direction="initiator">
    <state>early</state>
    <remote>
      <identity>sip:demo-102@cloud.example.net</identity>
      <target uri="sip:demo-102@cloud.example.net"/>
    </remote>
    <local>
      <identity>sip:demo-101@cloud.example.net</identity>
      <target uri="sip:demo-101@cloud.example.net"/>
    </local>
  </dialog>
</dialog-info>
"""

# presence_dialoginfo with force_dummy_dialog and no PUBLISH left: the dummy body has no
# namespace of its own and no call-id; it lands inside the aggregated, namespaced root.
KAMAILIO_DUMMY = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="8" state="full" entity="sip:demo-101@cloud.example.net">
  <dialog id="615293b33c62dec073e05d9421e9f48b" direction="recipient">
    <state>terminated</state>
  </dialog>
</dialog-info>
"""

# Asterisk res_pjsip_dialog_info_body_generator while the extension rings: the dialog id is the
# extension, no call-id or tags, <state> written after <remote>/<local>, display on <identity>.
ASTERISK_RINGING = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:101@192.0.2.10:5060">
 <dialog id="101" direction="recipient">
  <remote>
   <identity display="Kund AB">sip:0701740605@192.0.2.10</identity>
   <target uri="sip:0701740605@192.0.2.10"/>
  </remote>
  <local>
   <identity display="Anna">sip:101@192.0.2.10</identity>
   <target uri="sip:101@192.0.2.10:5060"/>
  </local>
  <state>early</state>
 </dialog>
</dialog-info>
"""

# Asterisk for an extension on hold: <local> has only a target with +sip.rendering=no.
ASTERISK_ONHOLD = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:101@192.0.2.10:5060">
 <dialog id="101">
  <state>confirmed</state>
  <local>
   <target uri="sip:101@192.0.2.10:5060">
    <param pname="+sip.rendering" pvalue="no"/>
   </target>
  </local>
 </dialog>
</dialog-info>
"""

# FreeSWITCH (sofia_presence): no whitespace indentation, params under <target>.
FREESWITCH = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="12" state="full" entity="sip:1001@192.0.2.30">
<dialog id="0f6c2b9e-1d3a-4e5f-8a7b-9c0d1e2f3a4b" direction="recipient">
<state>confirmed</state>
<local>
<identity display="1001">sip:1001@192.0.2.30</identity>
<target uri="sip:1001@192.0.2.30">
<param pname="+sip.rendering" pvalue="yes"/>
</target>
</local>
<remote>
<identity display="Bob">sip:1002@192.0.2.30</identity>
<target uri="sip:**1001@192.0.2.30"/>
</remote>
</dialog>
</dialog-info>
"""

# A prefixed document (as some hosted PBXs write it) with a vendor extension element.
PREFIXED = b"""<?xml version="1.0" encoding="UTF-8"?>
<di:dialog-info xmlns:di="urn:ietf:params:xml:ns:dialog-info" xmlns:sa="urn:ietf:params:xml:ns:sa-dialog-info" version="4" state="partial" entity="sip:101@example.net">
  <di:dialog id="d1" call-id="cid-1" local-tag="lt" remote-tag="rt" direction="initiator">
    <sa:exclusive>false</sa:exclusive>
    <di:state event="remote-bye" code="200">terminated</di:state>
  </di:dialog>
</di:dialog-info>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:101@example.net">
 <dialog id="&lol9;"><state>early</state></dialog>
</dialog-info>
"""

ANNA = LineDialog(
    id="a84b4c76e66710-1",
    state=LineState.EARLY,
    call_id="a84b4c76e66710@pc33.atlanta.example.com",
    local_tag="1928301774",
    remote_tag="a6c85cf",
    direction="recipient",
    local=Party("sip:101@office.example.net", "Anna Lindqvist", "sip:101@192.168.1.21:5060"),
    remote=Party("sip:+46701740605@cloud.example.net", "Kund & Co <AB>", "sip:+46701740605@192.0.2.9"),
)


def test_kamailio_notify_parses_with_tags_for_pickup():
    info = parse(KAMAILIO)
    assert (info.entity, info.version, info.full) == ("sip:demo-101@cloud.example.net", 7, True)
    confirmed, early = info.dialogs
    assert confirmed == LineDialog(
        id="c0a8e1f2-9d4b-4a71-8f3e-2b1d6c5a7e90",
        state=LineState.CONFIRMED,
        call_id="5d2f7a3c1b9e4d08@192.0.2.20",
        local_tag="as6f1e2d3c",
        remote_tag="1928301774",
        direction="recipient",
        local=Party(
            "sip:demo-101@cloud.example.net", "demo-101", "sip:demo-101@192.0.2.40:5060;transport=udp"
        ),
        remote=Party(
            "sip:+46701740605@cloud.example.net", "+46701740605", "sip:+46701740605@cloud.example.net"
        ),
    )
    assert (early.state, early.direction, early.remote_tag) == (LineState.EARLY, "initiator", None)


def test_kamailio_dummy_dialog_is_an_idle_terminated_dialog():
    (dummy,) = parse(KAMAILIO_DUMMY).dialogs
    assert (dummy.state, dummy.call_id, dummy.direction) == (LineState.TERMINATED, None, "recipient")


def test_asterisk_ringing_state_after_parties():
    info = parse(ASTERISK_RINGING)
    (dialog,) = info.dialogs
    assert (dialog.id, dialog.state, dialog.call_id) == ("101", LineState.EARLY, None)
    assert dialog.remote == Party("sip:0701740605@192.0.2.10", "Kund AB", "sip:0701740605@192.0.2.10")
    assert dialog.local == Party("sip:101@192.0.2.10", "Anna", "sip:101@192.0.2.10:5060")


def test_asterisk_onhold_local_target_only():
    (dialog,) = parse(ASTERISK_ONHOLD).dialogs
    assert dialog.state is LineState.CONFIRMED
    assert dialog.local == Party("sip:101@192.0.2.10:5060", None, "sip:101@192.0.2.10:5060")
    assert dialog.remote is None


def test_freeswitch_shape():
    (dialog,) = parse(FREESWITCH).dialogs
    assert dialog.state is LineState.CONFIRMED
    assert dialog.remote == Party("sip:1002@192.0.2.30", "Bob", "sip:**1001@192.0.2.30")


def test_prefixed_partial_document_with_vendor_extension():
    info = parse(PREFIXED)
    assert (info.full, info.version) == (False, 4)
    (dialog,) = info.dialogs
    assert (dialog.state, dialog.reason, dialog.call_id) == (LineState.TERMINATED, "remote-bye", "cid-1")
    assert (dialog.local_tag, dialog.remote_tag, dialog.direction) == ("lt", "rt", "initiator")


def test_empty_document_is_no_dialogs():
    info = parse(
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:a@b"/>'
    )
    assert info.dialogs == ()


def test_round_trip_full():
    ended = LineDialog(id="x", state=LineState.TERMINATED, call_id="c2", reason="cancelled")
    body = render("sip:101@vaxelbox.lan", 5, [ANNA, ended])
    info = parse(body)
    assert (info.entity, info.version, info.full) == ("sip:101@vaxelbox.lan", 5, True)
    assert info.dialogs == (ANNA, ended)


def test_render_is_rfc4235_shaped():
    root = ET.fromstring(render("sip:101@vaxelbox.lan", 0, [ANNA]))
    assert root.tag == Q + "dialog-info"
    assert root.attrib == {"version": "0", "state": "full", "entity": "sip:101@vaxelbox.lan"}
    (dialog,) = root
    assert [child.tag for child in dialog] == [Q + "state", Q + "local", Q + "remote"]
    assert dialog.get("call-id") == ANNA.call_id
    assert dialog.find(f"{Q}remote/{Q}identity").get("display") == "Kund & Co <AB>"


def test_render_without_dialogs_is_idle_document():
    info = parse(render("sip:102@vaxelbox.lan", 9, []))
    assert (info.version, info.dialogs) == (9, ())


def test_render_rejects_negative_version():
    with pytest.raises(ValueError, match="non-negative"):
        render("sip:a@b", -1, [])


def test_trim_keeps_one_dialog_with_highest_state_and_tags():
    held = LineDialog(id="h", state=LineState.CONFIRMED, call_id="held@x", local_tag="l1", remote_tag="r1")
    body = render("sip:101@vaxelbox.lan", 3, [ANNA, held], trim=True)
    (dialog,) = parse(body).dialogs
    assert dialog == held
    assert b"<local>" not in body


def test_trim_is_small_for_typical_ids():
    long_ids = LineDialog(
        id="0f6c2b9e-1d3a-4e5f-8a7b-9c0d1e2f3a4b",
        state=LineState.CONFIRMED,
        call_id="5d2f7a3c1b9e4d08a1b2c3d4e5f60718@192.168.100.200",
        local_tag="as6f1e2d3c4b5a6978",
        remote_tag="1928301774-5566778899",
        direction="recipient",
        local=ANNA.local,
        remote=ANNA.remote,
    )
    full = render("sip:101@office.example.net", 4294967295, [long_ids, ANNA] * 4)
    trimmed = render("sip:101@office.example.net", 4294967295, [long_ids, ANNA] * 4, trim=True)
    assert len(trimmed) < 500 < len(full)
    assert fits(trimmed)
    assert not fits(full)
    assert parse(trimmed).dialogs[0].remote_tag == "1928301774-5566778899"


def test_fits_boundary():
    assert fits(b"x" * 700)
    assert not fits(b"x" * 701)
    assert fits(b"x" * 1200, limit=1200)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty document"),
        (b"<dialog-info", "not well-formed XML"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>', "expected dialog-info"),
        (
            b'<dialog-info xmlns="urn:example:other" version="1" state="full" entity="x"/>',
            "expected dialog-info",
        ),
        (b'<dialog-info state="full" entity="sip:a@b"/>', "no version attribute"),
        (b'<dialog-info version="-1" state="full" entity="sip:a@b"/>', "'-1' is not a non-negative integer"),
        (b'<dialog-info version="1" state="some" entity="sip:a@b"/>', "state is 'some'"),
        (b'<dialog-info version="1" state="full"/>', "no entity attribute"),
        (
            b'<dialog-info version="1" state="full" entity="e"><dialog><state>early</state></dialog></dialog-info>',
            "dialog #1 has no id",
        ),
        (
            b'<dialog-info version="1" state="full" entity="e"><dialog id="d7"/></dialog-info>',
            "dialog 'd7' has no <state>",
        ),
        (
            b'<dialog-info version="1" state="full" entity="e"><dialog id="d"><state>ringing</state></dialog></dialog-info>',
            "state 'ringing' is not one of",
        ),
        (
            b'<dialog-info version="1" state="full" entity="e"><dialog id="d" direction="in"><state>early</state></dialog></dialog-info>',
            "direction 'in'",
        ),
        (
            b'<dialog-info version="1" state="full" entity="e"><dialog id="&xxe;"><state>early</state></dialog></dialog-info>',
            "undefined entity",
        ),
    ],
)
def test_malformed_input_says_what_is_wrong(body, message):
    with pytest.raises(DialogInfoError, match=message):
        parse(body)


def test_billion_laughs_is_refused_at_once():
    started = time.perf_counter()
    with pytest.raises(DialogInfoError, match="DTD or entity declaration"):
        parse(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.1


def test_billion_laughs_in_utf16_is_refused():
    with pytest.raises(DialogInfoError, match="ASCII-compatible"):
        parse(BILLION_LAUGHS.replace(b'<?xml version="1.0"?>', b"").decode().encode("utf-16"))


def test_external_entity_is_refused():
    body = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<dialog-info version="1" state="full" entity="e"><dialog id="&e;"><state>early</state></dialog></dialog-info>'
    )
    with pytest.raises(DialogInfoError, match="DTD"):
        parse(body)


def test_oversized_document_is_refused_before_parsing():
    dialog = b'<dialog id="d"><state>early</state></dialog>'
    body = b'<dialog-info version="1" state="full" entity="e">' + dialog * 2000 + b"</dialog-info>"
    with pytest.raises(DialogInfoError, match=r"more than the 65536 accepted"):
        parse(body)
    assert len(parse(body, max_size=len(body)).dialogs) == 2000
