"""Assigning phones edits the site text and keeps the installer's comments."""

import pytest
from vaxelbox.site import parse_site
from vaxelbox.site.edit import EditError, assign_phone, unassign_phone


def test_assign_appends_a_phone_and_keeps_comments(demo_text):
    text = assign_phone(demo_text, "805ec0112233", ["fredrik"], "yealink", "T46U")
    site = parse_site(text, "edited")
    assert site.phone("805ec0112233").lines == ["fredrik"]
    assert "# Five desk phones of different vendors and one DECT base." in text
    assert text.startswith(demo_text.rstrip("\n"))  # nothing before the new table changed


def test_assign_replaces_the_same_mac_and_dect_takes_handsets(demo_text):
    text = assign_phone(demo_text, "0015654aa937", ["bjorn"], "yealink", "T54W")
    site = parse_site(text, "edited")
    assert site.phone("0015654aa937").lines == ["bjorn"]
    assert len(site.phones) == 6
    dect = parse_site(
        assign_phone(demo_text, "805ec0aabbcc", ["anna", "bjorn"], "yealink", "W70B", dect=True), "x"
    )
    assert dect.phone("805ec0aabbcc").handsets == ["anna", "bjorn"]


def test_unassign_removes_the_phone_and_unknown_mac_is_refused(demo_text):
    site = parse_site(unassign_phone(demo_text, "000b82865e6a"), "edited")
    assert site.phone("000b82865e6a") is None
    assert len(site.phones) == 5
    with pytest.raises(EditError, match="no phone with MAC 80:5e:c0:00:00:01"):
        unassign_phone(demo_text, "805ec0000001")
