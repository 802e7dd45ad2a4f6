"""Local routing policy: route plans for the demo office and small sites, rule by rule, and
properties over arbitrary dialled text and forward graphs (plan_call never raises, always ends)."""

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from site_fixtures import replace_once
from vaxelbox.local.plan import Plan, Reject, Ring, Trunk
from vaxelbox.local.routing import (
    EMERGENCY,
    MAX_FORWARDS,
    MAX_WHY,
    ActiveActivity,
    Caller,
    SiteDefaults,
    directory,
    emergency_route_warning,
    is_emergency,
    plan_call,
)
from vaxelbox.site import Site, demo_site_text, parse_site
from vaxelbox.site.model import Activity, Forwards, Group, User

STOCKHOLM = ZoneInfo("Europe/Stockholm")
OPEN = datetime(2026, 3, 10, 10, 0, tzinfo=STOCKHOLM)  # a Tuesday in office hours
EVENING = datetime(2026, 3, 10, 20, 0, tzinfo=STOCKHOLM)
JULAFTON = datetime(2026, 12, 24, 10, 0, tzinfo=STOCKHOLM)  # a Thursday

OUTSIDE = Caller(None, "+46701740699")
ANNA = Caller("anna", "101")
ELIN = Caller("elin", "203")


def everyone(user_id: str) -> bool:
    return True


def nobody(user_id: str) -> bool:
    return False


TRUNK = '\n[fallback_trunk]\nuri = "sip:trunk.example.net;transport=tcp"\ncaller_id = "08-465 004 99"\n'
TRUNK_WITHOUT_ID = '\n[fallback_trunk]\nuri = "sip:trunk.example.net;transport=tcp"\n'

DEMO = parse_site(demo_site_text())
DEMO_TRUNK = parse_site(demo_site_text() + TRUNK)


def shape(plan: Plan | None) -> tuple | None:
    """A plan without its `why`s, to compare with the expected plan."""
    match plan:
        case None:
            return None
        case Reject(status=status):
            return ("reject", status)
        case Trunk(number=number, caller_id=caller_id):
            return ("trunk", number, caller_id)
        case Ring():
            outcomes = (shape(plan.on_no_answer), shape(plan.on_busy), shape(plan.on_unavailable))
            return ("ring", plan.users, plan.ring_time, *outcomes)
    raise AssertionError(plan)


def route(
    site: Site, dialled: str, caller: Caller = OUTSIDE, now: datetime = OPEN, state=None, registered=everyone
):
    return plan_call(site, dialled, caller, now, state or SiteDefaults(), registered)


def ring(
    users: tuple[str, ...], ring_time: float | None, no_answer=None, busy=None, unavailable=None
) -> tuple:
    return ("ring", users, ring_time, no_answer, busy, unavailable)


def ring_all(users: tuple[str, ...], ring_time: float, then) -> tuple:
    return ring(users, ring_time, then, then, then)


VOICEMAIL = ("reject", 480)
RECEPTION = ring_all(("anna", "bjorn"), 25.0, VOICEMAIL)
ANNA_NO_TRUNK = ring(("anna",), 25.0, ("reject", 503), None, ("reject", 503))
ANNA_TO_MOBILE = ("trunk", "+46701740605", "+46846500499")
ANNA_WITH_TRUNK = ring(("anna",), 25.0, ANNA_TO_MOBILE, None, ANNA_TO_MOBILE)
EKONOMI = ring_all(("cecilia",), 15.0, ring_all(("david",), 20.0, ring_all(("elin",), 20.0, RECEPTION)))


def activity(user_id: str, activity_id: str, until: datetime | None, site: Site = DEMO) -> ActiveActivity:
    found = next(a for a in site.user(user_id).activities if a.id == activity_id)
    return ActiveActivity(found, until)


def small_site(users: str, rest: str = "", main_entry: str = "user:a") -> Site:
    """A minimal office: `users` and `rest` are TOML appended to the required tables."""
    head = f"""
        [site]
        name = "Liten AB"
        [cloud]
        domain = "liten.example.net"
        proxies = ["sip:pbx.example.net"]
        [main]
        number = "08-465 004 10"
        entry = "{main_entry}"
    """
    return parse_site(textwrap.dedent(head) + textwrap.dedent(users) + textwrap.dedent(rest))


def user_toml(user_id: str, extension: str, extra: str = "") -> str:
    return f"""
        [[users]]
        id = "{user_id}"
        name = "{user_id.upper()}"
        extension = "{extension}"
        sip = {{ user = "{user_id}", password = "password-{user_id}" }}
        {extra}
    """


def whys(plan: Plan | None) -> list[str]:
    """Every `why` in the plan, depth first."""
    if plan is None:
        return []
    if isinstance(plan, Ring):
        return [plan.why, *whys(plan.on_no_answer), *whys(plan.on_busy), *whys(plan.on_unavailable)]
    return [plan.why]


# --- numbers reach the right place ------------------------------------------------------------


@pytest.mark.parametrize(
    "dialled",
    [
        "101",
        "08-465 004 01",
        "0846500401",
        "+46846500401",
        "0046846500401",
        "+46 8 465 004 01",
        "(08) 465.004.01",
        "0846500401;phone-context=+46",
        "070-174 06 05",
        "+46701740605",
    ],
)
def test_a_users_extension_direct_and_mobile_number_in_any_form_reach_the_user(dialled):
    plan = route(DEMO_TRUNK, dialled)
    assert shape(plan) == ANNA_WITH_TRUNK
    assert plan.why.endswith("-> user:anna")


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("100", RECEPTION),
        ("200", EKONOMI),
        ("08-465 004 20", EKONOMI),
        ("+46846500420", EKONOMI),
        ("08-465 004 00", RECEPTION),  # main number -> menu:huvudmeny -> its default group:reception
        ("102", ring(("bjorn",), None, None, VOICEMAIL, None)),  # busy -> voicemail:bjorn
        ("301", ANNA_NO_TRUNK),  # fredrik forwards always to anna
        ("112", ("reject", 503)),
        ("+46 70 174 06 99", ("reject", 403)),  # an outside caller may not call out
        ("1234", ("reject", 404)),
        ("999", ("reject", 404)),
        ("*21*101#", ("reject", 404)),
        ("", ("reject", 404)),
    ],
)
def test_demo_office_in_office_hours(dialled, expected):
    assert shape(route(DEMO, dialled)) == expected


def test_the_main_number_goes_to_the_menus_default_without_media():
    plan = route(DEMO, "08-465 004 00")
    assert plan.why == "0846500400 -> menu:huvudmeny -> (menu default) group:reception"


def test_directory_is_built_once_per_site_object():
    assert directory(DEMO) is directory(DEMO)
    assert directory(parse_site(demo_site_text())) is not directory(DEMO)


# --- answer groups ----------------------------------------------------------------------------


def test_sequential_group_rings_members_in_order_with_their_ring_times_then_overflows():
    plan = route(DEMO, "200")
    assert [plan.users, plan.on_no_answer.users, plan.on_no_answer.on_no_answer.users] == [
        ("cecilia",),
        ("david",),
        ("elin",),
    ]
    assert plan.on_busy is plan.on_no_answer is plan.on_unavailable  # busy or away: the next member
    assert plan.why == "200 -> group:ekonomi, member 1/3 cecilia"
    overflow = plan.on_no_answer.on_no_answer.on_no_answer
    assert overflow.why == "200 -> group:ekonomi -> (overflow) group:reception"


@pytest.mark.parametrize(("now", "closed_by"), [(JULAFTON, "Julafton"), (EVENING, "outside weekly hours")])
def test_a_closed_group_goes_to_its_closed_target(now, closed_by):
    plan = route(DEMO, "100", now=now)
    assert shape(plan) == VOICEMAIL
    assert plan.why == (
        "voicemail needs the cloud; local mode has none "
        f"[100 -> group:reception -> (closed: {closed_by}) voicemail:anna]"
    )


def test_a_closed_group_without_closed_target_overflows_and_without_overflow_rejects(demo_text):
    # Ekonomi has no `closed`: its overflow (reception) is closed too on julafton.
    assert shape(route(DEMO, "200", now=JULAFTON)) == VOICEMAIL
    text = replace_once(demo_text, 'overflow = "voicemail:anna"\nclosed = "voicemail:anna"\n', "")
    plan = route(parse_site(text), "100", now=JULAFTON)
    assert plan == Reject(480, "Temporarily Unavailable", "group closed: Julafton [100 -> group:reception]")


def test_group_members_who_cannot_answer_are_skipped():
    state = SiteDefaults({"cecilia": activity("cecilia", "semester", None)}, logged_out=[("ekonomi", "elin")])
    plan = route(DEMO, "200", state=state)
    assert shape(plan) == ring_all(("david",), 20.0, RECEPTION)


def test_nobody_registered_goes_to_overflow():
    assert shape(route(DEMO, "100", registered=nobody)) == VOICEMAIL
    assert shape(route(DEMO, "200", registered=lambda u: u == "bjorn")) == ring_all(
        ("bjorn",), 25.0, VOICEMAIL
    )


def test_nobody_and_no_overflow_rejects(demo_text):
    text = replace_once(demo_text, 'overflow = "voicemail:anna"\nclosed = "voicemail:anna"\n', "")
    plan = route(parse_site(text), "100", registered=nobody)
    assert plan == Reject(
        480, "Temporarily Unavailable", "nobody in the group can answer [100 -> group:reception]"
    )


def test_a_group_member_calling_the_group_is_not_rung():
    assert shape(route(DEMO, "100", caller=ANNA)) == ring_all(("bjorn",), 25.0, VOICEMAIL)


def test_members_personal_forwards_do_not_apply_inside_a_group(demo_text):
    text = replace_once(
        demo_text, 'forwards = { busy = "voicemail:bjorn" }', 'forwards = { always = "user:david" }'
    )
    assert shape(route(parse_site(text), "100")) == RECEPTION


# --- activities (hänvisning) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (OUTSIDE, ring_all(("bjorn",), 25.0, VOICEMAIL)),  # lunch -> reception, anna herself skipped
        (Caller(None, "070-174 06 50"), ANNA_NO_TRUNK),  # VIP rings through
        (Caller(None, "+46701740650"), ANNA_NO_TRUNK),
        (Caller(None, "0046701740650"), ANNA_NO_TRUNK),
        (Caller("david", "202"), ring_all(("bjorn",), 25.0, VOICEMAIL)),  # a colleague is no VIP
        (Caller("bjorn", "102"), VOICEMAIL),  # nor the only member left to ring: the caller
    ],
)
def test_an_active_activity_forwards_except_for_vips(caller, expected):
    state = SiteDefaults({"anna": activity("anna", "lunch", OPEN + timedelta(hours=1))})
    assert shape(route(DEMO, "101", caller=caller, state=state)) == expected


def test_an_office_users_own_numbers_count_for_vip_lists(demo_text):
    text = replace_once(demo_text, 'vip = ["070-174 06 50"]', 'vip = ["08-465 004 02"]')
    state = SiteDefaults({"anna": activity("anna", "mote", None)})
    site = parse_site(text)
    assert shape(route(site, "101", caller=Caller("bjorn", "102"), state=state)) == ANNA_NO_TRUNK
    assert shape(route(site, "101", caller=Caller("david", "202"), state=state)) == VOICEMAIL


def test_an_activity_until_further_notice_applies_and_one_that_ended_does_not():
    meeting = activity("anna", "mote", None)
    assert shape(route(DEMO, "101", state=SiteDefaults({"anna": meeting}))) == VOICEMAIL
    ended = activity("anna", "mote", OPEN - timedelta(minutes=1))
    assert shape(route(DEMO, "101", state=SiteDefaults({"anna": ended}))) == ANNA_NO_TRUNK


def test_an_ended_activity_from_a_lagging_state_is_ignored():
    class Lagging(SiteDefaults):
        def activity(self, user: User, now: datetime) -> ActiveActivity | None:
            return activity("anna", "mote", OPEN - timedelta(seconds=1)) if user.id == "anna" else None

    assert shape(route(DEMO, "101", state=Lagging())) == ANNA_NO_TRUNK


def test_an_activity_to_a_mobile_goes_out_the_trunk():
    state = SiteDefaults({"cecilia": activity("cecilia", "semester", None)})
    plan = route(DEMO_TRUNK, "201", state=state)
    assert plan == Trunk(
        "+46701740606",
        "+46846500499",
        "external [201 -> user:cecilia -> (activity semester) tel:+46701740606]",
    )


# --- forwards ---------------------------------------------------------------------------------


def test_always_busy_and_no_answer_forwards():
    assert shape(route(DEMO_TRUNK, "301")) == ANNA_WITH_TRUNK
    bjorn = route(DEMO, "102")
    assert (
        bjorn.on_busy.why
        == "voicemail needs the cloud; local mode has none [102 -> user:bjorn -> (busy) voicemail:bjorn]"
    )
    anna = route(DEMO_TRUNK, "101")
    assert anna.on_unavailable is anna.on_no_answer  # an unregistered phone is one nobody answers


def test_a_user_without_forwards_rings_until_the_caller_gives_up():
    assert shape(route(DEMO, "202")) == ring(("david",), None)


FORWARD_LOOP = small_site(
    user_toml("a", "11", 'forwards = { no_answer = "user:b", no_answer_after = 10 }')
    + user_toml("b", "12", 'forwards = { no_answer = "user:a" }')
)


def test_a_forward_loop_stops_with_a_clear_reject():
    plan = route(FORWARD_LOOP, "11")
    assert shape(plan) == ring(
        ("a",),
        10.0,
        ring(("b",), 20.0, VOICEMAIL, None, VOICEMAIL),
        None,
        ring(("b",), 20.0, VOICEMAIL, None, VOICEMAIL),
    )
    assert (
        plan.on_no_answer.on_no_answer.why
        == "forward loop [11 -> user:a -> (no answer) user:b -> (no answer) user:a]"
    )


class Overrides(SiteDefaults):
    """Forwards the users set since the site was written (what issue 10's store will hold)."""

    def __init__(self, forwards: dict[str, Forwards], **kwargs) -> None:
        super().__init__(**kwargs)
        self._forwards = forwards

    def forwards(self, user: User) -> Forwards:
        return self._forwards.get(user.id, user.forwards)


def test_an_always_loop_from_state_that_the_site_check_would_refuse_stops():
    state = Overrides({"a": Forwards(always="user:b"), "b": Forwards(always="user:a")})
    plan = route(FORWARD_LOOP, "12", state=state)
    assert plan == Reject(
        480, "Temporarily Unavailable", "forward loop [12 -> user:b -> (always) user:a -> (always) user:b]"
    )


CHAIN = small_site(
    "".join(
        user_toml(f"u{i}", f"{10 + i}", f'forwards = {{ always = "user:u{i + 1}" }}') for i in range(1, 7)
    )
    + user_toml("u7", "17"),
    main_entry="user:u1",
)


def test_forward_chains_stop_after_the_depth_limit():
    assert MAX_FORWARDS == 5
    assert shape(route(CHAIN, "12")) == ring(("u7",), None)  # u2 -> ... -> u7: five forwards
    plan = route(CHAIN, "11")  # u1 -> ... -> u7: six
    assert shape(plan) == ("reject", 480)
    assert plan.why.startswith("too many forwards [11 -> user:u1 -> (always) user:u2")


def test_a_forward_to_an_office_number_stays_inside_and_to_a_mobile_goes_out():
    site = small_site(
        user_toml("a", "11", 'forwards = { busy = "tel:08-465 004 12" }\nmobile = "070-174 06 11"')
        + user_toml("b", "12", 'direct_number = "08-465 004 12"'),
        TRUNK,
    )
    assert shape(route(site, "11")) == ring(("a",), None, None, ring(("b",), None), None)
    state = Overrides({"b": Forwards(always="tel:+46701740611")})
    assert shape(route(site, "12", state=state)) == ("trunk", "+46701740611", "+46846500499")


@pytest.mark.parametrize("target", ["user:ghost", "group:ghost", "menu:ghost", "nonsense"])
def test_a_forward_to_something_no_longer_in_the_site_is_not_found(target):
    state = Overrides({"a": Forwards.model_construct(always=target)})
    plan = route(FORWARD_LOOP, "11", state=state)
    assert shape(plan) == ("reject", 404)


def test_calling_yourself_rings_your_other_phones_and_a_forward_back_to_you_is_busy():
    assert shape(route(DEMO_TRUNK, "101", caller=ANNA)) == ring(("anna",), None)
    plan = route(DEMO, "301", caller=ANNA)
    assert plan == Reject(
        486, "Busy Here", "forwarded back to the caller [301 -> user:fredrik -> (always) user:anna]"
    )


# --- emergency and external calls -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "sent"),
    [
        ("112", "112"),
        ("1 1 2", "112"),
        ("+46112", "112"),
        ("0046112", "112"),
        ("911", "112"),
        ("90000", "112"),
        ("11414", "11414"),
        ("1177", "1177"),
        ("11313", "11313"),
        ("116000", "116000"),
        ("116111", "116111"),
    ],
)
@pytest.mark.parametrize(("caller", "caller_id"), [(ANNA, "+46846500401"), (OUTSIDE, "+46846500499")])
def test_emergency_numbers_go_out_the_trunk_from_anyone(dialled, sent, caller, caller_id):
    assert is_emergency(dialled)
    assert shape(route(DEMO_TRUNK, dialled, caller=caller, registered=nobody)) == ("trunk", sent, caller_id)


def test_emergency_comes_before_the_sites_own_extensions():
    site = small_site(user_toml("a", "112", 'forwards = { always = "voicemail:a" }'), TRUNK)
    plan = route(site, "112", caller=Caller("a", "112"))
    assert plan == Trunk("112", "+46846500499", "emergency number 112 [112]")
    assert emergency_route_warning(site) == (
        "extension 112 is an emergency or service number: local mode always sends it out to the trunk"
    )


def test_emergency_without_a_trunk_is_refused_at_once_and_warned_at_load_time():
    plan = route(DEMO, "112", caller=ANNA)
    assert plan == Reject(
        503, "Service Unavailable", "no emergency route in local mode: no fallback trunk [112]"
    )
    warning = emergency_route_warning(DEMO)
    assert warning is not None
    assert "no fallback_trunk" in warning
    assert "112" in warning
    assert emergency_route_warning(DEMO_TRUNK) is None


@pytest.mark.parametrize("dialled", ["113", "1121", "0112", "+46846500401", "", "999"])
def test_other_numbers_are_not_emergency(dialled):
    assert not is_emergency(dialled)


@pytest.mark.parametrize(
    ("site", "caller", "expected"),
    [
        (DEMO_TRUNK, ANNA, ("trunk", "+46701740699", "+46846500401")),  # the caller's direct number
        (DEMO_TRUNK, ELIN, ("trunk", "+46701740699", "+46846500499")),  # else the trunk's caller id
        (parse_site(demo_site_text() + TRUNK_WITHOUT_ID), ELIN, ("trunk", "+46701740699", "+46846500400")),
        (DEMO_TRUNK, OUTSIDE, ("reject", 403)),  # nobody outside calls out through the office
        (DEMO, ANNA, ("reject", 503)),
    ],
)
def test_external_numbers(site, caller, expected):
    assert shape(route(site, "070-174 06 99", caller=caller)) == expected


def test_external_number_forms_and_short_numbers():
    assert route(DEMO_TRUNK, "00442079460000", caller=ANNA).number == "+442079460000"
    assert shape(route(DEMO_TRUNK, "118 118", caller=ANNA)) == ("trunk", "118118", "+46846500401")
    assert shape(route(DEMO, "118118", caller=ANNA)) == ("reject", 503)
    plan = route(DEMO, "070-174 06 99", caller=ANNA)
    assert plan.why == "external calls need the cloud or a fallback trunk [0701740699 -> tel:+46701740699]"


def test_unknown_short_number_is_not_found():
    plan = route(DEMO_TRUNK, "1234", caller=ANNA)
    assert plan == Reject(404, "Not Found", "no such extension or number [1234]")


def test_why_never_breaks_a_header_line(demo_text):
    plan = route(DEMO, '1\r\nX-Evil: "yes"\\', caller=ANNA)
    assert plan.why == "no such extension or number [1XEvil:?yes??]"
    text = replace_once(demo_text, 'reason = "Mellandagsstängt"', 'reason = "Stängt \\"flytt\\"\\nnu"')
    closed = route(parse_site(text), "100", now=datetime(2026, 12, 29, 10, tzinfo=STOCKHOLM))
    assert closed.why.endswith("(closed: Stängt ?flytt??nu) voicemail:anna]")


# --- properties -------------------------------------------------------------------------------


def check_plan(plan: Plan, site: Site, limit: int) -> None:
    """Every plan is well formed, ends within `limit` nested rings, and names only site users."""
    users = {u.id for u in site.users}

    def walk(node: Plan | None, depth: int) -> None:
        assert depth <= limit
        if node is None:
            return
        assert node.why
        assert len(node.why) <= MAX_WHY
        assert all(c.isprintable() and c not in '"\\' for c in node.why), node.why
        if isinstance(node, Reject):
            assert node.status in (403, 404, 480, 486, 503)
        if isinstance(node, Ring):
            assert node.users
            assert set(node.users) <= users
            assert node.ring_time is None or node.ring_time > 0
            for follow in (node.on_no_answer, node.on_busy, node.on_unavailable):
                walk(follow, depth + 1)

    walk(plan, 0)


KNOWN = ["101", "100", "200", "0846500400", "0701740605", "112", "911", "+46701740699", "1177", "118118"]


@settings(max_examples=300, deadline=None)
@given(
    dialled=st.one_of(
        st.sampled_from(KNOWN), st.text(max_size=40), st.from_regex(r"[0-9+*# ()-]{0,20}", fullmatch=True)
    ),
    caller=st.builds(
        Caller, st.sampled_from([None, "anna", "elin", "ghost"]), st.one_of(st.none(), st.text(max_size=20))
    ),
    site=st.sampled_from([DEMO, DEMO_TRUNK]),
)
def test_any_dialled_text_gets_a_plan(dialled, caller, site):
    plan = plan_call(site, dialled, caller, OPEN, SiteDefaults(), everyone)
    check_plan(plan, site, limit=20)
    if is_emergency(dialled):
        assert isinstance(plan, Trunk if site.fallback_trunk else Reject)
        assert not isinstance(plan, Trunk) or plan.number in EMERGENCY.values()


TARGETS = [
    "user:u0", "user:u1", "user:u2", "user:u3", "user:ghost", "group:g0", "group:g1", "group:ghost",
    "menu:m0", "menu:ghost", "voicemail:u1", "tel:+46846500401", "tel:+46846500400", "tel:+46846500420",
    "tel:+46701740699",
]  # fmt: skip
GARBAGE = ["nonsense", "tel:", "user:", ":", ""]


@dataclass
class Graph:
    """A UserState with arbitrary forwards and activities (as a buggy or stale store might hold)."""

    forwards_of: dict[str, Forwards]
    activities: dict[str, ActiveActivity]
    logged_out: set[tuple[str, str]] = field(default_factory=set)

    def forwards(self, user: User) -> Forwards:
        return self.forwards_of.get(user.id, user.forwards)

    def activity(self, user: User, now: datetime) -> ActiveActivity | None:
        return self.activities.get(user.id)

    def logged_in(self, group: Group, user_id: str) -> bool:
        return (group.id, user_id) not in self.logged_out


any_target = st.sampled_from(TARGETS + GARBAGE)
maybe_target = st.one_of(st.none(), any_target)
forwards = st.builds(
    lambda always, no_answer, busy, after: Forwards.model_construct(
        always=always, no_answer=no_answer, busy=busy, no_answer_after=after
    ),
    maybe_target,
    maybe_target,
    maybe_target,
    st.integers(5, 600),
)
active = st.builds(
    lambda target, minutes: ActiveActivity(
        Activity.model_construct(id="x", name="X", number=1, default_minutes=0, forward=target),
        None if minutes is None else OPEN + timedelta(minutes=minutes),
    ),
    any_target,
    st.one_of(st.none(), st.integers(-120, 120)),
)
valid_target = st.sampled_from(TARGETS)
members = st.lists(st.sampled_from(["u0", "u1", "u2", "u3"]), min_size=1, max_size=4, unique=True)


def graph_site(draw: st.DrawFn) -> Site:
    users = [
        {
            "id": f"u{i}",
            "name": f"U{i}",
            "extension": f"1{i}",
            "sip": {"user": f"u{i}", "password": "password"},
        }
        for i in range(4)
    ]
    users[0]["direct_number"] = "08-465 004 01"
    users[1]["mobile"] = "070-174 06 05"
    users[2]["vip"] = ["+46701740650"]
    groups = [
        {
            "id": f"g{i}",
            "name": f"G{i}",
            "extension": f"2{i}",
            "strategy": draw(st.sampled_from(["parallel", "sequential"])),
            "members": draw(members),
            "overflow": draw(st.one_of(st.none(), valid_target)),
            "closed": draw(st.one_of(st.none(), valid_target)),
            "schedule": draw(st.sampled_from([None, "s"])),
        }
        for i in range(2)
    ]
    groups[0]["number"] = "08-465 004 20"
    data = {
        "site": {"name": "Graf AB"},
        "cloud": {"domain": "graf.example.net", "proxies": ["sip:pbx.example.net"]},
        "main": {"number": "08-465 004 00", "entry": draw(valid_target)},
        "users": users,
        "groups": groups,
        "menus": [{"id": "m0", "name": "M0", "default": draw(valid_target)}],
        "schedules": [{"id": "s", "name": "S", "weekly": {"tue": ["08:00-12:00"]}}],
    }
    if draw(st.booleans()):
        data["fallback_trunk"] = {"uri": "sip:trunk.example.net"}
    return Site.model_validate(data)  # references unchecked: the graph may hold anything


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_forward_graph_gets_a_plan_that_ends(data):
    site = graph_site(data.draw)
    ids = [f"u{i}" for i in range(4)]
    state = Graph(
        forwards_of=data.draw(st.dictionaries(st.sampled_from(ids), forwards)),
        activities=data.draw(st.dictionaries(st.sampled_from(ids), active)),
        logged_out=data.draw(st.sets(st.tuples(st.sampled_from(["g0", "g1"]), st.sampled_from(ids)))),
    )
    up = data.draw(st.sets(st.sampled_from(ids)))
    dialled = data.draw(st.sampled_from(["10", "11", "12", "13", "20", "21", "0846500400", "0846500401",
                                         "0846500420", "0701740605", "+46701740699", "112", "999"]))  # fmt: skip
    caller = data.draw(
        st.builds(Caller, st.sampled_from([None, *ids]), st.sampled_from([None, "+46701740650", "11"]))
    )
    now = data.draw(st.sampled_from([OPEN, EVENING, JULAFTON, datetime(2026, 3, 10, 9, tzinfo=UTC)]))
    plan = plan_call(site, dialled, caller, now, state, up.__contains__)
    # Each forward hop adds at most one ring per member of a sequential group, plus the user's own.
    check_plan(plan, site, limit=(MAX_FORWARDS + 1) * 5)
