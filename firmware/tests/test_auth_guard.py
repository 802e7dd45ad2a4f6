"""The auth guard without sockets: which answers count as failures, the window, the hold and its
doubling, and each way a held phone is let through again (edge/auth_guard.py)."""

import logging
from types import SimpleNamespace

import pytest
from vaxelbox.agent.management import _auth_alarms
from vaxelbox.edge import auth_guard
from vaxelbox.edge.auth_guard import FAILURES_TO_HOLD, FIRST_HOLD, MAX_HOLD, WINDOW, AuthGuard
from vaxelbox.edge.health import CloudState
from vaxelbox.hw import companion_protocol as wire
from vaxelbox.hw.board_services import BoardServices
from vaxelbox.routing.chain import Next, RequestContext, Target
from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow
from vaxelbox.site import demo_site
from vaxelbox.store.devices import SeenDevice

DOMAIN = "demo.vaxel.example.net"
PHONE = ("192.0.2.21", 5060)
OTHER_PHONE = ("192.0.2.22", 5060)
CREDENTIALS = (
    'Digest username="{user}", realm="{domain}", nonce="n0nce", uri="sip:{domain}", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5'
)
CHALLENGE = 'Digest realm="demo.vaxel.example.net", nonce="n0nce2", algorithm=MD5'
CLOUD = Target("wan", None, label="cloud")


class FakeFlow(Flow):
    transport = "udp"
    reliable = False

    def send(self, data: bytes) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def request(
    method: str = "REGISTER",
    user: str = "101",
    header: str | None = "Authorization",
    username: str | None = None,
    to_tag: str = "",
) -> Request:
    lines = [
        f"{method} sip:{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bK-1",
        f"From: <sip:{user}@{DOMAIN}>;tag=a",
        f"To: <sip:{user}@{DOMAIN}>{to_tag}",
        "Call-ID: c1",
        f"CSeq: 2 {method}",
        "Max-Forwards: 70",
    ]
    if header:
        lines.append(f"{header}: " + CREDENTIALS.format(user=username or user, domain=DOMAIN))
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def context(message: Request, phone: tuple[str, int] = PHONE) -> RequestContext:
    return RequestContext(message, FakeFlow(("192.0.2.1", 5060), phone), "lan", Mode.ONLINE)


def answer(message: Request, status: int, stale: bool = False) -> Response:
    response = make_response(message, status, "Unauthorized")
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    response.add(header, CHALLENGE + (", stale=true" if stale else ""))
    return response


def fail(guard: AuthGuard, times: int = 1, phone: tuple[str, int] = PHONE, **kwargs: str) -> None:
    for _ in range(times):
        message = request(**kwargs)
        guard.observe(context(message, phone), CLOUD, answer(message, 401))


def held(guard: AuthGuard, message: Request | None = None, phone: tuple[str, int] = PHONE) -> bool:
    ctx = context(message or request(header=None), phone)
    outcome = guard.hold(ctx)
    assert (outcome is Next.STOP) == (ctx.response is not None)
    return outcome is Next.STOP


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> AuthGuard:
    return AuthGuard(now=clock)


def test_failures_with_credentials_hold_the_phone_after_the_threshold(guard: AuthGuard) -> None:
    fail(guard, FAILURES_TO_HOLD - 1)
    assert not held(guard)
    fail(guard)
    ctx = context(request(header=None))
    assert guard.hold(ctx) is Next.STOP
    assert ctx.response is not None
    assert ctx.response.status == 403
    reason = ctx.response.get("Reason") or ""
    assert "too many authentication failures" in reason
    assert "until" in reason
    (alarm,) = guard.alarms()
    assert alarm["kind"] == "auth-held"
    assert (alarm["phone"], alarm["aor"], alarm["username"]) == (
        "192.0.2.21:5060",
        f"sip:101@{DOMAIN}",
        "101",
    )
    assert alarm["suppressed"] == 1


def test_first_challenges_stale_nonces_and_other_realms_are_not_failures(guard: AuthGuard) -> None:
    for _ in range(10):
        first = request(header=None)  # the normal first challenge
        guard.observe(context(first), CLOUD, answer(first, 401))
        stale = request()  # right password, old nonce
        guard.observe(context(stale), CLOUD, answer(stale, 401, stale=True))
        proxy = request()  # credentials for the registrar; the proxy asks for its own
        guard.observe(context(proxy), CLOUD, answer(proxy, 407))
        refused = request()  # not an authentication answer
        guard.observe(context(refused), CLOUD, make_response(refused, 403, "Forbidden"))
        guard.observe(context(refused), CLOUD, None)  # a branch that timed out
    assert not held(guard)
    assert guard.alarms() == []


def test_407_to_proxy_credentials_is_a_failure(guard: AuthGuard) -> None:
    for _ in range(FAILURES_TO_HOLD):
        message = request("INVITE", header="Proxy-Authorization")
        guard.observe(context(message), CLOUD, answer(message, 407))
    assert held(guard, request("INVITE", header=None))


def test_failures_outside_the_window_do_not_add_up(guard: AuthGuard, clock: Clock) -> None:
    for _ in range(5):
        fail(guard, FAILURES_TO_HOLD - 1)
        clock.now += WINDOW + 1
    assert not held(guard)


def test_only_the_failing_phone_and_aor_are_held(guard: AuthGuard) -> None:
    fail(guard, FAILURES_TO_HOLD)
    assert held(guard)
    assert held(guard, request("INVITE", header=None))  # its calls too
    assert not held(guard, request(user="102", header=None))  # another line of the same phone
    assert not held(guard, phone=OTHER_PHONE)  # the same user on another phone
    assert not held(guard, request("ACK", header=None))
    assert not held(guard, request("BYE", header=None, to_tag=";tag=b"))  # a call in progress goes on


def test_the_hold_ends_and_each_new_one_is_twice_as_long_up_to_the_ceiling(
    guard: AuthGuard, clock: Clock
) -> None:
    fail(guard, FAILURES_TO_HOLD)
    lengths = []
    for _ in range(6):
        start = clock.now
        clock.now += 1
        assert held(guard)
        while held(guard):
            clock.now += 60
        lengths.append(clock.now - start)
        fail(guard)  # on probation: one more failure holds it again
    rounded = [round(length / 60) * 60 for length in lengths]
    assert rounded == [FIRST_HOLD, 2 * FIRST_HOLD, 4 * FIRST_HOLD, 8 * FIRST_HOLD, MAX_HOLD, MAX_HOLD]


def test_a_success_wipes_the_record(guard: AuthGuard, clock: Clock) -> None:
    fail(guard, FAILURES_TO_HOLD)
    clock.now += FIRST_HOLD
    assert not held(guard)
    ok = request()
    guard.observe(context(ok), CLOUD, make_response(ok, 200, "OK"))
    fail(guard, FAILURES_TO_HOLD - 1)  # a clean record again: one failure no longer holds
    assert not held(guard)


def test_new_credentials_release_the_phone(guard: AuthGuard) -> None:
    fail(guard, FAILURES_TO_HOLD)
    assert held(guard, request())  # the same username again
    assert not held(guard, request(username="101-new"))
    assert guard.alarms() == []


def test_new_provisioning_releases_the_phone(guard: AuthGuard, clock: Clock) -> None:
    fetched: dict[str, float] = {}
    guard.provisioned = fetched.get
    fail(guard, FAILURES_TO_HOLD)
    fetched[PHONE[0]] = clock.now - 1  # fetched before the hold: nothing new
    clock.now += 10
    assert held(guard)
    fetched[PHONE[0]] = clock.now
    assert not held(guard)
    fail(guard)  # still wrong: held again at once, for twice as long
    (alarm,) = guard.alarms()
    assert alarm["suppressed"] == 0


def test_hold_and_release_are_logged_without_secrets(
    guard: AuthGuard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vaxelbox.edge.auth_guard")
    fail(guard, FAILURES_TO_HOLD)
    held(guard, request(username="other"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("auth hold: source=192.0.2.21 phone=192.0.2.21:5060 ")
    assert f"aor=sip:101@{DOMAIN} user=101 failures=3 seconds=300" in lines[0]
    assert lines[1].startswith("auth release: source=192.0.2.21 ")
    assert "reason=new credentials" in lines[1]
    assert not any("0123456789abcdef" in line or "n0nce" in line for line in lines)


def test_the_table_is_bounded(guard: AuthGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_guard, "MAX_RECORDS", 10)
    for port in range(100):
        fail(guard, phone=("192.0.2.50", 10000 + port))
    assert len(guard._records) == 10


def test_status_names_the_user_and_the_mac_provisioning_saw_at_the_phone_address(
    guard: AuthGuard, clock: Clock
) -> None:
    """management's alarms: the site user of the AoR, and the MAC of the phone provisioning saw at the
    held phone's IP (of several there, the one assigned to that user; none when it cannot tell)."""
    site = demo_site()
    agent = SimpleNamespace(edge=SimpleNamespace(relay=SimpleNamespace(auth_guard=guard)))
    fail(guard, FAILURES_TO_HOLD, user="demo-101")  # anna's line
    fail(guard, FAILURES_TO_HOLD, phone=OTHER_PHONE, user="nobody")

    def seen(mac: str, ip: str) -> SeenDevice:
        return SeenDevice(mac, "yealink", "T46U", "1", ip, "Yealink", "cfg", clock(), clock(), None)

    shared_ip = [seen("0015654aa937", PHONE[0]), seen("000413922d24", PHONE[0])]  # anna's and bjorn's
    anna, nobody = _auth_alarms(agent, site, [*shared_ip, seen("64167f123456", OTHER_PHONE[0])])  # type: ignore[arg-type]
    assert (anna["user"], anna["mac"], anna["phone"]) == ("anna", "00:15:65:4a:a9:37", "192.0.2.21:5060")
    assert (nobody["user"], nobody["mac"]) == ("nobody", "64:16:7f:12:34:56")  # the only phone at its IP
    (anna,) = [a for a in _auth_alarms(agent, site, []) if a["user"] == "anna"]  # type: ignore[arg-type]
    assert anna["mac"] is None  # provisioning never saw it
    assert _auth_alarms(SimpleNamespace(edge=None), site, []) == []  # type: ignore[arg-type]


def test_a_long_quiet_after_a_hold_forgets_the_probation(guard: AuthGuard, clock: Clock) -> None:
    fail(guard, FAILURES_TO_HOLD)
    clock.now += FIRST_HOLD + auth_guard.FORGET_AFTER + 1
    assert not held(guard)
    fail(guard)  # one failure after the quiet counts as the first again
    assert not held(guard)


def test_the_time_scale_knob_shortens_every_window_and_hold_alike(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The end-to-end test's knob (VAXELBOX_AUTH_GUARD_TIME_SCALE): the same sequence, in a tenth
    of the time, and a warning that says the timings are not the real ones."""
    monkeypatch.setenv(auth_guard.TIME_SCALE_ENV, "0.1")
    with caplog.at_level(logging.WARNING, logger="vaxelbox.knobs"):
        guard = AuthGuard(now=clock)
    assert "auth guard timings scaled by 0.1" in caplog.text
    assert (guard.window, guard.first_hold, guard.max_hold) == (WINDOW / 10, FIRST_HOLD / 10, MAX_HOLD / 10)
    fail(guard, FAILURES_TO_HOLD)
    clock.now += FIRST_HOLD / 10 - 1
    assert held(guard)
    clock.now += 1
    assert not held(guard)  # released after a tenth of FIRST_HOLD
    fail(guard)  # on probation: held again at once, twice as long
    clock.now += 2 * FIRST_HOLD / 10 - 1
    assert held(guard)


@pytest.mark.parametrize("value", ["0", "2", "fast"])
def test_a_time_scale_outside_zero_to_one_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(auth_guard.TIME_SCALE_ENV, value)
    with pytest.raises(ValueError, match=r"is not a number|must be in \(0, 1\]"):
        AuthGuard()


def test_without_the_knob_the_real_timings_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth_guard.TIME_SCALE_ENV, raising=False)
    guard = AuthGuard()
    assert (guard.window, guard.first_hold, guard.max_hold, guard.forget_after) == (
        WINDOW, FIRST_HOLD, MAX_HOLD, auth_guard.FORGET_AFTER,
    )  # fmt: skip


def test_a_held_phone_lights_the_companions_fault_code(guard: AuthGuard) -> None:
    """The LED state the agent sends its companion (hw.board_services) carries fault code 3 while
    the guard holds a phone, and none otherwise. The agent around the real guard is a stand-in
    (only the attributes leds() reads): the real companion link is in test_companion_link.py."""
    agent = SimpleNamespace(
        local=None,
        health=SimpleNamespace(state=CloudState.UP),
        store=SimpleNamespace(devices=SimpleNamespace(enrolment=lambda: None)),
        management=None,
        edge=SimpleNamespace(relay=SimpleNamespace(auth_guard=guard)),
    )
    services = BoardServices.__new__(BoardServices)
    services.agent = agent
    assert services.leds().fault == 0
    fail(guard, times=FAILURES_TO_HOLD)
    assert held(guard)
    assert services.leds().fault == wire.FAULT_AGENT
