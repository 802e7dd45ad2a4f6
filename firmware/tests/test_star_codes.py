"""Star codes (plustjänster): every row of DOMAIN.md's table in every form a phone sends it, the
refusals with their reasons, the *24* time forms' end times in Europe/Stockholm (DST days
included), and properties: parse never raises anything but StarCodeError, returns None exactly
for text that does not start with * or #, and round-trips every valid code through its `code`."""

from datetime import UTC, datetime, timedelta
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vaxelbox.local.star_codes import (
    ActivityTime,
    Bypass,
    CancelForward,
    ClearActivity,
    ForwardStatus,
    GroupLogin,
    GroupLogout,
    HiddenCall,
    Pickup,
    SetActivity,
    SetForward,
    StarCode,
    StarCodeError,
    ToVoicemail,
    parse,
    until,
)

TZ = "Europe/Stockholm"
STOCKHOLM = ZoneInfo(TZ)
MOBILE = "+46701740605"  # 070-174 06 05

# DOMAIN.md "Star codes", row by row (and the Tele2 forms below it): as dialled on a desk phone,
# what it means, and its canonical `code`.
TABLE: list[tuple[str, StarCode, str]] = [
    ("*21*0701740605#", SetForward("always", MOBILE), f"*21*{MOBILE}#"),
    ("*21*101#", SetForward("always", "101"), "*21*101#"),
    ("#21#", CancelForward("always"), "#21#"),
    ("*61*+46846500401#", SetForward("no_answer", "+46846500401"), "*61*+46846500401#"),
    ("*61*101*20#", SetForward("no_answer", "101", 20), "*61*101*20#"),
    ("*61*0701740605*5#", SetForward("no_answer", MOBILE, 5), f"*61*{MOBILE}*5#"),
    ("*61*101*120#", SetForward("no_answer", "101", 120), "*61*101*120#"),
    ("#61#", CancelForward("no_answer"), "#61#"),
    ("*67*0046701740605#", SetForward("busy", MOBILE), f"*67*{MOBILE}#"),
    ("#67#", CancelForward("busy"), "#67#"),
    ("*#21#", ForwardStatus(), "*#21#"),
    ("*24*3#", SetActivity(3, None), "*24*3#"),
    ("*24*3*0#", SetActivity(3, ActivityTime("0", "days")), "*24*3*0#"),
    ("*24*3*2#", SetActivity(3, ActivityTime("2", "days")), "*24*3*2#"),
    ("*24*3*02#", SetActivity(3, ActivityTime("02", "hours")), "*24*3*02#"),
    ("*24*3*090#", SetActivity(3, ActivityTime("090", "minutes")), "*24*3*090#"),
    ("*24*3*1330#", SetActivity(3, ActivityTime("1330", "clock")), "*24*3*1330#"),
    ("*24*12*261224#", SetActivity(12, ActivityTime("261224", "date")), "*24*12*261224#"),
    ("#24#", ClearActivity(), "#24#"),
    ("*75*500#", GroupLogin("500"), "*75*500#"),
    ("#75*500#", GroupLogout("500"), "#75*500#"),
    ("*80*101", Pickup("101"), "*80*101"),
    ("*80*0701740605", Pickup(MOBILE), f"*80*{MOBILE}"),
    ("*31*0701740605", HiddenCall(MOBILE), f"*31*{MOBILE}"),
    ("*31*102", HiddenCall("102"), "*31*102"),
    ("*59*102#", ToVoicemail("102"), "*59*102#"),
    ("*60*102#", Bypass("102"), "*60*102#"),
    ("*60*08-465 004 01#", Bypass("+46846500401"), "*60*+46846500401#"),
]


def forms(dialled: str) -> list[tuple[str, str]]:
    """Every way a phone may send `dialled`: # raw or %23, * raw or %2A/%2a, with or without the
    final # (mobile form; *80* and *31* have none, so with one), with or without URI parameters."""
    ends = [dialled, dialled.removesuffix("#") if dialled.endswith("#") else dialled + "#"]
    out = []
    for end in ends:
        for name, text in [
            ("raw", end),
            ("%23", end.replace("#", "%23").replace(" ", "%20")),
            ("%2a", end.replace("*", "%2a").replace("#", "%23").replace(" ", "%20")),
            ("%2A", end.replace("*", "%2A").replace("#", "%23").replace(" ", "%20")),
        ]:
            for params in ("", ";phone-context=+46846500400", ";phone-context=example.com;isub=1"):
                out.append((f"{end}|{name}|{params or 'no params'}", text + params))
    return out


ALL_FORMS = [(text, code, canonical) for dialled, code, canonical in TABLE for _, text in forms(dialled)]


@pytest.mark.parametrize(("dialled", "expected", "canonical"), ALL_FORMS)
def test_every_row_of_the_table_in_every_form(dialled, expected, canonical):
    code = parse(dialled)
    assert code == expected
    assert code is not None
    assert code.code == canonical
    assert parse(code.code) == code


def test_the_forms_cover_raw_escaped_mobile_and_parameters():
    texts = [text for _, text in forms("*21*101#")]
    assert {"*21*101#", "*21*101", "*21*101%23", "%2a21%2a101%23", "%2A21%2A101"} <= set(texts)
    assert "*21*101#;phone-context=+46846500400" in texts
    assert "#21" in [text for _, text in forms("#21#")]
    assert "*80*101#" in [text for _, text in forms("*80*101")]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (SetForward("always", MOBILE), f"forward all calls to {MOBILE}"),
        (SetForward("no_answer", "101", 20), "forward unanswered calls to 101 after 20 s"),
        (SetForward("busy", "101"), "forward calls when busy to 101"),
        (CancelForward("no_answer"), "cancel forwarding of unanswered calls"),
        (ForwardStatus(), "ask whether all calls are forwarded"),
        (SetActivity(3, None), "activate profile 3 for the profile's default length"),
        (SetActivity(3, ActivityTime("0", "days")), "activate profile 3 until further notice"),
        (SetActivity(3, ActivityTime("1", "days")), "activate profile 3 for 1 day"),
        (SetActivity(3, ActivityTime("2", "days")), "activate profile 3 for 2 days"),
        (SetActivity(3, ActivityTime("02", "hours")), "activate profile 3 for 2 h"),
        (SetActivity(3, ActivityTime("090", "minutes")), "activate profile 3 for 90 min"),
        (SetActivity(3, ActivityTime("1330", "clock")), "activate profile 3 until 13:30"),
        (SetActivity(3, ActivityTime("261224", "date")), "activate profile 3 to the end of 2026-12-24"),
        (ClearActivity(), "end the activity (back to available)"),
        (GroupLogin("500"), "log in to group 500"),
        (GroupLogout("500"), "log out of group 500"),
        (Pickup("101"), "pick up the call ringing at 101"),
        (HiddenCall(MOBILE), f"call {MOBILE} with hidden caller id"),
        (ToVoicemail("102"), "send the call to the voicemail of 102"),
        (Bypass("102"), "call 102 past their activity and forwarding"),
    ],
)
def test_describe_says_what_the_code_does(code, text):
    assert code.describe() == text


@pytest.mark.parametrize(
    ("dialled", "number"),
    [
        ("*21*0701740605#", MOBILE),
        ("*21*+46701740605#", MOBILE),
        ("*21*0046701740605#", MOBILE),
        ("*21*070-174%2006%2005#", MOBILE),  # visual separators, as routing drops them
        ("*21*(08)%20465%20004%2001#", "+46846500401"),
        ("*21*+4930123456#", "+4930123456"),  # Berlin: a foreign number stays itself
        ("*21*10#", "10"),  # 2 to 6 digits not starting with 0: an extension, as dialled
        ("*21*999999#", "999999"),
        ("*21*112#", "112"),  # short numbers are extensions by that rule; routing decides
    ],
)
def test_numbers_are_read_like_the_sites(dialled, number):
    code = parse(dialled)
    assert isinstance(code, SetForward)
    assert code.number == number


@pytest.mark.parametrize(
    ("dialled", "reason"),
    [
        ("*99#", "unknown code (codes: *21*, *61*"),
        ("*99", "unknown code"),
        ("**21*101#", "unknown code"),
        ("*21*#", "*21* needs a number after it"),
        ("*21#", "*21* takes one number: *21*<number>#"),
        ("*21", "*21* takes one number"),
        ("*21*101*20#", "*21* takes one number"),
        ("*67*101*20#", "*67* takes one number"),
        ("*80*", "*80* needs a number"),
        ("*80*101*102", "*80* takes one number: *80*<number>"),
        ("*21*abc#", "unexpected character 'a' (a code has only digits, * and #)"),
        ("*21*101x#", "unexpected character 'x'"),
        ("*21*١٢٣#", "unexpected character '١'"),  # Arabic-Indic digits are not digits here
        ("*21*1+2#", "'1+2' is not a number"),
        ("*21*0812345#", "'0812345' is neither an extension (2-6 digits, not starting with 0) nor a valid"),
        ("*21*0101#", "neither an extension"),
        ("*21*5#", "neither an extension"),
        ("*21*101#5", "# may only start or end a code"),
        ("*21*101##", "# may only start or end a code"),
        ("*61*101*4#", "the delay '4' must be 5 to 120 seconds"),
        ("*61*101*121#", "the delay '121' must be 5 to 120 seconds"),
        ("*61*101*0020#", "the delay '0020' must be 5 to 120 seconds"),
        ("*61*101*#", "the delay '' must be 5 to 120 seconds"),
        ("*#61#", "the only status query is *#21#"),
        ("*#21*101#", "the only status query is *#21#"),
        ("*24#", "*24* needs a profile number"),
        ("*24*#", "profile '' must be a number 1 to 99"),
        ("*24*0#", "profile '0' must be a number 1 to 99"),
        ("*24*100#", "profile '100' must be a number 1 to 99"),
        ("*24*1*2*3#", "*24* needs a profile number and may take a time"),
        ("*24*1*#", "time '' must be 1 digit (days), 2 (hours), 3 (minutes), 4 (HHMM) or 6 (YYMMDD)"),
        ("*24*1*12345#", "time '12345' must be 1 digit (days), 2 (hours)"),
        ("*24*1*1234567#", "time '1234567' must be 1 digit"),
        ("*24*1*00#", "time '00' is a length of zero; use 0 for until further notice"),
        ("*24*1*000#", "time '000' is a length of zero"),
        ("*24*1*2561#", "time '2561' is not a time of day HHMM (0000 to 2359)"),
        ("*24*1*2400#", "time '2400' is not a time of day"),
        ("*24*1*1260#", "time '1260' is not a time of day"),
        ("*24*1*991332#", "time '991332' is not a date YYMMDD"),
        ("*24*1*260230#", "time '260230' is not a date"),  # 30 February
        ("*24*1*270229#", "time '270229' is not a date"),  # 2027 is no leap year
        ("*24*1*260001#", "time '260001' is not a date"),
        ("#21*101#", "#21# takes nothing after it"),
        ("#24*1#", "#24# takes nothing after it"),
        ("#75#", "*75* and #75* need the group's number, digits only"),
        ("*75*#", "need the group's number"),
        ("*75*+46846500400#", "need the group's number, digits only"),
        ("*75*5-00#", "need the group's number, digits only"),
        ("*75*500*1#", "need the group's number"),
        (
            "#12345#",
            "#<number># transfers an ongoing call, as keypad tones during the call; it is not a code",
        ),
        ("#12345", "transfers an ongoing call"),
        ("#+46701740605#", "transfers an ongoing call"),
        ("#99*1#", "unknown code (cancel codes: #21#, #61#, #67#, #24#, #75*<group>#)"),
        ("#", "unknown code"),
        ("*", "unknown code"),
        ("##21#", "# may only start or end a code"),
    ],
)
def test_refusals_name_the_code_and_what_is_wrong(dialled, reason):
    with pytest.raises(StarCodeError) as caught:
        parse(dialled)
    assert str(caught.value).startswith(f"{dialled!r}: ")
    assert reason in str(caught.value)


def test_a_refusal_quotes_the_code_as_decoded_without_parameters():
    with pytest.raises(StarCodeError, match=r"^'\*99#': unknown code"):
        parse("%2A99%23;phone-context=+46846500400")


def test_parameters_are_split_off_before_decoding():
    # An escaped ";" is part of the user part (RFC 3261), not the start of a parameter.
    with pytest.raises(StarCodeError, match=r"^'\*21\*101;x#': unexpected character ';'"):
        parse("*21*101%3Bx#")


def test_a_long_refusal_is_cut():
    with pytest.raises(StarCodeError) as caught:
        parse("*" * 5000 + "x")
    assert (
        str(caught.value)
        == "'" + "*" * 40 + "...': unexpected character 'x' (a code has only digits, * and #)"
    )


def test_a_star_code_error_is_a_value_error():
    assert issubclass(StarCodeError, ValueError)


@pytest.mark.parametrize(
    "dialled",
    [
        "",
        "101",
        "0701740605",
        "+46701740605",
        "sip",
        ";*21*101#",
        "%2523%2521",
        " *21*101#",
        "%2B46701740605",
    ],
)
def test_text_that_does_not_start_with_star_or_hash_is_no_code(dialled):
    assert parse(dialled) is None


def test_escapes_are_decoded_once():
    # "%2523" is an escaped "%23", not a "#": decoding twice would turn a number into a code.
    assert parse("%2523") is None


@pytest.mark.parametrize(
    ("digits", "form"),
    [("0", "days"), ("9", "days"), ("01", "hours"), ("99", "hours"), ("001", "minutes"), ("999", "minutes"),
     ("0000", "clock"), ("2359", "clock"), ("000101", "date"), ("280229", "date"), ("991231", "date")],
)  # fmt: skip
def test_every_time_form_is_read_by_its_number_of_digits(digits, form):
    assert ActivityTime.of(digits) == ActivityTime(digits, form)
    assert parse(f"*24*1*{digits}#") == SetActivity(1, ActivityTime(digits, form))


def test_an_activity_time_refuses_digits_of_another_form():
    with pytest.raises(StarCodeError, match="'12' is not in the clock form"):
        ActivityTime("12", "clock")


def at(text: str, fold: int = 0) -> datetime:
    """A Stockholm wall time, `2026-03-29 01:00`, as an aware datetime (fold=1: its second showing)."""
    return datetime.fromisoformat(text).replace(tzinfo=STOCKHOLM, fold=fold)


def end(digits: str | None, now: str, default_minutes: int = 0, fold: int = 0) -> datetime | None:
    return until(ActivityTime.of(digits) if digits else None, at(now, fold), TZ, default_minutes)


def utc(moment: datetime | None) -> datetime:
    """`moment` in UTC: aware datetimes in one zone compare by wall clock, blind to DST's fold."""
    assert moment is not None
    return moment.astimezone(UTC)


# Fixed nows: an ordinary Tuesday, the spring change (2026-03-29: 02:00 CET -> 03:00 CEST) and the
# autumn change (2026-10-25: 03:00 CEST -> 02:00 CET).
@pytest.mark.parametrize(
    ("digits", "now", "default_minutes", "expected"),
    [
        # No time: the profile's default length; 0 = until further notice.
        (None, "2026-03-10 10:00", 60, "2026-03-10 11:00+01:00"),
        (None, "2026-03-10 10:00", 0, None),
        (None, "2026-03-29 01:30", 60, "2026-03-29 03:30+02:00"),  # one real hour across the jump
        # 1 digit: days ahead, same time of day; 0 = until further notice.
        ("0", "2026-03-10 10:00", 30, None),
        ("1", "2026-03-10 10:00", 0, "2026-03-11 10:00+01:00"),
        ("9", "2026-03-10 10:00", 0, "2026-03-19 10:00+01:00"),
        ("1", "2026-03-28 10:00", 0, "2026-03-29 10:00+02:00"),  # a 23 h day
        ("1", "2026-10-24 10:00", 0, "2026-10-25 10:00+01:00"),  # a 25 h day
        ("1", "2026-03-28 02:30", 0, "2026-03-29 03:00+02:00"),  # 02:30 skipped: when clocks jump past it
        # 2 digits: hours; 3 digits: minutes; real time, also across a change.
        ("02", "2026-03-10 10:00", 0, "2026-03-10 12:00+01:00"),
        ("02", "2026-03-29 01:00", 0, "2026-03-29 04:00+02:00"),
        ("03", "2026-10-25 01:00", 0, "2026-10-25 03:00+01:00"),
        ("99", "2026-03-10 10:00", 0, "2026-03-14 13:00+01:00"),
        ("090", "2026-03-10 10:00", 0, "2026-03-10 11:30+01:00"),
        ("090", "2026-03-29 01:45", 0, "2026-03-29 04:15+02:00"),
        # 4 digits: time of day; passed today (or now) -> tomorrow.
        ("1330", "2026-03-10 10:00", 0, "2026-03-10 13:30+01:00"),
        ("1330", "2026-03-10 14:00", 0, "2026-03-11 13:30+01:00"),
        ("1330", "2026-03-10 13:30", 0, "2026-03-11 13:30+01:00"),
        ("0000", "2026-03-10 10:00", 0, "2026-03-11 00:00+01:00"),
        ("0800", "2026-03-28 23:00", 0, "2026-03-29 08:00+02:00"),  # tomorrow is summer time
        ("1200", "2026-03-29 01:00", 0, "2026-03-29 12:00+02:00"),
        ("0230", "2026-03-29 01:00", 0, "2026-03-29 03:00+02:00"),  # skipped tonight: at the jump
        ("0159", "2026-03-29 01:00", 0, "2026-03-29 01:59+01:00"),
        ("0100", "2026-03-29 01:00", 0, "2026-03-30 01:00+02:00"),
        ("0230", "2026-10-25 01:00", 0, "2026-10-25 02:30+02:00"),  # shown twice: the first showing
        ("0230", "2026-10-25 02:45", 0, "2026-10-26 02:30+01:00"),  # first showing passed: tomorrow
        ("0250", "2026-10-25 02:45", 0, "2026-10-25 02:50+02:00"),
        # 6 digits: a date, to the end of that day.
        ("261224", "2026-12-01 10:00", 0, "2026-12-25 00:00+01:00"),
        ("261224", "2026-12-24 23:59", 0, "2026-12-25 00:00+01:00"),  # today: the rest of today
        ("261025", "2026-10-01 10:00", 0, "2026-10-26 00:00+01:00"),  # ends after the autumn change
        ("260329", "2026-03-01 10:00", 0, "2026-03-30 00:00+02:00"),
        ("280229", "2026-03-01 10:00", 0, "2028-03-01 00:00+01:00"),
    ],
)
def test_until_gives_each_time_forms_end(digits, now, default_minutes, expected):
    result = end(digits, now, default_minutes)
    if expected is None:
        assert result is None
    else:
        assert utc(result) == utc(datetime.fromisoformat(expected))
        assert result.isoformat(sep=" ", timespec="minutes") == expected  # in Stockholm time
        assert result.tzinfo == STOCKHOLM


def test_a_time_passed_in_the_first_showing_of_the_autumn_hour_is_tomorrow():
    # 02:20 CET (second showing) is after 02:30 CEST (first showing): 02:30 has passed today.
    now = at("2026-10-25 02:20", fold=1)
    assert utc(now) == datetime(2026, 10, 25, 1, 20, tzinfo=UTC)
    assert utc(end("0230", "2026-10-25 02:20", fold=1)) == utc(
        datetime.fromisoformat("2026-10-26 02:30+01:00")
    )
    assert utc(end("0240", "2026-10-25 02:20", fold=1)) == utc(
        datetime.fromisoformat("2026-10-26 02:40+01:00")
    )
    assert utc(end("0300", "2026-10-25 02:20", fold=1)) == utc(
        datetime.fromisoformat("2026-10-25 03:00+01:00")
    )


def test_a_day_ahead_across_a_change_is_23_or_25_hours():
    assert utc(end("1", "2026-03-28 10:00")) - utc(at("2026-03-28 10:00")) == timedelta(hours=23)
    assert utc(end("1", "2026-10-24 10:00")) - utc(at("2026-10-24 10:00")) == timedelta(hours=25)
    assert utc(end("1", "2026-03-10 10:00")) - utc(at("2026-03-10 10:00")) == timedelta(hours=24)


@pytest.mark.parametrize("digits", ["261223", "250101", "000101"])
def test_a_date_that_has_passed_is_refused(digits):
    with pytest.raises(StarCodeError, match=rf"the date 20\d\d-\d\d-\d\d \({digits}\) has passed"):
        end(digits, "2026-12-24 10:00")


def test_until_reads_now_in_any_zone_and_answers_in_the_sites():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 13:00 in Stockholm
    result = until(ActivityTime.of("1330"), now, TZ, 0)
    assert result == at("2026-03-10 13:30")
    helsinki = until(ActivityTime.of("1330"), now, "Europe/Helsinki", 0)  # 14:00 there: tomorrow
    assert helsinki is not None
    assert helsinki.isoformat() == "2026-03-11T13:30:00+02:00"


def test_until_refuses_a_naive_now_and_a_negative_default():
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        until(None, datetime(2026, 3, 10, 10, 0), TZ, 60)
    with pytest.raises(ValueError, match="default_minutes must be 0 or more"):
        until(None, at("2026-03-10 10:00"), TZ, -1)


# Properties.

FRAGMENTS = st.sampled_from(
    ["*", "#", "%23", "%2a", "%2A", "%", "%25", ";", ";phone-context=x", "21", "61", "67", "24", "75",
     "80", "31", "59", "60", "99", "0", "1", "2", "5", "12", "101", "120", "121", "1330", "2561",
     "261224", "991332", "0701740605", "+46", "+", "-", " ", "a", "١", "\x00", "\ufffd"]
)  # fmt: skip
TEXTS = st.one_of(st.text(), st.lists(FRAGMENTS, max_size=12).map("".join))


@settings(max_examples=3000)
@given(TEXTS)
def test_parse_raises_only_star_code_error_and_none_means_not_a_code(text):
    starts = unquote(text.partition(";")[0]).startswith(("*", "#"))
    try:
        code = parse(text)
    except StarCodeError:
        assert starts
        return
    assert (code is None) == (not starts)
    if code is not None:
        assert parse(code.code) == code


EXTENSIONS = st.from_regex(r"[1-9][0-9]{1,5}", fullmatch=True)
E164 = st.from_regex(r"\+467[0236][0-9]{7}", fullmatch=True)  # Swedish mobiles: always valid
NUMBERS = st.one_of(EXTENSIONS, E164)
ACTIVITY_TIMES = st.one_of(
    st.integers(0, 9).map(str),
    st.integers(1, 99).map(lambda n: f"{n:02}"),
    st.integers(1, 999).map(lambda n: f"{n:03}"),
    st.builds(lambda h, m: f"{h:02}{m:02}", st.integers(0, 23), st.integers(0, 59)),
    st.dates(datetime(2000, 1, 1).date(), datetime(2099, 12, 31).date()).map(lambda d: d.strftime("%y%m%d")),
).map(ActivityTime.of)
CODES = st.one_of(
    st.builds(SetForward, st.sampled_from(["always", "no_answer", "busy"]), NUMBERS, st.none()),
    st.builds(SetForward, st.just("no_answer"), NUMBERS, st.integers(5, 120)),
    st.builds(CancelForward, st.sampled_from(["always", "no_answer", "busy"])),
    st.just(ForwardStatus()),
    st.builds(SetActivity, st.integers(1, 99), st.none() | ACTIVITY_TIMES),
    st.just(ClearActivity()),
    st.builds(GroupLogin, st.from_regex(r"[0-9]{1,15}", fullmatch=True)),
    st.builds(GroupLogout, st.from_regex(r"[0-9]{1,15}", fullmatch=True)),
    st.builds(Pickup, NUMBERS),
    st.builds(HiddenCall, NUMBERS),
    st.builds(ToVoicemail, NUMBERS),
    st.builds(Bypass, NUMBERS),
)


@settings(max_examples=1000)
@given(CODES)
def test_every_valid_code_round_trips_in_every_form(code):
    assert parse(code.code) == code
    for _, text in forms(code.code):
        assert parse(text) == code


@settings(max_examples=500)
@given(
    st.datetimes(
        datetime(2020, 1, 1), datetime(2040, 12, 31), timezones=st.just(STOCKHOLM), allow_imaginary=False
    ),
    st.builds(lambda h, m: f"{h:02}{m:02}", st.integers(0, 23), st.integers(0, 59)),
)
def test_a_time_of_day_ends_within_the_next_day(now, digits):
    result = until(ActivityTime.of(digits), now, TZ, 0)
    assert utc(now) < utc(result) <= utc(now) + timedelta(hours=25)
    assert result.strftime("%H%M") == digits or result.dst() != now.dst()  # only a jump moves it


@settings(max_examples=500)
@given(
    st.datetimes(
        datetime(2020, 1, 1), datetime(2040, 12, 31), timezones=st.just(STOCKHOLM), allow_imaginary=False
    ),
    st.integers(1, 99),
    st.integers(1, 999),
)
def test_hours_and_minutes_are_real_time(now, hours, minutes):
    by_hours = until(ActivityTime.of(f"{hours:02}"), now, TZ, 0)
    by_minutes = until(ActivityTime.of(f"{minutes:03}"), now, TZ, 0)
    assert by_hours is not None
    assert by_minutes is not None
    assert by_hours.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=hours)
    assert by_minutes.astimezone(UTC) - now.astimezone(UTC) == timedelta(minutes=minutes)
