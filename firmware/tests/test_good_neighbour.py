"""A good neighbour to the cloud (issue 17): quiet probing, Retry-After, DNS caching, counters.

Real peers on loopback: a scripted UDP cloud that records every datagram it receives and answers
(or not) as the test says, the agent process (`vaxelbox run`) and vaxelctl as an installer runs
them, and a DNS server the test runs (dnspython's message code) whose records and failures it
changes while the edge runs.
"""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from agent_process import AgentProcess
from peers import free_port
from vaxelbox.edge.health import (
    BACKOFF_CEILING,
    CEILING_ENV,
    CloudHealth,
    CloudProber,
    CloudState,
    ProbeSchedule,
    ProbeTransaction,
)
from vaxelbox.edge.resolver import NEGATIVE_TTL, CloudResolver
from vaxelbox.edge.service import Edge, EdgeSettings
from vaxelbox.edge.upstream import CloudBusy, Upstream
from vaxelbox.sip.message import Header, Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transaction import Send, StartTimer, Terminated, TimedOut
from vaxelbox.sip.transport import TransportLayer


class ScriptedCloud(asyncio.DatagramProtocol):
    """A cloud on loopback UDP: keeps (monotonic time, method) of every datagram; answers requests
    with `answer` = (status, reason, extra headers), or swallows them when `answer` is None."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str]] = []
        self.answer: tuple[int, str, dict[str, str]] | None = (200, "OK", {})
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            message = parse_message(data)
        except ValueError:
            self.received.append((time.monotonic(), data[:20].decode(errors="replace")))
            return
        method = message.method if isinstance(message, Request) else "response"
        self.received.append((time.monotonic(), method))
        if self.answer is None or not isinstance(message, Request) or message.method == "ACK":
            return
        status, reason, extra = self.answer
        response = make_response(message, status, reason)
        response.headers += [Header(name, value) for name, value in extra.items()]
        assert self.transport is not None
        self.transport.sendto(response.to_bytes(), addr)

    def between(self, start: float, end: float, method: str | None = None) -> int:
        return sum(1 for at, m in self.received if start <= at < end and method in (None, m))


async def scripted_cloud(host: str) -> tuple[ScriptedCloud, int, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, cloud = await loop.create_datagram_endpoint(ScriptedCloud, local_addr=(host, 0))
    return cloud, transport.get_extra_info("sockname")[1], transport


async def wait_until(condition, timeout: float, what: str) -> float:
    """Seconds until `condition()` held (polled every 20 ms); fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


# -- the pieces, sans I/O ------------------------------------------------------------------------


def test_a_probe_is_sent_once_and_given_up_after_its_timeout():
    probe = ProbeTransaction(Request("OPTIONS", "sip:cloud", []), reliable=False, timeout=1.0)
    assert probe.start() == [Send(probe.request), StartTimer("F", 1.0)]  # no Timer E
    assert probe.on_timer("E") == []  # even a stray Timer E sends nothing
    assert probe.on_timer("F") == [TimedOut(), Terminated()]


def test_the_wait_doubles_while_down_up_to_the_ceiling_jittered_and_an_answer_resets_it():
    drawn = []

    def lowest(low: float, high: float) -> float:
        drawn.append((low, high))
        return low

    schedule = ProbeSchedule(interval=1.0, ceiling=8.0, random=lowest)
    assert schedule.next_wait(False, CloudState.DEGRADED) == 1.0  # not yet down: detection stays fast
    waits = [schedule.next_wait(False, CloudState.DOWN) for _ in range(5)]
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]  # each drawn from [half, all] of 2, 4, 8, 8, 8
    assert drawn == [(1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (4.0, 8.0), (4.0, 8.0)]
    assert schedule.next_wait(True, CloudState.DOWN) == 1.0  # the cloud answered: normal interval


def silent_probe_times(schedule: ProbeSchedule, seconds: float) -> list[float]:
    """When a cloud silent from time 0 gets probes in its first `seconds`, as CloudProber.run sends
    them: the first at 0; an unanswered probe takes its timeout (the interval, half of it while
    suspect); the next leaves `schedule.next_wait` after the last one's start, or when it settled."""
    health, times, at, misses = CloudHealth(), [], 0.0, 0
    health.success(now=-1.0)
    while at < seconds:
        times.append(at)
        took = schedule.interval / 2 if 0 < misses < health.failures_for_down else schedule.interval
        health.failure(now=at + took)
        misses += 1
        at += max(took, schedule.next_wait(False, health.state, 0 < misses < health.failures_for_down))
    return times


def shortest(low: float, high: float) -> float:
    """The jitter always drawing its shortest wait: the most probes a silent cloud can get."""
    return low


def test_at_the_defaults_a_silent_cloud_gets_9_probes_in_24_s_at_most_and_waits_8_s_at_most():
    """The default schedule (1 s, ceiling 8 s) with the shortest jitter: 3 probes until down
    (1 + 0.5 + 0.5 s), then waits of 1, 2, 4, 4, 4 s (drawn from 2, 4, 8, 8, 8); at most 8 s between
    probes, so a returning cloud is seen within the ceiling. The end-to-end tests below watch the
    same steps with the test knob's lower ceiling."""
    schedule = ProbeSchedule(random=shortest)
    assert (schedule.interval, schedule.ceiling, BACKOFF_CEILING) == (1.0, 8.0, 8.0)
    assert silent_probe_times(schedule, 24) == [0, 1, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5]
    times = silent_probe_times(ProbeSchedule(random=lambda low, high: high), 60)  # the longest jitter
    assert max(later - earlier for earlier, later in itertools.pairwise(times)) == 8.0


def test_without_the_knob_the_prober_backs_off_to_8_s_and_the_knob_only_lowers_it(monkeypatch):
    upstream = SimpleNamespace(all_held_observers=[])
    prober = partial(CloudProber, None, upstream, CloudHealth(), ("127.0.0.2", 5062), 1.0)
    monkeypatch.delenv(CEILING_ENV, raising=False)
    assert prober().schedule.ceiling == BACKOFF_CEILING == 8.0
    monkeypatch.setenv(CEILING_ENV, "4")
    assert prober().schedule.ceiling == 4.0
    assert prober(ceiling=2.0).schedule.ceiling == 2.0  # an explicit ceiling wins
    for wrong in ("9", "0", "soon"):
        monkeypatch.setenv(CEILING_ENV, wrong)
        with pytest.raises(ValueError, match=CEILING_ENV):
            prober()


def test_after_a_miss_the_next_probes_come_at_half_the_interval_until_down():
    schedule = ProbeSchedule(interval=1.0, ceiling=8.0)
    assert schedule.next_wait(False, CloudState.DEGRADED, suspect=True) == 0.5
    assert schedule.next_wait(True, CloudState.DEGRADED, suspect=True) == 1.0  # answered after all
    assert schedule.next_wait(False, CloudState.DEGRADED, suspect=False) == 1.0  # e.g. a Retry-After wait


def test_a_503_retry_after_is_degraded_and_misses_meanwhile_do_not_make_it_down():
    health = CloudHealth()
    health.success(now=0)
    health.busy(10, now=1)
    assert health.state is CloudState.DEGRADED
    for t in (2, 3, 4, 5):
        health.failure(now=t)
    assert health.state is CloudState.DEGRADED
    for t in (12, 13, 14):  # the wait is over: silence counts again
        health.failure(now=t)
    assert health.state is CloudState.DOWN


# -- probing a silent cloud: the agent process ------------------------------------------------------


def vaxelctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"},
    )


def cloud_states(agent: AgentProcess, state: str) -> int:
    return sum(1 for e in agent.events("cloud state") if e.get("new") == state)


CEILING = 4.0  # s: the agents' probe backoff ceiling here (the test knob); the default 8 s above
WINDOW = 12.0  # s of silence watched: its backoff reaches the ceiling as 24 s does at the default


def pair(data: Path, laptop: Path, coap: int) -> subprocess.CompletedProcess[str]:
    """vaxelctl paired as Support with the agent whose state is in `data` (CoAP on 127.0.0.1)."""
    code = subprocess.run(
        [sys.executable, "-m", "vaxelbox", "pairing-code", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return vaxelctl(laptop, "pair", f"127.0.0.1:{coap}", "--code", code, "--name", "Support")


async def test_a_silent_cloud_gets_under_one_packet_a_second_and_its_return_is_seen(tmp_path):
    """The cloud answers, then swallows everything for WINDOW s, then answers again. Before this
    change a silent cloud received about 11 OPTIONS a second (each probe retransmitted for 32 s)."""
    cloud, port, endpoint = await scripted_cloud("127.0.0.3")
    coap = free_port("127.0.0.1")
    data = tmp_path / "data"
    agent = AgentProcess(
        tmp_path,
        "--data",
        str(data),
        "--coap-port",
        str(coap),
        "--cloud",
        f"sip:127.0.0.3:{port};transport=udp",
        env={CEILING_ENV: str(CEILING)},
    )
    try:
        await asyncio.to_thread(agent.wait_notification, "READY", "1", 20)
        await wait_until(lambda: cloud_states(agent, "up") >= 1, 10, "cloud up")
        await asyncio.sleep(1)  # answering, probed at the normal interval
        cloud.answer = None
        silent = time.monotonic()
        detection = await wait_until(lambda: cloud_states(agent, "down") >= 1, 6, "cloud down")
        first_miss = next(at for at, _ in cloud.received if at >= silent)
        since_miss = silent + detection - first_miss
        # Meanwhile, in a thread (the cloud on this loop goes on reading): pair for the status below.
        laptop = tmp_path / "laptop"
        paired = await asyncio.to_thread(pair, data, laptop, coap)
        assert paired.returncode == 0, paired.stderr
        await asyncio.sleep(silent + WINDOW - time.monotonic())
        packets = cloud.between(silent, silent + WINDOW)
        rate = packets / WINDOW
        cloud.answer = (200, "OK", {})
        back = await wait_until(lambda: cloud_states(agent, "up") >= 2, CEILING + 7, "cloud up again")
        print(
            f"silent cloud: {packets} packets in {WINDOW:.0f} s ({rate:.2f}/s); down detected "
            f"{since_miss:.2f} s after the first unanswered probe ({detection:.2f} s after the silence "
            f"began); return seen (up) {back:.2f} s after it answered again"
        )
        # Three unanswered probes of 1 s each, plus the log's way to us; the silence may begin up to
        # one interval before the next probe leaves.
        assert since_miss <= 3.3, since_miss
        assert detection <= 4.3, detection
        assert rate <= 1.0, rate
        # 3 before down, then backoff 2, 4, 4 s (the shortest jitter: 1, 2, 2 s): 8 at most.
        most = len(silent_probe_times(ProbeSchedule(1.0, CEILING, random=shortest), WINDOW))
        assert packets <= most + 1, (packets, most)
        # Seen within the ceiling, plus a normal probe to confirm (two answers after an outage).
        assert back <= CEILING + 2 + 0.5, back

        before = len(cloud.received)
        # In a thread: the cloud (on this loop) keeps reading what the agent sends meanwhile.
        result = await asyncio.to_thread(vaxelctl, laptop, "status", "--json")
        assert result.returncode == 0, result.stderr
        traffic = json.loads(result.stdout)["cloud_traffic"]
        await asyncio.sleep(0.1)  # a probe sent just before the answer is read too
        after = len(cloud.received)
        print(f"cloud_traffic: {traffic}")
        assert before - 1 <= traffic["packets"] <= after + 1, (before, traffic, after, cloud.received)
        assert traffic["requests"]["OPTIONS"] == traffic["packets"]  # probes only: no phones here
        assert traffic["retransmissions"] == 0
        assert traffic["by_target"] == {f"127.0.0.3:{port}/udp": traffic["packets"]}
        assert f"probe backoff ceiling {CEILING:g} s" in agent.output()  # the knob took
    finally:
        await asyncio.to_thread(agent.stop)
        endpoint.close()


# -- the cloud's own overload: 503 with Retry-After -----------------------------------------------


async def started_edge(*proxies: str) -> Edge:
    edge = Edge(EdgeSettings(lan=("127.0.0.1", 0), wan=("127.0.0.2", 0), proxies=list(proxies)))
    await edge.start()
    return edge


async def test_a_503_retry_after_moves_probes_to_the_next_proxy_and_the_first_hears_nothing_meanwhile():
    busy, busy_port, busy_endpoint = await scripted_cloud("127.0.0.3")
    busy.answer = (503, "Service Unavailable", {"Retry-After": "3"})
    spare, spare_port, spare_endpoint = await scripted_cloud("127.0.0.4")
    edge = await started_edge(
        f"sip:127.0.0.3:{busy_port};transport=udp", f"sip:127.0.0.4:{spare_port};transport=udp"
    )
    assert edge.upstream is not None
    health = CloudHealth()
    prober = CloudProber(edge.stack, edge.upstream, health, edge.addresses.wan, interval=1.0)
    probing = asyncio.create_task(prober.run())
    try:
        await wait_until(lambda: health.state is CloudState.UP, 5, "the second proxy answers")
        refused = busy.received[0][0]
        assert list(edge.upstream.footprint()["held"]) == [f"127.0.0.3:{busy_port}/udp"]
        await asyncio.sleep(refused + 2.8 - time.monotonic())
        assert busy.between(refused + 0.001, refused + 2.8) == 0  # nothing within its 3 s
        assert spare.between(0, time.monotonic(), "OPTIONS") >= 2  # probed every second meanwhile
    finally:
        probing.cancel()
        await edge.stop()
        busy_endpoint.close()
        spare_endpoint.close()


def register(lan_port: int, phone_port: int, call_id: str) -> bytes:
    return (
        f"REGISTER sip:vaxel.example.net SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone_port};branch=z9hG4bK-{call_id};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:101@vaxel.example.net>;tag={call_id}\r\n"
        f"To: <sip:101@vaxel.example.net>\r\n"
        f"Call-ID: {call_id}@127.0.0.1\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:101@127.0.0.1:{phone_port}>\r\n"
        f"Expires: 300\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message = parse_message(data)
        if not isinstance(message, Request):
            self.statuses.append(message.status)


async def test_a_lone_proxy_asking_to_wait_is_degraded_not_down_and_gets_nothing_until_the_time_is_up():
    """The only proxy answers a probe 503 Retry-After: 3. For 3 s nothing reaches it, not even a
    phone's REGISTER (the edge answers that phone 503 itself); then probing resumes."""
    cloud, port, endpoint = await scripted_cloud("127.0.0.3")
    cloud.answer = (503, "Service Unavailable", {"Retry-After": "3"})
    edge = await started_edge(f"sip:127.0.0.3:{port};transport=udp")
    assert edge.upstream is not None
    health = CloudHealth()
    states = []
    health.subscribe(lambda change: states.append(change.new))
    prober = CloudProber(edge.stack, edge.upstream, health, edge.addresses.wan, interval=1.0)
    probing = asyncio.create_task(prober.run())
    loop = asyncio.get_running_loop()
    phone_transport, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    try:
        await wait_until(lambda: len(cloud.received) == 1, 3, "the first probe")
        refused = cloud.received[0][0]
        cloud.answer = (200, "OK", {})  # what it will say once asked again
        await wait_until(lambda: health.state is CloudState.DEGRADED, 1, "degraded")
        phone_port = phone_transport.get_extra_info("sockname")[1]
        phone_transport.sendto(register(edge.addresses.lan[1], phone_port, "held-1"), edge.addresses.lan)
        await wait_until(lambda: phone.statuses != [], 2, "the phone's answer")
        assert phone.statuses == [503]
        resumed = await wait_until(lambda: len(cloud.received) >= 2, 6, "probing resumes")
        assert cloud.received[1][0] - refused >= 3.0, cloud.received
        assert cloud.between(0, time.monotonic(), "REGISTER") == 0
        await wait_until(lambda: health.state is CloudState.UP, 3, "up again")
        assert CloudState.DOWN not in states, states
        footprint = edge.upstream.footprint()
        assert footprint["suppressed"] >= 1
        print(f"probing resumed {resumed:.2f} s after the wait began; {footprint}")
    finally:
        probing.cancel()
        phone_transport.close()
        await edge.stop()
        endpoint.close()


# -- DNS: cached for its TTL, followed when it changes, failures cached -----------------------------


class Zone(asyncio.DatagramProtocol):
    """A DNS server on loopback: `records[(name, type)]` answered with `ttl`; other types of a
    known name get an empty answer with an SOA; `failing` answers everything SERVFAIL."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.ttl = 1
        self.failing = False
        self.queries: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queries.append(time.monotonic())
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        kind = dns.rdatatype.to_text(question.rdtype)
        if self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif records := self.records.get((question.name.to_text(), kind)):
            response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", kind, *records))
        else:
            soa = "ns.example.net. admin.example.net. 1 60 60 60 40"
            response.authority.append(dns.rrset.from_text("example.net.", 40, "IN", "SOA", soa))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def zone():
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    client = dns.asyncresolver.Resolver(configure=False)
    client.nameservers = ["127.0.0.1"]
    client.port = transport.get_extra_info("sockname")[1]
    client.timeout = client.lifetime = 2
    yield server, client
    transport.close()


async def test_a_moved_sbc_is_followed_without_a_restart(zone):
    """sbc.example.net moves from 127.0.0.3 to 127.0.0.4 (TTL 1 s, held at least 5 s): the prober
    follows it; meanwhile the DNS server is asked about once per TTL, not per probe."""
    server, client = zone
    old, old_port, old_endpoint = await scripted_cloud("127.0.0.3")
    new_endpoint, new = None, None
    server.records[("sbc.example.net.", "A")] = ["127.0.0.3"]
    transports = TransportLayer(lambda message, flow: None)
    wan = await transports.listen_udp("127.0.0.2", 0)
    upstream = Upstream(
        transports, [f"sip:sbc.example.net:{old_port};transport=udp"], wan, resolver=CloudResolver(client)
    )
    stack = SipStack(transports)
    health = CloudHealth()
    probing = asyncio.create_task(CloudProber(stack, upstream, health, wan, interval=1.0).run())
    try:
        await wait_until(lambda: health.state is CloudState.UP, 5, "the old address answers")
        new_endpoint, new = (await asyncio.get_running_loop().create_datagram_endpoint(
            ScriptedCloud, local_addr=("127.0.0.4", old_port)
        ))  # fmt: skip
        server.records[("sbc.example.net.", "A")] = ["127.0.0.4"]
        moved = time.monotonic()
        followed = await wait_until(lambda: new.received != [], 8, "probes reach the new address")
        assert upstream.is_cloud("127.0.0.4")
        await asyncio.sleep(2)
        window = time.monotonic() - moved
        queries = sum(1 for at in server.queries if at >= moved)
        print(f"followed the move in {followed:.2f} s; {queries} DNS queries in {window:.1f} s")
        assert queries <= 2 * (window / 5 + 1)  # A and AAAA, once per (floored) TTL
        assert old.between(moved + followed + 0.5, time.monotonic()) == 0
    finally:
        probing.cancel()
        await transports.close()
        old_endpoint.close()
        if new_endpoint is not None:
            new_endpoint.close()


async def test_a_failing_dns_server_is_not_asked_in_a_tight_loop(zone):
    """Every answer SERVFAIL (the name is `localhost`, so the names-file fallback finds it without
    asking any other server); the upstream resolves as often as asked over a simulated 120 s
    (steps of 0.1 s): the server sees each question at most once per NEGATIVE_TTL."""
    server, client = zone
    server.failing = True
    now = [0.0]
    resolver = CloudResolver(client, clock=lambda: now[0])
    transports = TransportLayer(lambda message, flow: None)
    upstream = Upstream(
        transports,
        ["sip:localhost:5060;transport=udp"],
        ("127.0.0.2", 5060),
        resolver=resolver,
        clock=lambda: now[0],
    )
    for _ in range(1200):
        await upstream.resolve()
        now[0] += 0.1
    windows = 120 / NEGATIVE_TTL + 1
    print(f"{len(server.queries)} queries to a failing DNS server over a simulated 120 s")
    # A and AAAA each once per window (the names-file fallback is not DNS: counted, but not here).
    assert len(server.queries) <= 2 * windows, len(server.queries)
    assert resolver.queries <= 3 * windows


async def test_a_relayed_503_retry_after_holds_its_proxy_and_with_none_left_the_upstream_says_busy():
    """What the relay's response chain hands the upstream (Upstream.on_response): the 503 to a
    REGISTER from the first proxy moves traffic to the second; when the second says the same, no
    flow is given out (CloudBusy, counted as suppressed) until the first wait is over."""
    now = [100.0]
    transports = TransportLayer(lambda message, flow: None)
    wan = await transports.listen_udp("127.0.0.2", 0)
    first, second = ("127.0.0.3", 5060), ("127.0.0.4", 5060)
    upstream = Upstream(
        transports, [f"sip:{h}:{p};transport=udp" for h, p in (first, second)], wan, clock=lambda: now[0]
    )
    told = []
    upstream.all_held_observers.append(lambda seconds, why: told.append(seconds))
    try:
        assert (await upstream.flow()).remote == first
        busy = Response(503, "Service Unavailable", [Header("Retry-After", "30 (maintenance);duration=60")])
        assert upstream.on_response(busy, first) == 30
        assert upstream.ready_flow() is None
        assert (await upstream.flow()).remote == second
        assert told == []  # the second proxy is still there
        busy.replace("Retry-After", "60")
        upstream.on_response(busy, second)
        assert told == [30]  # the first is free again in 30 s
        with pytest.raises(CloudBusy):
            await upstream.flow()
        assert upstream.footprint()["suppressed"] == 1
        now[0] += 30
        assert (await upstream.flow()).remote == first
    finally:
        await transports.close()
