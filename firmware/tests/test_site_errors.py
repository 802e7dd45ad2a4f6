"""A bad site file is refused with one clear message naming the exact place of each problem."""

import pytest
from vaxelbox.site import SiteError, parse_site


def problems(text: str) -> list[str]:
    with pytest.raises(SiteError) as caught:
        parse_site(text, "site.toml")
    return [str(p) for p in caught.value.problems]


def test_toml_syntax_error_names_line_and_column(demo_with):
    assert problems(demo_with('name = "Reception"', 'name = "Reception')) == [
        "line 42, column 18: TOML syntax: Illegal character '\\n'"
    ]


def test_unknown_member(demo_with):
    assert problems(demo_with('members = ["anna", "bjorn"]', 'members = ["anna", "bjorn", "gustav"]')) == [
        "groups[0].members[2]: unknown user 'gustav'"
    ]


def test_duplicate_extension(demo_with):
    assert problems(demo_with('extension = "203"', 'extension = "201"')) == [
        "users[4].extension: extension '201' is already used by users[2].extension"
    ]


def test_extension_shared_by_user_and_group(demo_with):
    assert problems(demo_with('extension = "100"', 'extension = "102"')) == [
        "groups[0].extension: extension '102' is already used by users[1].extension"
    ]


def test_bad_number(demo_with):
    assert problems(demo_with('mobile = "070-174 06 07"', 'mobile = "070-174 06"')) == [
        "users[4].mobile: '070-174 06' is not a valid E.164 phone number"
    ]


def test_unknown_time_zone(demo_with):
    assert problems(demo_with('timezone = "Europe/Stockholm"', 'timezone = "Europe/Stokholm"')) == [
        "site.timezone: unknown time zone 'Europe/Stokholm' (e.g. Europe/Stockholm)"
    ]


def test_unknown_field_suggests_the_right_one(demo_with):
    """A misspelt required field is one problem: "required field is missing" for the very field the
    suggestion names was printed first, before the line that says what happened."""
    assert problems(demo_with('extension = "301"', 'extention = "301"')) == [
        "users[5].extention: unknown field (did you mean 'extension'?)",
    ]


def test_check_site_reports_a_misspelt_field_first_on_its_own(demo_with, tmp_path):
    """`vaxelbox check-site` as the README shows it: the misspelling first, then other problems."""
    from typer.testing import CliRunner
    from vaxelbox.cli import app

    text = demo_with('extension = "301"', 'extention = "301"').replace('"070-174 06 07"', '"070-174 06"')
    (tmp_path / "site.toml").write_text(text)
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["check-site", str(tmp_path / "site.toml")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{tmp_path}/site.toml: users[5].extention: unknown field (did you mean 'extension'?)",
        f"{tmp_path}/site.toml: users[4].mobile: '070-174 06' is not a valid E.164 phone number",
        "2 problem(s); nothing was applied",
    ]


def test_duplicate_mac(demo_with):
    assert problems(demo_with('mac = "00:0b:82:86:5e:6a"', 'mac = "00:15:65:4A:A9:37"')) == [
        "phones[3].mac: duplicate MAC 0015654aa937 (also phones[0])"
    ]


def test_duplicate_number_across_user_and_group(demo_with):
    assert problems(demo_with('direct_number = "08-465 004 21"', 'direct_number = "08-465 004 20"')) == [
        "groups[1].number: number '+46846500420' is already used by users[2].direct_number"
    ]


def test_unknown_target_and_target_kind(demo_with):
    text = demo_with('overflow = "group:reception"', 'overflow = "group:kundtjanst"')
    text = text.replace('entry = "menu:huvudmeny"', 'entry = "queue:huvudmeny"')
    assert problems(text) == [
        "main.entry: 'queue:huvudmeny': unknown target kind 'queue' (one of user, group, voicemail, menu, tel)"
    ]
    assert problems(demo_with('overflow = "group:reception"', 'overflow = "group:kundtjanst"')) == [
        "groups[1].overflow: unknown group 'kundtjanst'"
    ]


def test_forward_loop(demo_with):
    # fredrik already forwards always to anna; close the circle through bjorn.
    text = demo_with('forwards = { busy = "voicemail:bjorn" }', 'forwards = { always = "user:fredrik" }')
    text = text.replace(
        'forwards = { no_answer = "tel:070-174 06 05", no_answer_after = 25 }',
        'forwards = { always = "user:bjorn" }',
    )
    assert problems(text) == [
        "users[0].forwards.always: forwarding loop: user:anna -> user:bjorn -> user:fredrik -> user:anna"
    ]


def test_menu_default_loop_through_a_menu(demo_with):
    text = demo_with('default = "group:reception"', 'default = "menu:huvudmeny"')
    assert problems(text) == ["menus[0].default: forwarding loop: menu:huvudmeny -> menu:huvudmeny"]


def test_password_problem_never_echoes_the_value(demo_with):
    found = problems(demo_with('password = "demo-pw-anna-4f9c"', 'password = "hemlis"'))
    assert found == [
        "users[0].sip.password: too short (6 characters; at least 8, SIP passwords are brute-forced)"
    ]
    assert "hemlis" not in found[0]


def test_desk_phone_without_lines(demo_with):
    assert problems(demo_with('lines = ["david"]', "lines = []")) == [
        "phones[3]: a desk phone needs at least one line"
    ]


def test_unknown_user_on_dect_handset(demo_with):
    assert problems(demo_with('handsets = ["elin", "fredrik"]', 'handsets = ["elin", "frederik"]')) == [
        "phones[5].handsets[1]: unknown user 'frederik'"
    ]


def test_every_problem_is_reported_not_just_the_first(demo_with):
    text = demo_with('members = ["anna", "bjorn"]', 'members = ["anna", "anna", "olle"]')
    text = text.replace('schedule = "kontorstid"\noverflow = "group:reception"', 'schedule = "sommar"')
    assert problems(text) == [
        "groups[0].members[1]: user 'anna' is listed twice",
        "groups[0].members[2]: unknown user 'olle'",
        "groups[1].schedule: unknown schedule 'sommar'",
    ]
