"""A good neighbour to the cloud (issue 17), against real peers: Kamailio answering 503 with
Retry-After, and a cloud whose link is cut in a network namespace.

The agent process (`vaxelbox run`) sits between sipp phones and Kamailio; what reaches the cloud is
counted at the cloud itself (Kamailio's log of every request it receives) or, when its link is
cut, by an nftables counter on the appliance's way out (the packets the cloud would have received).
"""

import asyncio
import itertools
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import peers
import pytest
from agent_process import AgentProcess
from netns import Namespace, lan_pair
from peers import DOMAIN, USERS, Kamailio, free_port
from test_good_neighbour import CEILING, WINDOW, shortest, silent_probe_times
from vaxelbox.edge.health import CEILING_ENV, ProbeSchedule

RETRY_AFTER = 4  # seconds the busy Kamailio asks for
# Every request Kamailio receives, logged with its arrival time (epoch seconds, microseconds).
ARRIVAL_LOG = '    xlog("L_NOTICE", "cloud got $rm at=$TV(Sn) from=$si:$sp\\n");\n'
ARRIVAL = re.compile(r"cloud got (\S+) at=([\d.]+) from=127\.0\.0\.2:")  # from the appliance's WAN
# The busy cloud: logs, then answers every request 503 with Retry-After (ACKs need no answer).
BUSY_ROUTE = ARRIVAL_LOG + (
    '    if (is_method("ACK")) { exit; }\n'
    f'    append_to_reply("Retry-After: {RETRY_AFTER}\\r\\n");\n'
    '    sl_send_reply("503", "Service Unavailable");\n'
    "    exit;\n"
)
ROUTE_START = "request_route {\n"


def kamailio_with(route: str, address: str, workdir: Path) -> Kamailio:
    """A Kamailio started from a copy of the tests' config with `route` at the top of request_route
    (the default config stays as it is for every other test)."""
    config = (peers.PEERS / "kamailio.cfg").read_text()
    assert config.count(ROUTE_START) == 1
    copy = workdir / "config"
    copy.mkdir(parents=True)
    (copy / "kamailio.cfg").write_text(config.replace(ROUTE_START, ROUTE_START + route))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(peers, "PEERS", copy)  # Kamailio.start reads peers.PEERS / "kamailio.cfg"
        return Kamailio(address, free_port(address), workdir).start()


def arrivals(cloud: Kamailio, method: str | None = None) -> list[float]:
    """Epoch times of the requests from the appliance that `cloud` logged (of `method`, if given);
    not peers.py's readiness ping."""
    return [float(at) for m, at in ARRIVAL.findall(cloud.output()) if method in (None, m)]


def office_site(*proxies: str) -> str:
    users = "".join(
        f'\n[[users]]\nid = "u{user}"\nname = "Person {user}"\nextension = "{user}"\n'
        f'sip = {{ user = "{user}", password = "{password}" }}\n'
        for user, password in USERS.items()
    )
    return (
        f'[site]\nname = "Good neighbour"\n\n[cloud]\ndomain = "{DOMAIN}"\nproxies = {list(proxies)!r}\n\n'
        f'[main]\nnumber = "08-465 004 00"\nentry = "user:u101"\n{users}'
    ).replace("'", '"')


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def test_kamailio_asking_to_wait_hears_nothing_until_the_time_is_up_and_the_second_proxy_serves(
    tmp_path,
):
    """Two proxies: the first (Kamailio) answers everything 503 Retry-After: RETRY_AFTER, the second
    is a normal Kamailio registrar. The first probe gets the 503: probes and a phone's REGISTER go to
    the second. Then the second dies: the first is asked again only once its wait is over, answers
    503 again, and with no proxy left to use hears nothing until that wait is over too."""
    busy = await asyncio.to_thread(kamailio_with, BUSY_ROUTE, "127.0.0.3", tmp_path / "busy")
    spare = await asyncio.to_thread(kamailio_with, ARRIVAL_LOG, "127.0.0.4", tmp_path / "spare")
    site = tmp_path / "site.toml"
    site.write_text(
        office_site(f"sip:127.0.0.3:{busy.port};transport=udp", f"sip:127.0.0.4:{spare.port};transport=udp")
    )
    lan = ("127.0.0.1", free_port("127.0.0.1"))
    agent = AgentProcess(
        tmp_path, "--site", str(site), "--data", str(tmp_path / "data"), "--cloud", "",
        "--lan", f"{lan[0]}:{lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
    )  # fmt: skip
    try:
        await asyncio.to_thread(agent.wait_notification, "READY", "1", 20)
        await wait_for(lambda: arrivals(busy), 10, "the first proxy is asked")
        await wait_for(lambda: arrivals(spare, "OPTIONS"), 5, "the second proxy is probed")
        phone = await peers.phone("register.xml", lan, "101", tmp_path, timeout=10)
        await phone.finish(timeout=15)  # 401, then 200: through the second proxy
        assert len(arrivals(spare, "REGISTER")) == 2
        spare.stop()
        stopped = time.time()
        await wait_for(lambda: len(arrivals(busy)) >= 2, 2 * RETRY_AFTER + 5, "the first is asked again")
        await asyncio.sleep(RETRY_AFTER - 0.5)  # within its second wait: nothing meanwhile
        asked = arrivals(busy)
    finally:
        await asyncio.to_thread(agent.stop)
        busy.stop()
        spare.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    print(f"\nthe busy proxy was asked at {[round(t - asked[0], 2) for t in asked]} s (gaps {gaps})")
    assert arrivals(busy, "REGISTER") == []  # the phone's REGISTER went to the second proxy only
    assert asked[1] > stopped  # while the second proxy answered, the first heard nothing more
    assert all(gap >= RETRY_AFTER for gap in gaps), gaps  # never before its Retry-After ran out
    assert len(asked) == 2, asked  # asked again once its wait was over, then held once more
    held = [e for e in agent.events() if "held for" in str(e.get("event", ""))]
    assert held, agent.output()[-3000:]


# -- the cloud's link cut, in network namespaces --------------------------------------------------

CLOUD_ADDRESSES = ("198.51.100.50", "198.51.100.51")  # two proxies of one cloud, behind one link
SIP_PORT = 5060


@dataclass
class CutOffice:
    """The agent in namespace `edge`, two Kamailio proxies in namespace `cloud`, one veth between.
    An nftables counter per proxy in `edge`'s output hook counts what the appliance sends each:
    what the cloud receives while the link is up, and would receive while it is cut."""

    edge: Namespace
    cloud: Namespace
    agent: AgentProcess

    def sent(self) -> dict[str, int]:
        """Packets sent so far to each proxy address (UDP to its SIP port)."""
        listing = run(self.edge.command("nft", "list", "chain", "inet", "footprint", "out"))
        return {
            address: int(count)
            for address, count in re.findall(r"ip daddr (\S+) udp dport \d+ counter packets (\d+)", listing)
        }

    def cut(self) -> None:
        run(self.cloud.command("ip", "link", "set", self.cloud.interface, "down"))

    def restore(self) -> None:
        run(self.cloud.command("ip", "link", "set", self.cloud.interface, "up"))

    def states(self, state: str) -> int:
        return sum(1 for e in self.agent.events("cloud state") if e.get("new") == state)


def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextmanager
def office_behind_a_link(tmp_path: Path) -> Iterator[CutOffice]:
    """Namespaces, the two proxies, the counters and the agent; all removed on leaving."""
    with lan_pair(("edge", "1"), ("cloud", "50"), prefix="198.51.100") as (edge, cloud):
        run(cloud.command("ip", "addr", "add", f"{CLOUD_ADDRESSES[1]}/24", "dev", cloud.interface))
        run(edge.command("nft", "add", "table", "inet", "footprint"))
        run(edge.command("nft", "add", "chain", "inet", "footprint", "out",
                         "{ type filter hook output priority 0 ; }"))  # fmt: skip
        for address in CLOUD_ADDRESSES:
            run(edge.command("nft", "add", "rule", "inet", "footprint", "out", "ip", "daddr", address,
                             "udp", "dport", str(SIP_PORT), "counter"))  # fmt: skip
        proxies = [
            Kamailio(address, SIP_PORT, tmp_path / f"kamailio-{address}", netns=cloud.name).start()
            for address in CLOUD_ADDRESSES
        ]
        site = tmp_path / "site.toml"
        site.write_text(office_site(*(f"sip:{a}:{SIP_PORT};transport=udp" for a in CLOUD_ADDRESSES)))
        agent = AgentProcess(
            tmp_path, "--site", str(site), "--data", str(tmp_path / "data"), "--cloud", "",
            "--lan", "127.0.0.1:5060", "--wan", f"{edge.address}:5062", wrap=edge.command,
            env={CEILING_ENV: str(CEILING)},
        )  # fmt: skip
        try:
            agent.wait_notification("READY", "1", 20)
            yield CutOffice(edge, cloud, agent)
        finally:
            agent.stop()
            for proxy in proxies:
                proxy.stop()


async def test_a_cut_link_to_the_cloud_gets_under_one_packet_a_second_and_its_return_is_seen(tmp_path):
    """The cloud's link is cut in its namespace (`ip link set down`) for WINDOW seconds: the packets
    the appliance sends toward it, per proxy, counted by nftables; then the link comes back. The agent
    backs off to CEILING s (the test knob; `make bench`, bench/cloud_footprint.py, measures the
    issue's 60 s at the default ceiling)."""
    with office_behind_a_link(tmp_path) as office:
        await wait_for(lambda: office.states("up") >= 1, 10, "cloud up")
        await asyncio.sleep(1)  # answering, probed at the normal interval
        office.cut()
        cut, before = time.monotonic(), office.sent()
        await wait_for(lambda: office.states("down") >= 1, 6, "cloud down")
        detection = time.monotonic() - cut
        await asyncio.sleep(cut + WINDOW - time.monotonic())
        after = office.sent()
        office.restore()
        restored = time.monotonic()
        await wait_for(lambda: office.states("up") >= 2, CEILING + 7, "cloud up again")
        back = time.monotonic() - restored
        assert f"probe backoff ceiling {CEILING:g} s" in office.agent.output()  # the knob took
    per_target = {address: after[address] - before[address] for address in CLOUD_ADDRESSES}
    total = sum(per_target.values())
    print(
        f"\nlink cut: {per_target} packets in {WINDOW:.0f} s ({total / WINDOW:.2f}/s in all); down seen "
        f"{detection:.2f} s after the cut; return seen (up) {back:.2f} s after the link came back"
    )
    assert total / WINDOW <= 1.0, per_target
    # 3 probes before down, then backoff 2, 4, 4 s (the shortest jitter: 1, 2, 2 s): 8 at most.
    most = len(silent_probe_times(ProbeSchedule(1.0, CEILING, random=shortest), WINDOW))
    assert total <= most + 1, (per_target, most)
    assert detection <= 4.3, detection  # three unanswered 1 s probes, the first up to 1 s late
    assert back <= CEILING + 2 + 0.5, back  # within the ceiling, plus a confirming probe
