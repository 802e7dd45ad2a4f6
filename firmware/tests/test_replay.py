"""Journal replay (issue 10): after failback, each star code dialled while local goes to the cloud.

Units without sockets: the INVITE as the cloud parses it ('#' as %23, the
user's AoR, a fresh Call-ID, an offer), strict journal order, one challenge
answered with the user's credentials (checked by a real server-side
verifier), 2xx -> ACK (outside the transaction) + BYE, a refusal is final,
transient failures retried with backoff and bounded, the ring limit, stops;
the runner over an in-memory stack, writing a real store's journal. End to
end: the real agent in local mode, entries in its store, Kamailio started at
the cloud's address with a config copy that challenges star-code INVITEs and
answers them (one refused, one failing once); the cloud must see every code
in journal order, authenticated as its user, and the store must say what
the cloud answered.
"""

import asyncio
import bisect
import itertools
import json
import random
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import peers
import pytest
from agent_process import AgentProcess
from peers import free_port
from test_failback import FAST_RETURN, FailbackOffice
from test_local_mode import ended, heard, until_registered
from vaxelbox.local.registrar import challenge
from vaxelbox.local.replay import (
    BACKOFF,
    BACKOFF_SCALE_ENV,
    CANCEL_GRACE,
    MAX_ATTEMPTS,
    RING_LIMIT,
    USER_AGENT,
    USER_GONE,
    Attempt,
    Caller,
    ReplayPlan,
    ReplayRunner,
    Steps,
    callers,
    code_uri,
)
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow
from vaxelbox.site.loader import parse_site
from vaxelbox.store import Store
from vaxelbox.store.journal import JournalEntry

DOMAIN = "demo.vaxel.example.net"
WAN = ("198.51.100.7", 5062)
PASSWORDS = {"101": "pw-101-secret", "102": "pw-102-secret"}
CLOUD_CONTACT = "<sip:cloud-ivr@203.0.113.5:5060;transport=tcp>"


def entry(number: int, user: str, code: str, attempts: int = 0) -> JournalEntry:
    return JournalEntry(number, user, code, 1_700_000_000.0 + number, "done", "pending", attempts, None, None)


JOURNAL = [
    entry(1, "u101", "*21*0701234567#"),
    entry(2, "u102", "*61*101*20#"),
    entry(3, "u101", "#21#"),
    entry(4, "u101", "*21*102#"),
    entry(5, "u102", "#61#"),
]


def caller(user_id: str) -> Caller | None:
    sip_user = user_id.removeprefix("u")
    password = PASSWORDS.get(sip_user)
    return None if password is None else Caller(f"sip:{sip_user}@{DOMAIN}", sip_user, password)


def plan(entries=JOURNAL, seed: int = 1, **kwargs) -> ReplayPlan:
    return ReplayPlan(entries, caller, DOMAIN, WAN, 0.0, rng=random.Random(seed), **kwargs)


def wire(message: Request | Response) -> Request | Response:
    """What the other side parses: the message serialised and read back."""
    return parse_message(message.to_bytes())


def answered(invite: Request, status: int = 200, reason: str = "OK") -> Response:
    response = make_response(invite, status, reason, to_tag="cloud-tag")
    if status < 300:
        response.add("Record-Route", "<sip:203.0.113.9;lr>")
        response.add("Record-Route", "<sip:203.0.113.5;transport=tcp;lr>")
        response.add("Contact", CLOUD_CONTACT)
        response.add("Content-Type", "application/sdp")
        response.body = b"v=0\r\no=pbx 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n"
    return response


class Cloud:
    """A cloud PBX that challenges star-code INVITEs like Kamailio's proxy_challenge (our own
    server-side digest) and answers them by `rules` (code -> a status per attempt, 200 after)."""

    def __init__(self, rules: dict[str, list[int]] | None = None, status: int = 407) -> None:
        self.auth = SipDigest(DOMAIN, algorithms=("MD5",))
        self.rules = {code: list(statuses) for code, statuses in (rules or {}).items()}
        self.status = status
        self.header = "Proxy-Authorization" if status == 407 else "Authorization"
        self.accepted: list[tuple[str, str, int]] = []  # (From user, R-URI user, CSeq) as authenticated

    def __call__(self, invite: Request) -> Response:
        request = wire(invite)
        assert isinstance(request, Request)
        verdict = self.auth.verify("INVITE", request.uri, request.get_all(self.header), PASSWORDS.get)
        user = request.from_.uri.user  # type: ignore[union-attr]
        if verdict.username is None or verdict.username != user:
            return challenge(request, self.status, self.auth, verdict.stale)
        code = request.uri.user  # type: ignore[union-attr]
        self.accepted.append((user, code, request.cseq[0]))
        statuses = self.rules.get(code)
        status = statuses.pop(0) if statuses else 200
        reasons = {
            200: "OK",
            403: "Forbidden",
            404: "Not Found",
            503: "Service Unavailable",
            408: "Request Timeout",
        }
        return answered(request, status, reasons.get(status, "Whatever"))


def drive(replay: ReplayPlan, cloud) -> tuple[list[Request], list[Steps], list[float]]:
    """Run the plan on simulated time, each INVITE answered at once: the INVITEs, the steps their
    answers asked for, and when each INVITE left."""
    now, invites, steps, times = 0.0, [], [], []
    while not replay.finished:
        wait = replay.due(now)
        assert wait is not None, "nothing in flight, so something is due"
        now += wait
        step = replay.next(now, "tcp")
        steps.append(step)
        if step.invite is not None:
            invites.append(step.invite)
            times.append(now)
            steps.append(replay.on_response(step.invite, cloud(step.invite), now))
    return invites, steps, times


def records(steps: list[Steps]) -> list[Attempt]:
    return [record for step in steps for record in step.records]


# -- the INVITE ---------------------------------------------------------------------------------


def test_code_uris_escape_the_hash_and_keep_the_star() -> None:
    assert code_uri("*21*0701234567#", DOMAIN) == f"sip:*21*0701234567%23@{DOMAIN}"
    assert code_uri("#21#", DOMAIN) == f"sip:%2321%23@{DOMAIN}"


def test_the_invite_is_the_users_own_call_to_the_code() -> None:
    step = plan().next(0.0, "tcp")
    assert step.invite is not None
    invite = wire(step.invite)
    assert isinstance(invite, Request)
    assert invite.start_line() == f"INVITE sip:*21*0701234567%23@{DOMAIN} SIP/2.0"
    assert str(invite.from_.uri) == f"sip:101@{DOMAIN}"
    assert invite.from_.tag
    assert str(invite.to.uri) == f"sip:*21*0701234567%23@{DOMAIN}"
    assert invite.to.tag is None
    assert invite.cseq == (1, "INVITE")
    assert invite.call_id.startswith("jr-")
    assert invite.get("Contact") == f"<sip:{WAN[0]}:{WAN[1]};transport=tcp>"
    assert invite.get("User-Agent") == USER_AGENT
    assert USER_AGENT.startswith("Vaxelbox/")
    assert USER_AGENT.endswith("(journal replay)")
    assert invite.get("Expires") == str(RING_LIMIT)
    assert invite.max_forwards == 70
    (via,) = invite.vias
    assert (via.transport, via.host, via.port) == ("TCP", *WAN)
    assert (via.branch or "").startswith("z9hG4bK")
    assert "alias" in via.params
    assert "rport" in via.params
    assert invite.get("Content-Type") == "application/sdp"
    body = invite.body.decode()
    assert f"c=IN IP4 {WAN[0]}" in body
    assert re.search(r"^m=audio \d+ RTP/AVP( \d+)+\r$", body, re.M)
    assert invite.get("Proxy-Authorization") is None
    assert invite.get("Authorization") is None


def test_each_entry_gets_its_own_call_id_and_over_udp_no_alias() -> None:
    invites, _, _ = drive(plan(), Cloud())
    first_of_each = [i for i in invites if i.cseq[0] == 1]
    assert len({i.call_id for i in first_of_each}) == len(JOURNAL)
    step = plan().next(0.0, "udp")
    assert step.invite is not None
    assert "alias" not in step.invite.vias[0].params
    assert step.invite.get("Contact") == f"<sip:{WAN[0]}:{WAN[1]};transport=udp>"


# -- order, challenge, pace ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [407, 401])
def test_every_entry_reaches_the_cloud_in_journal_order_as_its_user(status: int) -> None:
    cloud = Cloud(status=status)
    replay = plan()
    invites, steps, _ = drive(replay, cloud)
    assert cloud.accepted == [
        ("101", "*21*0701234567%23", 2),
        ("102", "*61*101*20%23", 2),
        ("101", "%2321%23", 2),
        ("101", "*21*102%23", 2),
        ("102", "%2361%23", 2),
    ]
    # One challenge per entry, answered in the same call (Call-ID), CSeq 2, with the right header.
    assert len(invites) == 2 * len(JOURNAL)
    for first, second in zip(invites[::2], invites[1::2], strict=True):
        assert second.call_id == first.call_id
        assert second.cseq == (2, "INVITE")
        assert second.get("Proxy-Authorization" if status == 407 else "Authorization")
        assert str(second.uri) == str(first.uri)
    done = records(steps)
    assert [(r.entry.id, r.state, r.answer) for r in done] == [(e.id, "replayed", "200 OK") for e in JOURNAL]
    report = replay.report()
    assert (report.entries, report.replayed, report.failed, report.left, report.invites) == (5, 5, 0, 0, 10)


def test_nothing_else_leaves_while_an_invite_is_in_flight() -> None:
    replay = plan()
    first = replay.next(0.0, "tcp").invite
    assert first is not None
    assert replay.due(10.0) is None
    assert replay.next(10.0, "tcp") == Steps()
    assert replay.on_response(first, make_response(first, 183, "Session Progress"), 10.0) == Steps()
    assert replay.due(11.0) is None  # a provisional is no answer: wait
    replay.on_response(first, answered(first), 12.0)
    second = replay.next(12.0, "tcp").invite
    assert second is not None
    assert second.uri.user == "*61*101*20%23"  # type: ignore[union-attr]


def test_never_more_than_the_rate_in_any_second() -> None:
    many = [entry(n, "u101", f"*21*{n:04}#") for n in range(1, 31)]
    _, _, times = drive(plan(many, rate=5), Cloud())
    assert len(times) == 60  # challenge answers count too
    for at in times:
        assert bisect.bisect_left(times, at + 1.0) - bisect.bisect_left(times, at) <= 5
    assert times[-1] == pytest.approx(59 * (1 / 5 + 0.01))  # not slower either


def test_a_second_challenge_is_a_refusal_and_not_retried() -> None:
    cloud = Cloud()
    wrong = lambda user_id: replace(caller(user_id), password="not-it")  # noqa: E731
    replay = ReplayPlan(JOURNAL[:2], wrong, DOMAIN, WAN, 0.0, rng=random.Random(1))
    invites, steps, _ = drive(replay, cloud)
    assert len(invites) == 4  # each entry: the INVITE and its one answer to the challenge
    assert [(r.entry.id, r.state, r.answer) for r in records(steps)] == [
        (1, "failed", "407 Proxy Authentication Required"),
        (2, "failed", "407 Proxy Authentication Required"),
    ]


def test_a_user_gone_from_the_site_fails_without_a_call() -> None:
    gone = entry(9, "u999", "*21*101#")
    replay = plan([gone, JOURNAL[0]])
    invites, steps, _ = drive(replay, Cloud())
    assert [str(i.from_.uri) for i in invites] == [f"sip:101@{DOMAIN}"] * 2
    assert [(r.entry.id, r.state, r.answer) for r in records(steps)] == [
        (9, "failed", USER_GONE),
        (1, "replayed", "200 OK"),
    ]


def test_callers_come_from_the_site_by_user_id() -> None:
    site = parse_site(E2E_SITE.replace("@CLOUD_PORT@", "5060"))
    found = callers(site)("u101")
    assert found == Caller(f"sip:101@{peers.DOMAIN}", "101", E2E_USERS["101"])
    assert E2E_USERS["101"] not in repr(found)
    assert callers(site)("u999") is None


# -- the answer ---------------------------------------------------------------------------------


def test_a_2xx_is_acknowledged_outside_the_transaction_and_hung_up() -> None:
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    ok = answered(invite)
    step = replay.on_response(invite, ok, 0.1)
    assert [(r.state, r.answer) for r in step.records] == [("replayed", "200 OK")]
    assert step.ack is not None
    ack, (bye,) = wire(step.ack), [wire(r) for r in step.requests]
    assert isinstance(ack, Request)
    assert isinstance(bye, Request)
    for request, cseq in ((ack, (1, "ACK")), (bye, (2, "BYE"))):
        assert str(request.uri) == "sip:cloud-ivr@203.0.113.5:5060;transport=tcp"  # the remote target
        assert request.get_all("Route") == ["<sip:203.0.113.5;transport=tcp;lr>", "<sip:203.0.113.9;lr>"]
        assert request.call_id == invite.call_id
        assert request.get("From") == invite.get("From")
        assert request.to.tag == "cloud-tag"
        assert request.cseq == cseq
        assert request.vias[0].branch != invite.vias[0].branch  # its own transaction (§13.2.2.4)
        assert (request.vias[0].host, request.vias[0].port) == WAN
        assert not request.body
    assert ack.vias[0].branch != bye.vias[0].branch
    # A retransmitted 2xx is acknowledged again; there is one BYE and one record.
    again = replay.on_response(invite, ok, 0.6)
    assert again.ack is not None
    assert (again.requests, again.records) == ([], [])
    assert again.ack.cseq == (1, "ACK")


def test_a_2xx_without_contact_or_record_route_goes_back_to_the_request_uri() -> None:
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    step = replay.on_response(invite, make_response(invite, 200, "OK", to_tag="t"), 0.1)
    assert step.ack is not None
    assert str(step.ack.uri) == str(invite.uri)
    assert step.ack.get("Route") is None


def test_a_refusal_is_final_and_the_next_entry_follows() -> None:
    cloud = Cloud({"*61*101*20%23": [403]})
    replay = plan()
    _, steps, _ = drive(replay, cloud)
    assert [(r.entry.id, r.state, r.answer) for r in records(steps)] == [
        (1, "replayed", "200 OK"),
        (2, "failed", "403 Forbidden"),
        (3, "replayed", "200 OK"),
        (4, "replayed", "200 OK"),
        (5, "replayed", "200 OK"),
    ]
    assert [code for _, code, _ in cloud.accepted].count("*61*101*20%23") == 1
    assert not any(s.ack for s in steps if any(r.state == "failed" for r in s.records))
    report = replay.report()
    assert (report.replayed, report.failed, report.left) == (4, 1, 0)


@pytest.mark.parametrize(("status", "reason"), [(503, "Service Unavailable"), (408, "Request Timeout")])
def test_a_transient_failure_is_retried_with_backoff_and_then_given_up(status: int, reason: str) -> None:
    cloud = Cloud({"*21*0701234567%23": [status] * 5})
    replay = plan(JOURNAL[:2])
    invites, steps, times = drive(replay, cloud)
    first = [(at, i) for at, i in zip(times, invites, strict=True) if i.uri.user == "*21*0701234567%23"]  # type: ignore[union-attr]
    assert len(first) == 2 * MAX_ATTEMPTS == 6  # three attempts, each challenged and answered
    starts = [at for at, i in first if i.cseq[0] == 1]
    for gap, base in zip([b - a for a, b in itertools.pairwise(starts)], BACKOFF, strict=True):
        assert 0.8 * base <= gap <= 1.2 * base + 1.0
    assert len({i.call_id for _, i in first}) == MAX_ATTEMPTS  # a retry is a new call
    answer = f"{status} {reason}"
    done = records(steps)
    assert [(r.entry.id, r.state, r.answer) for r in done] == [
        (1, "pending", answer),
        (1, "pending", answer),
        (1, "failed", answer),
        (2, "replayed", "200 OK"),
    ]
    assert [r.retry_in is not None for r in done] == [True, True, False, False]
    # The second entry waited: it left only after the first was given up.
    assert min(at for at, i in zip(times, invites, strict=True) if i.uri.user == "*61*101*20%23") > starts[-1]  # type: ignore[union-attr]


def test_the_backoff_is_5_and_15_s_and_only_the_test_knob_scales_it(monkeypatch) -> None:
    monkeypatch.delenv(BACKOFF_SCALE_ENV, raising=False)
    assert plan().backoff == BACKOFF == (5.0, 15.0)
    monkeypatch.setenv(BACKOFF_SCALE_ENV, "0.2")
    assert plan().backoff == (1.0, 3.0)
    assert plan(backoff=(2.0,)).backoff == (2.0,)  # an explicit backoff wins
    for wrong in ("2", "0", "soon"):
        monkeypatch.setenv(BACKOFF_SCALE_ENV, wrong)
        with pytest.raises(ValueError, match=BACKOFF_SCALE_ENV):
            plan()


def test_a_transient_failure_then_success_is_replayed() -> None:
    replay = plan(JOURNAL[:1])
    _, steps, _ = drive(replay, Cloud({"*21*0701234567%23": [503]}))
    assert [(r.state, r.answer) for r in records(steps)] == [
        ("pending", "503 Service Unavailable"),
        ("replayed", "200 OK"),
    ]


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    replay = plan(JOURNAL[:1])
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    busy = make_response(invite, 503, "Service Unavailable")
    busy.add("Retry-After", "120 (maintenance);duration=60")
    (record,) = replay.on_response(invite, busy, 1.0).records
    assert record.retry_in == 120
    assert replay.due(1.0) == pytest.approx(120)


@pytest.mark.parametrize("written", ["\u00b2", "\u0661\u0662\u0660"])
def test_a_retry_after_in_other_digits_is_malformed_and_ignored(written: str) -> None:
    """'²' once reached float() (ValueError out of on_response); '١٢٠' was read as 120 s. Malformed,
    it is ignored: the usual backoff (5 s +-20 %)."""
    replay = plan(JOURNAL[:1])
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    busy = make_response(invite, 503, "Service Unavailable")
    busy.add("Retry-After", written)
    (record,) = replay.on_response(invite, busy, 1.0).records
    assert record.retry_in is not None
    assert 4.0 <= record.retry_in <= 6.0


def test_no_answer_and_no_way_to_the_cloud_are_transient() -> None:
    replay = plan(JOURNAL[:1])
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    (timeout,) = replay.on_timeout(invite, 32.0).records
    assert (timeout.state, timeout.answer) == ("pending", "no answer")
    assert replay.on_timeout(invite, 33.0) == Steps()  # once
    now = 32.0 + replay.due(32.0)  # type: ignore[operator]
    (no_flow,) = replay.no_flow(now, "connection refused").records
    assert (no_flow.state, no_flow.answer) == ("pending", "no way to the cloud: connection refused")
    assert replay.report().invites == 1


def test_attempts_count_across_failbacks() -> None:
    tried = entry(1, "u101", "*21*0701234567#", attempts=MAX_ATTEMPTS - 1)
    replay = plan([tried])
    _, steps, _ = drive(replay, Cloud({"*21*0701234567%23": [503]}))
    assert [(r.state, r.answer) for r in records(steps)] == [("failed", "503 Service Unavailable")]


def test_a_code_still_ringing_at_the_limit_is_cancelled_and_retried() -> None:
    replay = plan(JOURNAL[:1])
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    assert replay.expire(RING_LIMIT + 1) == Steps()  # no provisional yet: §9.1 forbids a CANCEL
    replay.on_response(invite, make_response(invite, 180, "Ringing"), RING_LIMIT + 2)
    (cancel,) = replay.expire(RING_LIMIT + 2).requests
    assert cancel.method == "CANCEL"
    assert cancel.vias[0].branch == invite.vias[0].branch
    assert cancel.cseq == (1, "CANCEL")
    assert str(cancel.uri) == str(invite.uri)
    assert replay.expire(RING_LIMIT + 3) == Steps()  # one CANCEL
    (record,) = replay.on_response(
        invite, make_response(invite, 487, "Request Terminated"), RING_LIMIT + 3
    ).records
    assert (record.state, record.answer) == ("pending", f"no final answer within {RING_LIMIT} s")


def test_an_invite_never_finally_answered_is_given_up() -> None:
    replay = plan(JOURNAL[:1])
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    replay.on_response(invite, make_response(invite, 183, "Session Progress"), 1.0)
    replay.expire(RING_LIMIT)  # the CANCEL, never answered
    (record,) = replay.expire(RING_LIMIT + CANCEL_GRACE).records
    assert (record.state, record.answer) == ("pending", "no final answer")
    # A 2xx that comes after all still gets its ACK and BYE, but the attempt is over.
    late = replay.on_response(invite, answered(invite), RING_LIMIT + CANCEL_GRACE + 1)
    assert late.ack is not None
    assert (len(late.requests), late.records) == (1, [])


# -- stop -----------------------------------------------------------------------------------------


def test_stop_between_entries_leaves_the_rest_pending() -> None:
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    replay.on_response(invite, answered(invite), 0.1)
    replay.stop(0.2)
    assert replay.finished
    assert replay.next(5.0, "tcp") == Steps()
    report = replay.report()
    assert (report.stopped, report.replayed, report.failed, report.left) == (True, 1, 0, 4)


def test_stop_with_an_invite_in_flight_sees_its_answer_and_sends_nothing_new() -> None:
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    replay.stop(0.1)
    assert not replay.finished
    assert replay.due(0.2) is None
    step = replay.on_response(invite, answered(invite, 403, "Forbidden"), 0.3)
    assert [(r.state, r.answer) for r in step.records] == [("failed", "403 Forbidden")]
    assert replay.finished
    assert replay.report().left == 4


def test_stop_before_a_challenge_is_answered_records_nothing() -> None:
    cloud = Cloud()
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    replay.stop(0.1)
    assert replay.on_response(invite, cloud(invite), 0.2) == Steps()
    assert replay.finished
    assert replay.report().invites == 1


def test_stop_with_a_transient_answer_leaves_the_entry_pending_without_a_retry() -> None:
    replay = plan()
    invite = replay.next(0.0, "tcp").invite
    assert invite is not None
    replay.stop(0.1)
    (record,) = replay.on_timeout(invite, 32.0).records
    assert (record.state, record.retry_in) == ("pending", None)
    assert replay.finished


# -- the runner over an in-memory stack, with a real store ------------------------------------------


class CloudFlow(Flow):
    transport = "tcp"
    reliable = True

    def __init__(self) -> None:
        super().__init__(WAN, ("203.0.113.5", 5060))
        self.sent: list[Request] = []

    def send(self, data: bytes) -> None:
        message = parse_message(data)
        assert isinstance(message, Request)
        self.sent.append(message)


class MemoryUpstream:
    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable
        self.cloud = CloudFlow()

    async def flow(self) -> Flow:
        if not self.reachable:
            raise OSError("connection refused")
        return self.cloud


class MemoryStack:
    """Client transactions answered by `cloud` on the next loop turn (the 2xx twice: a retransmission)."""

    def __init__(self, cloud) -> None:
        self.cloud = cloud
        self.sent: list[Request] = []

    def send_request(self, request: Request, flow: Flow, on_response, on_timeout) -> None:
        self.sent.append(request)
        loop = asyncio.get_running_loop()
        if request.method != "INVITE":
            loop.call_soon(on_response, make_response(request, 200, "OK"))
            return
        response = self.cloud(request)
        loop.call_soon(on_response, response)
        if response.status < 300:
            loop.call_later(0.01, on_response, response)

    def release(self, running) -> None:
        pass  # the fork lets go of a branch after its final response: nothing held here


async def test_the_runner_replays_into_the_journal_in_order(tmp_path) -> None:
    store = Store(tmp_path / "data")
    users = ["u101", "u102", "u101"]
    codes = ["*21*0701234567#", "*67*101#", "#21#"]
    for user, code in zip(users, codes, strict=True):
        store.journal.add(user, code, "done locally")
    cloud = Cloud({"*67*101%23": [403]})
    stack, upstream = MemoryStack(cloud), MemoryUpstream()
    seen: list[Attempt] = []

    def on_attempt(attempt: Attempt) -> None:
        store.journal.attempted(attempt.entry.id, attempt.answer, attempt.state)
        seen.append(attempt)

    runner = ReplayRunner(stack, upstream, lambda: True, on_attempt)  # type: ignore[arg-type]
    replay = ReplayPlan(store.journal.pending(), caller, DOMAIN, WAN, time.monotonic(), rate=50)
    report = await asyncio.wait_for(runner.run(replay), 10)
    await asyncio.sleep(0.05)  # the 2xx retransmissions
    assert (report.replayed, report.failed, report.left, report.invites) == (2, 1, 0, 6)
    assert [(e.code, e.state, e.answer, e.attempts) for e in store.journal.entries()] == [
        ("*21*0701234567#", "replayed", "200 OK", 1),
        ("*67*101#", "failed", "403 Forbidden", 1),
        ("#21#", "replayed", "200 OK", 1),
    ]
    assert not store.journal.pending()
    assert [c for _, c, _ in cloud.accepted] == ["*21*0701234567%23", "*67*101%23", "%2321%23"]
    # ACKs go straight on the flow (one per 2xx, retransmission included); BYEs as transactions.
    assert [m.method for m in upstream.cloud.sent] == ["ACK"] * 4
    assert [r.method for r in stack.sent].count("BYE") == 2
    assert [r.method for r in stack.sent if r.method != "BYE"] == ["INVITE"] * 6
    store.close()


async def test_the_runner_stops_when_the_mode_goes_local_again(tmp_path) -> None:
    stack = MemoryStack(Cloud())
    runner = ReplayRunner(stack, MemoryUpstream(), lambda: len(stack.sent) < 3, lambda attempt: None)  # type: ignore[arg-type]
    report = await asyncio.wait_for(runner.run(plan(rate=50)), 10)
    assert report.stopped
    assert [r.method for r in stack.sent if r.method == "INVITE"] == [
        "INVITE"
    ] * 2  # no INVITE after the stop
    assert (report.replayed, report.left) == (1, 4)


async def test_without_a_way_to_the_cloud_each_entry_fails_after_its_attempts() -> None:
    seen: list[Attempt] = []
    stack = MemoryStack(Cloud())
    runner = ReplayRunner(stack, MemoryUpstream(reachable=False), lambda: True, seen.append)  # type: ignore[arg-type]
    replay = plan(JOURNAL[:2], rate=50, backoff=(0.05, 0.05))
    report = await asyncio.wait_for(runner.run(replay), 10)
    assert (report.failed, report.invites) == (2, 0)
    assert [(a.entry.id, a.state) for a in seen] == [
        (1, "pending"),
        (1, "pending"),
        (1, "failed"),
        (2, "pending"),
        (2, "pending"),
        (2, "failed"),
    ]
    assert {a.answer for a in seen} == {"no way to the cloud: connection refused"}
    assert not stack.sent


# -- end to end: the real agent, Kamailio coming back ---------------------------------------------

E2E_USERS = {"101": "pw-101-secret", "102": "pw-102-secret", "103": "pw-103-secret"}
E2E_SITE = f"""
[site]
name = "Replay office"

[cloud]
domain = "{peers.DOMAIN}"
proxies = ["sip:127.0.0.3:@CLOUD_PORT@;transport=tcp"]

[local]
hold_down = 1

[main]
number = "08-465 004 00"
entry = "user:u101"
""" + "".join(
    f'\n[[users]]\nid = "u{user}"\nname = "Person {user}"\nextension = "{user}"\n'
    f'sip = {{ user = "{user}", password = "{password}" }}\n'
    for user, password in E2E_USERS.items()
)
# The cloud answers star codes (a copy of the tests' Kamailio config): INVITEs to a code are challenged
# with the From user's password and logged once authenticated; *67* is refused (403), *61* fails once
# (503) and then succeeds, every other code is answered 200 with a Contact naming the code, so the
# BYE comes back here and is answered 200 too.
STARCODE_GATE = """    if ($rU != $null && $rU =~ "^([*]|%2[aA]|#|%23)") {
        route(STARCODE);
    }
"""
STARCODE_ROUTE = r"""
route[STARCODE] {
    if (is_method("ACK")) {
        xlog("L_NOTICE", "cloud STARCODE-ACK code=$rU cseq=$cs ci=$ci\n");
        t_check_trans();  # an ACK for our 200 ends its retransmissions
        exit;
    }
    if (is_method("BYE")) {
        xlog("L_NOTICE", "cloud STARCODE-BYE user=$fU code=$rU cseq=$cs ci=$ci\n");
        sl_send_reply("200", "OK");
        exit;
    }
    if (!is_method("INVITE") || has_totag()) {
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }
    if (!pv_proxy_authenticate("$td", "$sht(passwd=>$fU)", "0")) {
        proxy_challenge("$td", "0");
        exit;
    }
    xlog("L_NOTICE", "cloud STARCODE at=$TV(Sn) user=$fU auth=$au code=$rU cseq=$cs ci=$ci ruri=$ru ua=$ua\n");
    if ($rU =~ "^[*]67[*]") {
        sl_send_reply("403", "Forbidden");
        exit;
    }
    if ($rU =~ "^[*]61[*]" && $sht(tries=>$rU) == $null) {
        $sht(tries=>$rU) = 1;
        sl_send_reply("503", "Service Unavailable");
        exit;
    }
    if (!t_newtran()) {
        sl_reply_error();
        exit;
    }
    append_to_reply("Contact: <sip:$rU@$Ri:$Rp;transport=tcp>\r\n");
    set_reply_body("v=0\r\no=cloud 1 1 IN IP4 $Ri\r\ns=-\r\nc=IN IP4 $Ri\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n", "application/sdp");
    t_reply("200", "OK");
    exit;
}
"""
STARCODE_LINE = re.compile(
    r"cloud STARCODE at=([\d.]+) user=(\S+) auth=(\S+) code=(\S+) cseq=(\d+) ci=(\S+) ruri=(\S+) ua=(.*)"
)
BYE_LINE = re.compile(r"cloud STARCODE-BYE user=(\S+) code=(\S+) cseq=(\d+) ci=(\S+)")
ACK_LINE = re.compile(r"cloud STARCODE-ACK code=(\S+) cseq=(\d+) ci=(\S+)")


@pytest.fixture
def star_code_cloud_config(tmp_path, monkeypatch):
    """peers.Kamailio reads its config from peers.PEERS: point it at a copy that answers star codes."""
    config = (peers.PEERS / "kamailio.cfg").read_text()
    gate_anchor = "    if (has_totag()) {\n"
    table_anchor = 'modparam("htable", "htable", "passwd=>size=12")\n'
    assert config.count(gate_anchor) == 1
    assert config.count(table_anchor) == 1
    config = config.replace(gate_anchor, STARCODE_GATE + gate_anchor)
    config = config.replace(table_anchor, table_anchor + 'modparam("htable", "htable", "tries=>size=4")\n')
    copy = tmp_path / "peers"
    copy.mkdir()
    (copy / "kamailio.cfg").write_text(config + STARCODE_ROUTE)
    monkeypatch.setattr(peers, "PEERS", copy)


class ReplayOffice(FailbackOffice):
    """The failback office with three users, a 1 s hold-down, the cloud's return seen within 2 s;
    `env` for the agent on top (e.g. FAST_RETRY)."""

    def __init__(self, tmp_path: Path, cloud_port: int, env: dict[str, str] | None = None) -> None:
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        self.coap = free_port("127.0.0.1")
        self.data = tmp_path / "data"
        site = tmp_path / "site.toml"
        site.write_text(E2E_SITE.replace("@CLOUD_PORT@", str(cloud_port)))
        self.tmp = tmp_path
        self.agent = AgentProcess(
            tmp_path, "--site", str(site), "--data", str(self.data), "--coap-port", str(self.coap),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
            "--cloud", f"sip:127.0.0.3:{cloud_port};transport=tcp", env={**FAST_RETURN, **(env or {})},
        )  # fmt: skip


# The replay's first retry after ~1 s instead of ~5 s (its test knob; the 5 s is proven above).
FAST_RETRY = {BACKOFF_SCALE_ENV: "0.2"}
FIRST_RETRY = BACKOFF[0] * 0.2

# (site user, code as dialled, what the cloud is set to do); the first one a phone dials in local mode.
E2E_JOURNAL = [
    ("u101", "*21*102#", "200"),
    ("u102", "*67*101#", "403"),
    ("u101", "#21#", "200"),
    ("u102", "*61*101*20#", "503 once, then 200"),
    ("u101", "*21*0701234567#", "200"),
]


async def test_after_failback_the_journal_reaches_the_cloud_in_order_as_each_user(
    tmp_path, star_code_cloud_config
):
    cloud_port = free_port("127.0.0.3")
    office = ReplayOffice(tmp_path, cloud_port, env=FAST_RETRY)
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS)
    try:
        await office.ready()
        await office.mode("local")  # nothing listens at the cloud's address yet
        # Anna (101) dials the first code at the appliance, which journals it ...
        phone = await peers.phone("star_code.xml", office.lan, "101", tmp_path, callee="*21*102%23",
                                  password=E2E_USERS["101"])  # fmt: skip
        await phone.finish()
        store = Store(office.data)
        ((first, user, code),) = [(e.id, e.user, e.code) for e in store.journal.pending()]
        assert (user, code) == E2E_JOURNAL[0][:2]
        # ... and the rest are written to the agent's own store as local mode's star codes write them.
        ids = [first] + [
            store.journal.add(user, code, "done locally").id for user, code, _ in E2E_JOURNAL[1:]
        ]

        await asyncio.to_thread(cloud.start)
        await office.mode("online", timeout=30)
        failback = await office.event("failback done", timeout=15)
        started = await office.event("journal replay started", timeout=5)
        done = await office.event("journal replay done", timeout=60)
        assert started["entries"] == len(E2E_JOURNAL)
        assert (done["entries"], done["replayed"], done["failed"], done["left"]) == (5, 4, 1, 0)
        assert done["invites"] == 12  # six attempts, each challenged once
        assert started["timestamp"] >= failback["timestamp"]

        # The cloud's view: every code, authenticated as its user, in journal order, '#' as %23.
        arrivals = sorted(STARCODE_LINE.findall(cloud.output()), key=lambda line: float(line[0]))
        as_sent = [(user, auth, code) for _, user, auth, code, *_ in arrivals]
        assert as_sent == [
            ("101", "101", "*21*102%23"),
            ("102", "102", "*67*101%23"),
            ("101", "101", "%2321%23"),
            ("102", "102", "*61*101*20%23"),
            ("102", "102", "*61*101*20%23"),  # the retry, after the 503
            ("101", "101", "*21*0701234567%23"),
        ]
        assert all(cseq == "2" for *_, cseq, _, _, _ in arrivals)  # the challenge answered in-call
        assert all(ruri.startswith("sip:") and ruri.endswith(f"@{peers.DOMAIN}") for *_, ruri, _ in arrivals)
        assert all(ua.startswith("Vaxelbox/") and "(journal replay)" in ua for *_, ua in arrivals)
        retry_gap = float(arrivals[4][0]) - float(arrivals[3][0])
        assert 0.8 * FIRST_RETRY <= retry_gap <= 1.2 * FIRST_RETRY + 2
        assert len({ci for *_, ci, _, _ in arrivals}) == 6  # a fresh call each attempt
        # Each answered call was acknowledged (CSeq 2, the INVITE's) and hung up (BYE, CSeq 3).
        answered_calls = {
            ci for _, _, _, code, _, ci, _, _ in arrivals if not code.startswith(("*67", "*61"))
        }
        answered_calls.add(arrivals[4][5])
        byes = BYE_LINE.findall(cloud.output())
        assert {ci for *_, ci in byes} == answered_calls
        assert sorted(cseq for _, _, cseq, _ in byes) == ["3"] * 4
        acks = ACK_LINE.findall(cloud.output())
        assert sorted(ci for *_, ci in acks) == sorted(answered_calls)  # one each: no 2xx went unacknowledged
        assert {cseq for _, cseq, _ in acks} == {"2"}

        # The store: what the cloud answered, per entry; nothing left pending.
        entries = {e.id: e for e in store.journal.entries()}
        assert [(entries[i].state, entries[i].answer, entries[i].attempts) for i in ids] == [
            ("replayed", "200 OK", 1),
            ("failed", "403 Forbidden", 1),
            ("replayed", "200 OK", 1),
            ("replayed", "200 OK", 2),
            ("replayed", "200 OK", 1),
        ]
        assert not store.journal.pending()
        store.close()

        # vaxelctl journal shows the same, the refused code with the cloud's answer.
        code = subprocess.run(
            [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(office.data)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        office.vaxelctl("pair", f"127.0.0.1:{office.coap}", "--code", code, "--name", "Support")
        listed = json.loads(office.vaxelctl("journal", "--json"))
        assert [(e["code"], e["state"], e["answer"]) for e in listed][:2] == [
            ("*21*102#", "replayed", "200 OK"),
            ("*67*101#", "failed", "403 Forbidden"),
        ]
        shown = office.vaxelctl("journal")
        assert "403 Forbidden" in shown
        assert "failed" in shown

        # The log: one line per entry, in order, with what the cloud said; the retry said why.
        lines = office.agent.events("journal replayed")
        assert [(e["id"], e["user"], e["code"], e["answer"], e["state"]) for e in lines] == [
            (i, user, code, "403 Forbidden" if code.startswith("*67") else "200 OK",
             "failed" if code.startswith("*67") else "replayed")
            for i, (user, code, _) in zip(ids, E2E_JOURNAL, strict=True)
        ]  # fmt: skip
        (retry,) = office.agent.events("journal replay attempt failed")
        assert (retry["id"], retry["answer"]) == (ids[3], "503 Service Unavailable")
        assert 0.8 * FIRST_RETRY <= retry["retry_in"] <= 1.2 * FIRST_RETRY
        output = office.agent.output()
        assert all(password not in output for password in E2E_USERS.values())
        assert not [e for e in office.agent.events() if e.get("level") == "error"]
        print(
            f"\njournal replay: {done['entries']} entries, {done['invites']} INVITEs in {done['seconds']} s"
        )
    finally:
        await asyncio.to_thread(office.agent.stop)
        cloud.stop()


async def test_local_mode_again_stops_the_replay_and_the_next_failback_finishes_it(
    tmp_path, star_code_cloud_config
):
    """An installer's drill (`vaxelctl mode local`) while an entry waits for its retry: the replay
    stops, what it did not reach stays pending, and the next failback replays just that."""
    cloud_port = free_port("127.0.0.3")
    office = ReplayOffice(tmp_path, cloud_port)
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS)
    try:
        await office.ready()
        await office.mode("local")
        code = subprocess.run(
            [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(office.data)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        office.vaxelctl("pair", f"127.0.0.1:{office.coap}", "--code", code, "--name", "Support")
        store = Store(office.data)
        ids = [store.journal.add(user, code, "done locally").id for user, code, _ in E2E_JOURNAL]

        await asyncio.to_thread(cloud.start)
        await office.mode("online", timeout=30)
        retry = await office.event("journal replay attempt failed", timeout=30)  # *61*: 503, retry in ~5 s
        assert retry["id"] == ids[3]
        await asyncio.to_thread(office.vaxelctl, "mode", "local")
        stopped = await office.event("journal replay stopped", timeout=10)
        assert [stopped[key] for key in ("replayed", "failed", "left", "stopped")] == [2, 1, 2, True]
        entries = {e.id: e for e in store.journal.entries()}
        assert [(entries[i].state, entries[i].attempts) for i in ids[3:]] == [("pending", 1), ("pending", 0)]
        assert not office.agent.events("journal replay done")

        await asyncio.to_thread(office.vaxelctl, "mode", "auto")
        done = await office.event("journal replay done", timeout=40)
        assert (done["entries"], done["replayed"], done["failed"], done["left"]) == (2, 2, 0, 0)
        entries = {e.id: e for e in store.journal.entries()}
        assert [(entries[i].state, entries[i].answer, entries[i].attempts) for i in ids] == [
            ("replayed", "200 OK", 1),
            ("failed", "403 Forbidden", 1),
            ("replayed", "200 OK", 1),
            ("replayed", "200 OK", 2),
            ("replayed", "200 OK", 1),
        ]
        store.close()
        # The cloud got each code once more only where it had not answered it: in journal order still.
        arrivals = sorted(STARCODE_LINE.findall(cloud.output()), key=lambda line: float(line[0]))
        assert [code for _, _, _, code, *_ in arrivals] == [
            "*21*102%23", "*67*101%23", "%2321%23", "*61*101*20%23", "*61*101*20%23", "*21*0701234567%23",
        ]  # fmt: skip
        assert [e["id"] for e in office.agent.events("journal replayed")] == ids
    finally:
        await asyncio.to_thread(office.agent.stop)
        cloud.stop()


async def test_online_a_code_the_cloud_confirms_is_copied_and_routes_the_next_outage(
    tmp_path, star_code_cloud_config
):
    """Online the code goes to the cloud as a call; its 200 makes the appliance apply the same change
    to its own copy (not journaled: the cloud has it). When the cloud then dies, local routing follows
    the copy: a call to anna reaches bjorn."""
    cloud_port = free_port("127.0.0.3")
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS).start()
    office = ReplayOffice(tmp_path, cloud_port)
    try:
        await office.ready()
        await office.event("cloud state", timeout=10)
        anna = await peers.phone("local_call.xml", office.lan, "101", tmp_path, callee="*21*102%23",
                                 password=E2E_USERS["101"])  # fmt: skip
        await anna.finish()  # registered at the cloud, dialled the code, the cloud answered 200
        assert [(u, code) for _, u, _, code, *_ in STARCODE_LINE.findall(cloud.output())] == [
            ("101", "*21*102%23")
        ]
        store = Store(office.data)
        assert store.users.forwards("u101")["always"].target == "user:u102"
        assert store.journal.entries() == []
        cloud.stop()
        await office.mode("local")
        bjorn = await peers.phone("register_wait.xml", office.lan, "102", tmp_path, password=E2E_USERS["102"],
                                  answers="answer.xml", hold=8)  # fmt: skip
        await until_registered(bjorn)
        caller = await peers.phone("local_call.xml", office.lan, "103", tmp_path, callee="101",
                                   password=E2E_USERS["103"])  # fmt: skip
        await caller.finish()
        assert await heard(bjorn, {"INVITE": 1}) == {"INVITE": 1}
        await ended(bjorn)
    finally:
        await asyncio.to_thread(office.agent.stop)
        cloud.stop()


async def test_entries_left_from_before_a_restart_are_replayed_when_the_cloud_first_answers(
    tmp_path, star_code_cloud_config
):
    """The agent restarts with journal entries still pending and finds the cloud up (no failback will
    come): the first answer from the cloud starts the replay."""
    store = Store(tmp_path / "data")
    store.journal.add("u101", "*21*102#", "forward always to 102")
    store.close()
    cloud_port = free_port("127.0.0.3")
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS).start()
    office = ReplayOffice(tmp_path, cloud_port)
    try:
        await office.ready()
        done = await office.event("journal replay done", timeout=20)
        assert (done["replayed"], done["failed"], done["left"]) == (1, 0, 0)
        assert [code for _, _, _, code, *_ in STARCODE_LINE.findall(cloud.output())] == ["*21*102%23"]
        assert [e.state for e in Store(office.data).journal.entries()] == ["replayed"]
    finally:
        await asyncio.to_thread(office.agent.stop)
        cloud.stop()
