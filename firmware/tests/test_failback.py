"""Failback (issue 18): the appliance registers every phone with the returning cloud on its behalf.

Units without sockets: the pacing (never above the rate in any 1 s window,
jittered, shuffled), the REGISTER's shape (Path token, Contact as the phone
wrote it, Expires), digest answers checked by a real server-side verifier,
failures retried once, skips and stops. End to end: the real agent, sipp
phones registered locally while the cloud is down, then Kamailio started at
the cloud's address; every phone must be registered there, at the site's
rate, and reachable through the cloud.
"""

import asyncio
import bisect
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import peers
import pytest
from agent_process import AgentProcess
from peers import free_port
from test_local_mode import Office, received
from vaxelbox.edge.bindings import BindingMirror
from vaxelbox.edge.failback import (
    EXPIRES_FLOOR,
    RETRY_DELAY,
    FailbackPlan,
    FailbackRunner,
    Outgoing,
    Restore,
    Result,
    collect,
    peak,
)
from vaxelbox.edge.flowtoken import read_token
from vaxelbox.edge.health import CEILING_ENV
from vaxelbox.local.registrar import challenge
from vaxelbox.routing.forking import EdgeAddresses
from vaxelbox.sip.address import parse_address
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow

DOMAIN = "demo.vaxel.example.net"
REGISTRAR = f"sip:{DOMAIN}"
ADDRESSES = EdgeAddresses(lan=("192.0.2.1", 5060), wan=("198.51.100.7", 5062))
PASSWORDS = {f"{100 + i}": f"pw-{100 + i}" for i in range(1, 1000)}
WRITTEN = '"Anna" <sip:101@192.0.2.50:5062;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-0015654aa937>"'


class PhoneFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, remote: tuple[str, int] = ("192.0.2.50", 5062), alive: bool = True) -> None:
        super().__init__(ADDRESSES.lan, remote)
        self._alive = alive

    @property
    def alive(self) -> bool:
        return self._alive

    def send(self, data: bytes) -> None:
        pass


def restore(user: str = "101", written: str = WRITTEN, port: int = 5062, expires: int = 600) -> Restore:
    contact = f"sip:{user}@192.0.2.50:{port}"
    return Restore(
        f"sip:{user}@{DOMAIN}", contact, written, "udp", ("192.0.2.50", port), expires,
        "Yealink SIP-T46U 108.86.0.20", user, PASSWORDS[user],
    )  # fmt: skip


def phones(count: int) -> list[Restore]:
    return [restore(str(101 + i), f"<sip:{101 + i}@192.0.2.50:{6000 + i}>", 6000 + i) for i in range(count)]


def plan(restores: list[Restore], rate: float = 50, seed: int = 1, **kwargs) -> FailbackPlan:
    return FailbackPlan(restores, DOMAIN, ADDRESSES, rate, 0.0, rng=random.Random(seed), **kwargs)


def registered(outgoing: Outgoing, expires: int = 600) -> Response:
    """The cloud's 200, listing the contact with the expiry it granted."""
    response = make_response(outgoing.request, 200, "OK")
    response.add("Contact", f"{outgoing.request.get('Contact')};expires={expires}")
    return response


def wire(request: Request) -> Request:
    """What the cloud parses: the request serialised and read back."""
    message = parse_message(request.to_bytes())
    assert isinstance(message, Request)
    return message


def drive(failback: FailbackPlan, answer=registered) -> list[Outgoing]:
    """Run the plan on simulated time, each request answered at once; every request sent."""
    now, sent = 0.0, []
    while not failback.finished:
        wait = failback.due(now)
        assert wait is not None, "nothing in flight, so something must be queued"
        now += wait
        outgoing = failback.next(now, "tcp")
        if outgoing is not None:
            sent.append(outgoing)
            failback.on_response(outgoing, answer(outgoing), now)
    return sent


# -- pacing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "count"), [(50, 400), (5, 60), (7.5, 60), (0.5, 6)])
def test_never_above_the_rate_in_any_one_second_window(rate: float, count: int) -> None:
    failback = plan(phones(count), rate)
    drive(failback)
    times = failback.sent_at
    assert len(times) == count
    cap = max(1, int(rate))
    for at in times:  # every window [t, t + 1 s) that starts at a send holds the most there can be
        assert bisect.bisect_left(times, at + 1.0) - bisect.bisect_left(times, at) <= cap
    assert failback.report().peak_rate <= cap
    # Not much slower than the rate either: the window rule trims bursts, not the average.
    assert (count - 1) / rate * 0.9 <= times[-1] - times[0] <= (count - 1) / rate * 1.3


def test_gaps_are_jittered_around_one_over_the_rate() -> None:
    failback = plan(phones(300), 50)
    drive(failback)
    gaps = [b - a for a, b in zip(failback.sent_at, failback.sent_at[1:], strict=False)]
    assert min(gaps) >= 0.5 / 50 - 1e-9
    within = [g for g in gaps if g <= 1.5 / 50 + 1e-9]
    assert len(within) >= 0.8 * len(gaps)  # the window rule stretches only some gaps
    assert 1 / 50 <= statistics.mean(gaps) <= 1.2 / 50
    assert statistics.pstdev(gaps) > 0.004  # not a metronome
    assert len({round(g, 6) for g in gaps}) > 100


def test_the_order_is_shuffled_so_no_user_is_always_last() -> None:
    restores = phones(20)
    lasts = set()
    for seed in range(10):
        sent = drive(plan(restores, 1000, seed))
        order = [o.restore.aor for o in sent]
        assert sorted(order) == sorted(r.aor for r in restores)
        lasts.add(order[-1])
    assert len(lasts) > 3


def test_peak_counts_half_open_windows() -> None:
    assert peak([]) == 0
    assert peak([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert peak([0.0, 1.0, 2.0]) == 1


# -- the request --------------------------------------------------------------------------------


def test_the_register_is_the_one_the_relay_would_send_for_the_phone() -> None:
    failback = plan([restore(expires=700)])
    outgoing = failback.next(0.0, "tcp")
    assert outgoing is not None
    request = wire(outgoing.request)
    assert str(request.uri) == REGISTRAR
    assert str(request.from_.uri) == str(request.to.uri) == f"sip:101@{DOMAIN}"
    assert request.from_.tag
    assert request.to.tag is None
    assert request.get("Contact") == WRITTEN  # as the phone wrote it: parameters and all
    (path,) = request.get_all("Path")
    path_uri = parse_address(path).sip_uri
    assert (path_uri.host, path_uri.port, path_uri.params) == (
        "198.51.100.7",
        5062,
        {"transport": "tcp", "lr": None},
    )
    assert read_token(path_uri.user or "") == ("udp", "192.0.2.50", 5062)  # the phone's flow
    assert request.get("Supported") == "path"
    assert request.get("Expires") == "700"
    assert request.cseq == (1, "REGISTER")
    assert request.get("Authorization") is None
    user_agent = request.get("User-Agent") or ""
    assert user_agent.startswith("Vaxelbox/")
    assert "Yealink SIP-T46U 108.86.0.20" in user_agent
    (via,) = request.vias
    assert (via.transport, via.host, via.port) == ("TCP", "198.51.100.7", 5062)
    assert via.branch is not None
    assert via.branch.startswith("z9hG4bK")
    assert "rport" in via.params
    assert "alias" in via.params  # RFC 5923 over a connection
    assert request.max_forwards == 70


def test_over_udp_there_is_no_alias_and_the_path_says_udp() -> None:
    outgoing = plan([restore()]).next(0.0, "udp")
    assert outgoing is not None
    request = wire(outgoing.request)
    assert "alias" not in request.vias[0].params
    assert parse_address(request.get("Path") or "").sip_uri.params["transport"] == "udp"


def test_each_binding_gets_its_own_call_id() -> None:
    sent = drive(plan(phones(30)))
    assert len({o.request.call_id for o in sent}) == 30


def test_a_phone_user_agent_cannot_break_ours() -> None:
    odd = replace(restore(), user_agent="Evil (x\\) \r\nVia: forged")
    outgoing = plan([odd]).next(0.0, "tcp")
    assert outgoing is not None
    user_agent = wire(outgoing.request).get("User-Agent") or ""
    assert user_agent.count("(") == user_agent.count(")") == 1
    assert "\r" not in user_agent
    assert len(wire(outgoing.request).get_all("Via")) == 1


# -- digest -------------------------------------------------------------------------------------


class Cloud:
    """A registrar that challenges like a real one: our own server-side digest, one nonce per
    challenge, nonces reusable with a higher nc (as Kamailio and Asterisk allow)."""

    def __init__(self, status: int = 401, algorithm: str = "SHA-256") -> None:
        self.auth = SipDigest(DOMAIN, algorithms=(algorithm, "MD5"))
        self.status = status
        self.header = "Authorization" if status == 401 else "Proxy-Authorization"
        self.accepted: list[tuple[str, int]] = []  # (user, cseq)
        self.challenged = 0

    def __call__(self, outgoing: Outgoing) -> Response:
        request = wire(outgoing.request)
        verdict = self.auth.verify("REGISTER", request.uri, request.get_all(self.header), PASSWORDS.get)
        user = request.to.uri.user  # type: ignore[union-attr]
        if verdict.username is None or verdict.username != user:
            self.challenged += 1
            return challenge(request, self.status, self.auth, verdict.stale)
        self.accepted.append((user, request.cseq[0]))
        return registered(outgoing)


@pytest.mark.parametrize(("status", "algorithm"), [(401, "SHA-256"), (401, "MD5"), (407, "MD5")])
def test_the_first_challenge_is_answered_and_its_nonce_serves_the_rest(status: int, algorithm: str) -> None:
    cloud = Cloud(status, algorithm)
    failback = plan(phones(25))
    sent = drive(failback, cloud)
    assert cloud.challenged == 1
    first_user = sent[0].restore.username
    expected = [(r.username, 2 if r.username == first_user else 1) for r in phones(25)]
    assert sorted(cloud.accepted) == sorted(expected)
    first, answer = sent[0].request, sent[1].request
    assert answer.call_id == first.call_id
    assert answer.cseq == (2, "REGISTER")
    report = failback.report()
    assert (report.registered, report.failures, report.requests) == (25, 0, 26)


def test_a_cloud_that_refuses_reused_nonces_costs_two_registers_a_phone() -> None:
    cloud = Cloud()
    cloud.auth._first_use = lambda nonce, nc: nc == "00000001"  # one nonce, one request
    failback = plan(phones(10))
    drive(failback, cloud)
    report = failback.report()
    assert (report.registered, report.failures, report.requests, cloud.challenged) == (10, 0, 20, 10)


def test_wrong_credentials_fail_after_one_answer_and_are_retried_once_later() -> None:
    cloud = Cloud()
    bad = replace(restore(), password="not-the-password")
    failback = plan([bad], retry_delay=RETRY_DELAY)
    first = failback.next(0.0, "tcp")
    assert first is not None
    assert failback.on_response(first, cloud(first), 0.01) is Result.PENDING  # the challenge
    assert failback.due(0.01) == pytest.approx(1 / 50 * 1.5, abs=0.03)
    answer = failback.next(1.0, "tcp")
    assert answer is not None
    assert answer.request.get("Authorization")
    assert failback.on_response(answer, cloud(answer), 1.01) is Result.PENDING  # failed: retry later
    assert failback.due(1.02) == pytest.approx(1.01 + RETRY_DELAY - 1.02)
    assert failback.next(2.0, "tcp") is None
    retry = failback.next(1.01 + RETRY_DELAY, "tcp")
    assert retry is not None
    assert retry.request.call_id == first.request.call_id
    assert retry.request.cseq == (3, "REGISTER")
    assert failback.on_response(retry, cloud(retry), 7.0) is Result.PENDING  # challenged again
    last = failback.next(7.1, "tcp")
    assert last is not None
    assert failback.on_response(last, cloud(last), 7.2) is Result.FAILED
    assert failback.finished
    report = failback.report()
    assert (report.registered, report.failures, report.unregistered, report.requests) == (0, 2, 1, 4)


def test_an_unanswered_register_is_retried_once_after_the_delay() -> None:
    failback = plan([restore()])
    first = failback.next(0.0, "tcp")
    assert first is not None
    assert failback.on_timeout(first, 32.0) is Result.PENDING
    assert failback.due(32.0) == pytest.approx(RETRY_DELAY)
    retry = failback.next(32.0 + RETRY_DELAY, "tcp")
    assert retry is not None
    assert failback.on_response(retry, make_response(retry.request, 100, "Trying"), 37.1) is Result.PENDING
    assert failback.on_response(retry, registered(retry), 37.2) is Result.REGISTERED
    assert failback.on_response(retry, registered(retry), 37.3) is Result.PENDING  # a late duplicate
    report = failback.report()
    assert (report.registered, report.failures, report.unregistered, report.seconds) == (1, 1, 0, 37.2)


def test_a_server_error_is_retried_once_and_then_given_up() -> None:
    failback = plan([restore()])
    sent = drive(failback, lambda o: make_response(o.request, 503, "Service Unavailable"))
    assert len(sent) == 2
    assert failback.sent_at[1] - failback.sent_at[0] >= RETRY_DELAY
    report = failback.report()
    assert (report.registered, report.failures, report.unregistered) == (0, 2, 1)


def test_interval_too_brief_is_answered_with_the_minimum() -> None:
    def cloud(outgoing: Outgoing) -> Response:
        if int(outgoing.request.get("Expires") or 0) < 1800:
            response = make_response(outgoing.request, 423, "Interval Too Brief")
            response.add("Min-Expires", "1800")
            return response
        return registered(outgoing, 1800)

    failback = plan([restore()])
    sent = drive(failback, cloud)
    assert [o.request.get("Expires") for o in sent] == ["600", "1800"]
    assert failback.report().registered == 1


@pytest.mark.parametrize("written", ["\u00b2", "\u0665"])
def test_a_malformed_min_expires_is_a_failure_like_any_other(written: str) -> None:
    """A Min-Expires of '²' once reached int() (ValueError out of on_response); '٥' was read as
    5 s and the REGISTER re-sent at once. Malformed, the 423 is a failure: retried once, later."""

    def cloud(outgoing: Outgoing) -> Response:
        response = make_response(outgoing.request, 423, "Interval Too Brief")
        response.add("Min-Expires", written)
        return response

    failback = plan([restore()])
    sent = drive(failback, cloud)
    assert len(sent) == 2
    assert failback.sent_at[1] - failback.sent_at[0] >= RETRY_DELAY
    report = failback.report()
    assert (report.registered, report.failures, report.unregistered) == (0, 2, 1)


# -- skips, stops, the mirror -------------------------------------------------------------------


def test_a_binding_the_phone_refreshed_itself_is_skipped() -> None:
    restores = phones(10)
    refreshed = {restores[3].key, restores[7].key}
    failback = plan(restores, still_needed=lambda r: r.key not in refreshed)
    sent = drive(failback)
    assert {o.restore.key for o in sent} == {r.key for r in restores} - refreshed
    report = failback.report()
    assert (report.phones, report.registered, report.skipped, report.requests) == (10, 8, 2, 8)


def test_stop_ends_it_and_late_answers_are_ignored() -> None:
    failback = plan(phones(10))
    first = failback.next(0.0, "tcp")
    assert first is not None
    failback.stop(0.1)
    assert failback.finished
    assert failback.next(5.0, "tcp") is None
    assert failback.on_response(first, registered(first), 0.2) is Result.PENDING
    report = failback.report()
    assert (report.stopped, report.registered, report.requests) == (True, 0, 1)


def test_collect_takes_the_site_users_live_bindings_with_the_contact_as_written() -> None:
    mirror = BindingMirror()
    anna, gone = PhoneFlow(("192.0.2.50", 5062)), PhoneFlow(("192.0.2.60", 5062), alive=False)
    mirror.grant(
        f"sip:101@{DOMAIN}",
        "sip:101@192.0.2.50:5062",
        anna,
        90,
        "Yealink",
        address=parse_address(WRITTEN + ";expires=90"),
    )
    mirror.grant(f"sip:102@{DOMAIN}", "sip:102@192.0.2.60:5062", gone, 90, "Snom")
    mirror.grant(f"sip:999@{DOMAIN}", "sip:999@192.0.2.70:5062", PhoneFlow(("192.0.2.70", 5062)), 90, "x")
    long_ago = PhoneFlow(("192.0.2.80", 5062))
    mirror.grant(f"sip:103@{DOMAIN}", "sip:103@192.0.2.80:5062", long_ago, 3000, "Poly")

    def credentials(aor: str) -> tuple[str, str] | None:
        user = aor.removeprefix("sip:").split("@")[0]
        return (user, PASSWORDS[user]) if user != "999" else None

    found = {r.aor: (r, flow) for r, flow in collect(mirror, credentials, lambda transport, address: None)}
    assert set(found) == {f"sip:101@{DOMAIN}", f"sip:103@{DOMAIN}"}  # 999: no user; 102: its flow is gone
    anna_restore, flow = found[f"sip:101@{DOMAIN}"]
    assert flow is anna
    assert anna_restore.written == WRITTEN  # expires dropped, everything else kept
    assert anna_restore.expires == EXPIRES_FLOOR  # 90 s left: the floor
    assert 3059 <= found[f"sip:103@{DOMAIN}"][0].expires <= 3060  # what the phone believes, and a minute
    assert "pw-101" not in repr(anna_restore)


def test_the_mirror_follows_the_clouds_200_and_keeps_the_phones_user_agent() -> None:
    mirror = BindingMirror()
    flow = PhoneFlow()
    mirror.grant(
        f"sip:101@{DOMAIN}",
        "sip:101@192.0.2.50:5062",
        flow,
        90,
        "Yealink SIP-T46U 108.86.0.20",
        address=parse_address(WRITTEN),
    )
    ((todo, phone_flow),) = collect(mirror, lambda aor: ("101", PASSWORDS["101"]), lambda t, a: None)
    outgoing = plan([todo]).next(0.0, "tcp")
    assert outgoing is not None
    mirror.update(outgoing.for_mirror(), registered(outgoing, 600), phone_flow)
    (binding,) = mirror.all()
    assert 595 <= binding.expires_in() <= 600
    assert binding.user_agent == "Yealink SIP-T46U 108.86.0.20"
    assert mirror.written_contact(binding.aor, binding.contact) == WRITTEN


# -- the asyncio runner, with a stack and an upstream that answer in memory ----------------------


class CloudFlow(Flow):
    transport = "tcp"
    reliable = True

    def send(self, data: bytes) -> None:
        pass


class MemoryUpstream:
    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable
        self.cloud = CloudFlow(ADDRESSES.wan, ("203.0.113.5", 5060))

    async def flow(self) -> Flow:
        if not self.reachable:
            raise OSError("connection refused")
        return self.cloud


class MemoryStack:
    """Answers each REGISTER with the cloud's 200 on the next loop turn."""

    def __init__(self) -> None:
        self.sent: list[Request] = []

    def send_request(self, request: Request, flow: Flow, on_response, on_timeout) -> None:
        self.sent.append(request)
        response = make_response(request, 200, "OK")
        response.add("Contact", f"{request.get('Contact')};expires=600")
        asyncio.get_running_loop().call_soon(on_response, response)

    def release(self, running) -> None:
        pass  # the fork lets go of a branch after its final response: nothing held here


def mirrored_phones(count: int) -> tuple[BindingMirror, list[tuple[Restore, Flow]]]:
    mirror = BindingMirror()
    for i in range(count):
        user, port = str(101 + i), 6000 + i
        mirror.grant(
            f"sip:{user}@{DOMAIN}",
            f"sip:{user}@192.0.2.50:{port}",
            PhoneFlow(("192.0.2.50", port)),
            90,
            "Snom D785",
        )
    todo = collect(mirror, lambda aor: (aor[4:7], PASSWORDS[aor[4:7]]), lambda t, a: None)
    return mirror, todo


async def test_the_runner_sends_through_the_stack_and_the_mirror_follows_the_cloud() -> None:
    mirror, todo = mirrored_phones(8)
    stack = MemoryStack()
    runner = FailbackRunner(stack, MemoryUpstream(), mirror, {r.key: f for r, f in todo}, lambda: True)
    report = await runner.run(FailbackPlan([r for r, _ in todo], DOMAIN, ADDRESSES, 200, time.monotonic()))
    assert (report.registered, report.requests, report.stopped) == (8, 8, False)
    assert len(stack.sent) == 8
    assert all(595 <= b.expires_in() <= 600 for b in mirror.all())  # the cloud's expiry, not the local 90 s
    assert {b.user_agent for b in mirror.all()} == {"Snom D785"}


async def test_the_runner_stops_when_the_mode_goes_local_again() -> None:
    mirror, todo = mirrored_phones(20)
    stack = MemoryStack()
    runner = FailbackRunner(
        stack, MemoryUpstream(), mirror, {r.key: f for r, f in todo}, lambda: len(stack.sent) < 3
    )
    report = await runner.run(FailbackPlan([r for r, _ in todo], DOMAIN, ADDRESSES, 50, time.monotonic()))
    assert report.stopped
    assert report.requests == len(stack.sent) == 3
    assert report.registered <= 3


async def test_without_a_way_to_the_cloud_each_binding_fails_twice_and_the_runner_ends() -> None:
    mirror, todo = mirrored_phones(3)
    stack = MemoryStack()
    runner = FailbackRunner(
        stack, MemoryUpstream(reachable=False), mirror, {r.key: f for r, f in todo}, lambda: True
    )
    failback = FailbackPlan([r for r, _ in todo], DOMAIN, ADDRESSES, 200, time.monotonic(), retry_delay=0.05)
    report = await asyncio.wait_for(runner.run(failback), 10)
    assert (report.registered, report.failures, report.unregistered, report.requests) == (0, 6, 3, 0)
    assert not stack.sent


# -- end to end: the real agent, sipp phones, Kamailio coming back ------------------------------

PHONE_USERS = [str(n) for n in range(101, 111)]  # ten phones
CALLER = "111"  # no phone during the outage: calls one of them through the cloud afterwards
E2E_USERS = {user: f"pw-{user}-secret" for user in [*PHONE_USERS, CALLER]}
RATE = 5
# The cloud's return is seen within 2 s (the probe backoff's test knob; the backoff itself is
# test_good_neighbour's) and failback follows a 1 s hold-down (its 30 s default is test_routing_mode's).
FAST_RETURN = {CEILING_ENV: "2"}
E2E_SITE = f"""
[site]
name = "Failback office"

[cloud]
domain = "{peers.DOMAIN}"
proxies = ["sip:127.0.0.3:@CLOUD_PORT@;transport=tcp"]

[local]
hold_down = 1
failback_rate = {RATE}

[main]
number = "08-465 004 00"
entry = "user:u101"
""" + "".join(
    f'\n[[users]]\nid = "u{user}"\nname = "Person {user}"\nextension = "{user}"\n'
    f'sip = {{ user = "{user}", password = "{password}" }}\n'
    for user, password in E2E_USERS.items()
)
# The cloud logs every REGISTER it receives, with the time it arrived (a copy of the tests' config).
CLOUD_REGISTER_LOG = '        xlog("L_NOTICE", "cloud REGISTER at=$TV(Sn) user=$fU cseq=$cs ua=$ua\\n");\n'
CLOUD_LINE = re.compile(r"cloud REGISTER at=([\d.]+) user=(\S+) cseq=(\d+) ua=(.*)")


class FailbackOffice(Office):
    """test_local_mode's office with eleven users, failback at RATE/s, and CoAP for vaxelctl."""

    def __init__(self, tmp_path: Path, cloud_port: int) -> None:
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        self.coap = free_port("127.0.0.1")
        self.data = tmp_path / "data"
        site = tmp_path / "site.toml"
        site.write_text(E2E_SITE.replace("@CLOUD_PORT@", str(cloud_port)))
        self.tmp = tmp_path
        self.agent = AgentProcess(
            tmp_path, "--site", str(site), "--data", str(self.data), "--coap-port", str(self.coap),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
            "--cloud", f"sip:127.0.0.3:{cloud_port};transport=tcp", env=FAST_RETURN,
        )  # fmt: skip

    async def event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.agent.events(name):
                return found[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name!r} within {timeout}s\n{self.agent.output()[-5000:]}")

    def pair(self) -> None:
        """vaxelctl paired as Support, with the code `vaxelbox pairing-code` shows; blocking (run it
        in a thread to go on meanwhile)."""
        code = subprocess.run(
            [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(self.data)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        self.vaxelctl("pair", f"127.0.0.1:{self.coap}", "--code", code, "--name", "Support")

    def vaxelctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "VAXELCTL_CONFIG": str(self.tmp / "laptop"), "COLUMNS": "80"},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture
def logging_cloud_config(tmp_path, monkeypatch):
    """peers.Kamailio reads its config from peers.PEERS: point it at a copy that logs REGISTERs."""
    config = (peers.PEERS / "kamailio.cfg").read_text()
    anchor = '    if (is_method("REGISTER")) {\n'
    assert anchor in config
    copy = tmp_path / "peers"
    copy.mkdir()
    (copy / "kamailio.cfg").write_text(config.replace(anchor, anchor + CLOUD_REGISTER_LOG))
    monkeypatch.setattr(peers, "PEERS", copy)


async def registered_locally(phone_: peers.Phone, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(
            "SIP/2.0 200 OK" in p.read_text(errors="replace") for p in phone_.workdir.glob("*_messages.log")
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"phone {phone_.user} did not register locally within {timeout}s")


async def polled(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Returns once `condition()` holds (polled every 50 ms); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


def cloud_bindings(cloud: peers.Kamailio) -> dict[str, list[str]]:
    """AoR user -> the Path of each of its contacts, from the cloud's own location table."""
    dump = subprocess.run(
        [peers.tool("kamcmd"), "-s", f"unix:{cloud.workdir / 'kamailio_ctl'}", "ul.dump"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    found: dict[str, list[str]] = {}
    for block in dump.split("AoR: ")[1:]:
        user = block.split()[0].split("@")[0]
        found[user] = re.findall(r"Path: (\S+)", block)
    return found


async def end_all(phones_: list[peers.Phone], office: FailbackOffice, cloud: peers.Kamailio) -> None:
    """End every process a test started, each one even if ending another failed: the sipp phones
    (killed: a phone holding its registration would otherwise run on for its whole hold), then the
    agent, then the cloud."""
    try:
        for phone_ in phones_:
            if phone_.process.returncode is None:
                phone_.process.kill()
            await phone_.process.wait()
    finally:
        try:
            await asyncio.to_thread(office.agent.stop)
        finally:
            cloud.stop()


async def test_after_the_hold_down_every_phone_is_registered_with_the_cloud_at_the_sites_rate(
    tmp_path, logging_cloud_config
):
    cloud_port = free_port("127.0.0.3")
    office = FailbackOffice(tmp_path, cloud_port)
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS)
    phones_: list[peers.Phone] = []
    try:
        await office.ready()
        await office.mode("local")  # nothing listens at the cloud's address yet
        pairing = asyncio.create_task(asyncio.to_thread(office.pair))  # for vaxelctl below, meanwhile
        for user in PHONE_USERS:
            phones_.append(
                await peers.phone("register_wait.xml", office.lan, user, tmp_path, password=E2E_USERS[user],
                                  answers="answer.xml", hold=60, timeout=90)
            )  # fmt: skip
        for phone_ in phones_:
            await registered_locally(phone_)

        await asyncio.to_thread(cloud.start)
        online = await office.mode("online", timeout=30)
        started = await office.event("failback started", timeout=5)
        done = await office.event("failback done", timeout=60)
        assert started["phones"] == len(PHONE_USERS)
        assert (done["phones"], done["registered"], done["failures"], done["unregistered"]) == (10, 10, 0, 0)
        assert done["seconds"] <= 60
        assert done["peak_rate"] <= RATE

        # The cloud's view: every phone's user registered by us, never more than RATE in any second.
        arrivals = sorted(
            (float(at), user, int(cseq), ua)
            for at, user, cseq, ua in CLOUD_LINE.findall(cloud.output())
        )  # fmt: skip
        times = [at for at, *_ in arrivals]
        assert {user for _, user, _, _ in arrivals} == set(PHONE_USERS)
        assert all(ua.startswith("Vaxelbox/") and "Yealink SIP-T46U" in ua for *_, ua in arrivals)
        assert len(arrivals) == done["requests"]
        assert len(arrivals) == len(PHONE_USERS) + 1  # one challenge; its nonce served the rest
        for at in times:
            assert bisect.bisect_left(times, at + 1.0) - bisect.bisect_left(times, at) <= RATE, times
        bindings = cloud_bindings(cloud)
        assert set(bindings) == set(PHONE_USERS)
        assert all(len(paths) == 1 and "@127.0.0.2:" in paths[0] for paths in bindings.values()), bindings

        # A call through the cloud reaches a phone that only failback registered there.
        caller = await peers.phone("register_call.xml", office.lan, CALLER, tmp_path, callee="105",
                                   password=E2E_USERS[CALLER])  # fmt: skip
        phones_.append(caller)
        await caller.finish()
        callee_log = "".join(p.read_text() for p in phones_[4].workdir.glob("*_messages.log"))
        assert "INVITE sip:105@127.0.0.1:" in callee_log

        # Nothing reached the phones but that call: no 5xx, no error in the agent's log.
        for phone_ in phones_:
            assert not re.search(
                r"^SIP/2\.0 5\d\d",
                "".join(p.read_text() for p in phone_.workdir.glob("*_messages.log")),
                re.M,
            )
        assert not [e for e in office.agent.events() if e.get("level") == "error"]

        # What support sees: vaxelctl mode --json carries the last failback's report.
        await pairing
        failback = json.loads(office.vaxelctl("mode", "--json"))["failback"]
        assert (failback["state"], failback["registered"], failback["requests"]) == (
            "done",
            10,
            done["requests"],
        )
        print(
            f"\nfailback: online at {online['timestamp']}, {done['phones']} phones in {done['seconds']} s, "
            f"peak {done['peak_rate']}/s, {done['requests']} REGISTERs; cloud saw "
            f"{len(times)} REGISTERs over {times[-1] - times[0]:.2f} s"
        )
    finally:
        await end_all(phones_, office, cloud)


async def test_a_call_set_up_locally_is_not_disturbed_by_failback(tmp_path, logging_cloud_config):
    """Two office phones talking since local mode: after failback their BYE still reaches each other
    (the dialog's route set names only the appliance), not the cloud, which never knew the call."""
    cloud_port = free_port("127.0.0.3")
    office = FailbackOffice(tmp_path, cloud_port)
    cloud = peers.Kamailio("127.0.0.3", cloud_port, tmp_path / "kamailio", users=E2E_USERS)
    phones_: list[peers.Phone] = []
    try:
        await office.ready()
        await office.mode("local")
        callee = await peers.phone("register_wait.xml", office.lan, "102", tmp_path, password=E2E_USERS["102"],
                                   answers="answer.xml", hold=40, timeout=60)  # fmt: skip
        phones_.append(callee)
        await registered_locally(callee)
        caller = await peers.phone("local_call_hold.xml", office.lan, "101", tmp_path, callee="102",
                                   password=E2E_USERS["101"], hold=9, timeout=60)  # fmt: skip
        phones_.append(caller)
        await polled(lambda: received(callee, "ACK") == 1, 10, "the call is up, in local mode")
        await asyncio.to_thread(cloud.start)
        await office.mode("online", timeout=30)
        await office.event("failback done", timeout=30)
        assert received(callee, "BYE") == 0  # the call outlasted failback (its 9 s hold: about twice that)
        await caller.finish(timeout=40)  # its BYE, sent online, was answered 200 ...
        bye = "".join(p.read_text(errors="replace") for p in callee.workdir.glob("*_messages.log"))
        assert re.search(r"message received \[\d+\] bytes :\s+BYE ", bye)  # ... by the callee itself
    finally:
        await end_all(phones_, office, cloud)
