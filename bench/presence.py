"""Presence benchmark (issue 11): many BLF watchers, one call, how fast every lamp follows.

Run with `make bench`, or smaller while developing (`python bench/presence.py --watchers 100`).
Writes bench/results/presence-<date>-<host>.md (and .json). The reference subject is Kamailio's
own presence server (the tests' config with presence=True: presence, presence_dialoginfo,
pua_dialoginfo over dlg_manage). For a subject:
- WATCHERS watchers (this file's own small asyncio SIP client, `--sockets` UDP sockets shared
  between them) subscribe to USERS users for Event: dialog, `--watchers / --users` each,
  authenticating with digest when challenged; time until every watcher has its first NOTIFY;
- the subject's memory with those subscriptions (Kamailio: the PSS of all its processes, which
  share memory, and its shared-memory pool's use; an RSS of one process for an agent);
- one call to one watched user (sipp phones: answer.xml rings, answers; register_call.xml calls
  and hangs up after 300 ms), and for each state, the time from its trigger to the first and to
  the last NOTIFY among that user's watchers: early after the caller's INVITE (the first cause:
  a lamp may light from the cloud's "early" before the callee's 180 is logged), confirmed after
  the callee's 200, terminated after the caller's BYE (times from sipp's message logs and this process, on
  the same clock).

The second subject is the appliance: Kamailio (presence=True, the same users) plays the cloud and
the real agent (`vaxelbox run`, a site with those users) stands in front of it; watchers and phones
use the agent's LAN address. Its memory is the agent process' VmRSS and VmHWM; the cloud should hold
one upstream subscription per watched user (USERS), not one per watcher. The agent runs with
`--sip-rate-limit 0`: every watcher here shares one source address (127.0.0.1), which the default
(200 messages/s per address) would throttle, where an office has one address per phone. With
`--profile FILE` the agent runs under cProfile and its top functions are printed (slower: for
finding why, not for the numbers). Loopback only.
"""

import argparse
import asyncio
import datetime
import hashlib
import io
import json
import platform
import pstats
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from agent_process import AgentProcess  # noqa: E402
from local_site import code, command_line, machine, site_text  # noqa: E402
from peers import DOMAIN, Kamailio, free_port, phone  # noqa: E402

Address = tuple[str, int]
CLOUD_HOST = "127.0.0.3"
WATCHER_HOST = "127.0.0.1"
FIRST_USER = 3000  # SIP users (and extensions) 3000, 3001, ...
STATES = ("early", "confirmed", "terminated")
TARGET_MS = 100.0  # issue 11: every watcher has its NOTIFY within this of the trigger
APPLIANCE = "Appliance (vaxelbox run in front of Kamailio)"
REFERENCE = "Kamailio presence server (reference)"
COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "l": "content-length", "m": "contact"}


@dataclass
class Message:
    """A parsed SIP message: start line, headers (lower-case names, values in order), body."""

    start: str
    headers: dict[str, list[str]]
    body: str

    @classmethod
    def parse(cls, data: bytes) -> "Message":
        head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
        start, *lines = head.split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.setdefault(COMPACT.get(name, name), []).append(value.strip())
        return cls(start, headers, body)

    def get(self, name: str) -> str:
        return self.headers.get(name, [""])[0]

    @property
    def status(self) -> int | None:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else None


def digest(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """The Authorization value answering a Digest `challenge` (MD5, with qop=auth when offered)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = fields["realm"], fields["nonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in fields.get("qop", "").split(","):
        cnonce = secrets.token_hex(8)
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        value += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in fields:
        value += f', opaque="{fields["opaque"]}"'
    return value + f', response="{response}"'


@dataclass
class Watcher:
    """One BLF key: a subscription to `user` (Event: dialog), authenticating as `auth_user`."""

    index: int
    user: str
    auth_user: str
    password: str
    socket: "WatcherSocket"
    call_id: str = field(default_factory=lambda: f"w-{secrets.token_hex(8)}")
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cseq: int = 0
    notifies: list[tuple[float, str, int | None]] = field(default_factory=list)  # (time, state, version)

    def subscribe(self, target: Address, authorization: str = "") -> bytes:
        self.cseq += 1
        host, port = self.socket.address
        uri = f"sip:{self.user}@{DOMAIN}"
        lines = [
            f"SUBSCRIBE {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            f"From: <sip:{self.auth_user}@{DOMAIN}>;tag={self.tag}", f"To: <{uri}>",
            f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} SUBSCRIBE",
            f"Contact: <sip:w{self.index}@{host}:{port}>", "Max-Forwards: 70", "Event: dialog",
            "Accept: application/dialog-info+xml", "Expires: 3600", "User-Agent: bench-watcher",
            *([authorization] if authorization else []), "Content-Length: 0",
        ]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def on_notify(self, notify: Message, at: float) -> None:
        state = re.search(r"<state[^>]*>\s*([a-z]+)", notify.body)
        version = re.search(r"<dialog-info[^>]*version=.(\d+)", notify.body)
        self.notifies.append(
            (at, state.group(1) if state else "idle", int(version.group(1)) if version else None)
        )

    def first(self, state: str, after: float) -> float | None:
        return next((at for at, s, _ in self.notifies if s == state and at >= after), None)


class WatcherSocket(asyncio.DatagramProtocol):
    """One UDP socket shared by several watchers: answers their NOTIFYs 200 and hands responses
    to the request waiting for them (by Call-ID and CSeq)."""

    def __init__(self) -> None:
        self.watchers: dict[str, Watcher] = {}
        self.waiting: dict[tuple[str, str], asyncio.Future[Message]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, source: Address) -> None:
        at = time.time()
        message = Message.parse(data)
        if message.status is not None:
            future = self.waiting.pop((message.get("call-id"), message.get("cseq")), None)
            if future and not future.done() and message.status >= 200:
                future.set_result(message)
            elif future and not future.done():
                self.waiting[(message.get("call-id"), message.get("cseq"))] = future  # provisional
            return
        if message.start.startswith("NOTIFY"):
            assert self.transport is not None
            self.transport.sendto(ok(message), source)
            watcher = self.watchers.get(message.get("call-id"))
            if watcher:
                watcher.on_notify(message, at)

    async def request(self, watcher: Watcher, data: bytes, target: Address) -> Message:
        """Send a request, retransmitting (0.5, 1, 2 s) until a final response; TimeoutError after 4 s."""
        assert self.transport is not None
        key = (watcher.call_id, f"{watcher.cseq} SUBSCRIBE")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        try:
            for wait in (0.5, 1.0, 2.0, 0.5):
                self.transport.sendto(data, target)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    continue
            raise TimeoutError(f"no answer to {watcher.call_id}")
        finally:
            self.waiting.pop(key, None)


def ok(request: Message) -> bytes:
    """200 OK to `request`: its Vias, From, To, Call-ID and CSeq."""
    lines = ["SIP/2.0 200 OK", *(f"Via: {via}" for via in request.headers.get("via", []))]
    lines += [f"From: {request.get('from')}", f"To: {request.get('to')}", f"Call-ID: {request.get('call-id')}",
              f"CSeq: {request.get('cseq')}", "Content-Length: 0"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def subscribe(watcher: Watcher, target: Address) -> bool:
    """Subscribe once, answering one digest challenge; True on 2xx."""
    response = await watcher.socket.request(watcher, watcher.subscribe(target), target)
    if response.status in (401, 407):
        name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        value = digest(
            response.get(name),
            "SUBSCRIBE",
            f"sip:{watcher.user}@{DOMAIN}",
            watcher.auth_user,
            watcher.password,
        )
        response = await watcher.socket.request(
            watcher, watcher.subscribe(target, f"{header}: {value}"), target
        )
    return response.status is not None and 200 <= response.status < 300


async def subscribe_all(watchers: list[Watcher], target: Address, rate: float) -> dict[str, Any]:
    """Start a subscription every 1/rate s; wait for every first NOTIFY (up to 30 s after the last)."""
    started = time.time()
    tasks = []
    for watcher in watchers:
        tasks.append(asyncio.create_task(subscribe(watcher, target)))
        await asyncio.sleep(1 / rate)
    answered = await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 30
    while any(not w.notifies for w in watchers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    notified = [w.notifies[0][0] for w in watchers if w.notifies]
    return {
        "subscribed": sum(1 for a in answered if a is True),
        "failed": sum(1 for a in answered if a is not True),
        "first_notify": len(notified),
        "all_first_notifies_after_s": round(max(notified) - started, 2) if notified else None,
    }


def sipp_events(log: Path) -> list[tuple[float, str, str]]:
    """(wall-clock time, "sent"/"received", first line) of each message in a sipp -trace_msg log."""
    events = []
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        stamp = re.match(r"-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", line)
        if stamp and i + 3 < len(lines):
            at = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            direction = "sent" if "sent" in lines[i + 1] else "received"
            events.append((at, direction, lines[i + 3]))
    return events


def first_event(log: Path, direction: str, start: str) -> float:
    times = [at for at, d, line in sipp_events(log) if d == direction and line.startswith(start)]
    if not times:
        raise AssertionError(f"no {start!r} {direction} in {log}")
    return times[0]


def registered(log: Path) -> bool:
    """Whether the phone logging to `log` got its 200 (the only one before a call: its REGISTER's)."""
    return any(d == "received" and line.startswith("SIP/2.0 200") for _, d, line in sipp_events(log))


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


async def call(
    target: Address, callee: str, caller: str, users: dict[str, str], work: Path
) -> dict[str, float]:
    """One call from `caller` to `callee` through `target`; the trigger times of each lamp state."""
    bo = await phone(
        "register_wait.xml",
        target,
        callee,
        work,
        answers="answer.xml",
        hold=8,
        port=free_port(WATCHER_HOST),
        password=users[callee],
    )
    bo_log = lambda: next(bo.workdir.glob("register_wait_*_messages.log"), None)  # noqa: E731
    await until(lambda: (log := bo_log()) is not None and registered(log), "the callee registered", 10)
    anna = await phone(
        "register_call.xml",
        target,
        caller,
        work,
        callee=callee,
        port=free_port(WATCHER_HOST),
        password=users[caller],
    )
    await anna.finish()
    bo.process.terminate()
    await bo.process.wait()
    callee_log = bo_log()  # sipp logs the -oocsf answers in the main scenario's log
    caller_log = next(anna.workdir.glob("*_messages.log"))
    assert callee_log is not None
    return {
        # Early from the caller's INVITE, the first cause there is: the lamp may light from the
        # cloud's own "early" before the callee's 180 is even logged (sipp stamps it after sending).
        "early": first_event(caller_log, "sent", "INVITE "),
        "confirmed": first_event(callee_log, "sent", "SIP/2.0 200"),
        "terminated": first_event(caller_log, "sent", "BYE "),
    }


async def measure(
    target: Address,
    users: dict[str, str],
    watchers_count: int,
    sockets: int,
    rate: float,
    memory: Callable[[], dict[str, float]],
    work: Path,
) -> dict[str, Any]:
    """The benchmark against the subject at `target` (phones and watchers use it): subscribe,
    read `memory()`, one call to the first user, the fan-out per state."""
    names = list(users)
    pool = []
    loop = asyncio.get_running_loop()
    for _ in range(sockets):
        _, protocol = await loop.create_datagram_endpoint(WatcherSocket, local_addr=(WATCHER_HOST, 0))
        pool.append(protocol)
    watchers = []
    for i in range(watchers_count):
        user, auth_user = names[i % len(names)], names[(i + 1) % len(names)]
        watcher = Watcher(i, user, auth_user, users[auth_user], pool[i % sockets])
        watcher.socket.watchers[watcher.call_id] = watcher
        watchers.append(watcher)
    memory_before = memory()
    subscribing = await subscribe_all(watchers, target, rate)
    await asyncio.sleep(1.0)
    memory_with = memory()
    callee, caller = names[0], names[1]
    triggers = await call(target, callee, caller, users, work / "call")
    watching = [w for w in watchers if w.user == callee]
    deadline = time.monotonic() + 10  # a watcher that never hears of the end shows in the counts
    while (
        not all(w.first("terminated", triggers["terminated"]) for w in watching)
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    fanout = {}
    for state in STATES:
        arrived = [w.first(state, triggers[state]) for w in watching]
        got = [at - triggers[state] for at in arrived if at is not None]
        fanout[state] = {
            "watchers": len(watching),
            "notified": len(got),
            "first_ms": round(min(got) * 1000, 1) if got else None,
            "last_ms": round(max(got) * 1000, 1) if got else None,
        }
    for protocol in pool:
        assert protocol.transport is not None
        protocol.transport.close()
    return {
        "subscribing": subscribing,
        "memory_before": memory_before,
        "memory_with_subscriptions": memory_with,
        "memory_after_call": memory(),
        "call_to": callee,
        "fanout": fanout,
        "lamps": lamps(watching, triggers["early"] - 1.0),
    }


def lamps(watching: list[Watcher], since: float) -> dict[str, Any]:
    """What the callee's watchers saw from `since` (just before the call): each distinct sequence of
    lamp states with how many watchers saw it, and how many watchers' versions did not rise."""
    sequences: dict[str, int] = {}
    for watcher in watching:
        seen = ",".join(state for at, state, _ in watcher.notifies if at >= since)
        sequences[seen] = sequences.get(seen, 0) + 1
    falling = 0
    for watcher in watching:
        versions = [v for _, _, v in watcher.notifies if v is not None]  # Kamailio's first has no body
        falling += any(b <= a for a, b in pairwise(versions))
    return {"sequences": sequences, "versions_not_rising": falling}


def kamailio_memory(cloud: Kamailio) -> Callable[[], dict[str, float]]:
    """Kamailio's memory: PSS summed over its processes (they share the pool), the main process'
    RSS, and how much of the shared-memory pool is in use (MiB)."""

    def read() -> dict[str, float]:
        assert cloud.process is not None
        main = psutil.Process(cloud.process.pid)
        processes = [main, *main.children(recursive=True)]
        pss = sum(p.memory_full_info().pss for p in processes)
        used = re.search(r"used:\s*(\d+)", cloud.rpc("core.shmmem"))
        return {
            "pss_mib": round(pss / 2**20, 1),
            "rss_main_mib": round(main.memory_info().rss / 2**20, 1),
            "shm_used_mib": round(int(used.group(1)) / 2**20, 1) if used else -1.0,
            "processes": len(processes),
        }

    return read


async def kamailio_reference(args: argparse.Namespace, users: dict[str, str], work: Path) -> dict[str, Any]:
    """Kamailio's own presence server as the subject."""
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), work / "kamailio", users=users, presence=True).start()
    try:
        result = await measure(
            (cloud.address, cloud.port),
            users,
            args.watchers,
            args.sockets,
            args.rate,
            kamailio_memory(cloud),
            work / "kamailio-run",
        )
        result["subscriptions_at_subject"] = cloud.subscriptions()
        result["subscribes_received"] = cloud.subscribes_received()
        return result
    finally:
        cloud.stop()


def agent_memory(pid: int) -> Callable[[], dict[str, float]]:
    """The agent process' resident memory now (VmRSS) and at its peak (VmHWM), MiB."""

    def read() -> dict[str, float]:
        status = Path(f"/proc/{pid}/status").read_text()
        kib = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return {
            "vmrss_mib": round(int(kib["VmRSS"]) / 1024, 1),
            "vmhwm_mib": round(int(kib["VmHWM"]) / 1024, 1),
        }

    return read


def start_agent(
    work: Path, users: dict[str, str], cloud: Address, rate_limit: float, profile: Path | None
) -> AgentProcess:
    """`vaxelbox run` on a site with `users`, in front of the cloud at `cloud`, LAN on 127.0.0.1,
    `--sip-rate-limit rate_limit`; under cProfile writing to `profile` if given (it writes when the
    agent exits on SIGTERM)."""
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site.toml"
    site.write_text(site_text(users, cloud, hold_down=3, failback_rate=None))
    lan = f"{WATCHER_HOST}:{free_port(WATCHER_HOST)}"

    def profiled(python: str, *argv: str) -> list[str]:
        return [python, "-m", "cProfile", "-o", str(profile), *argv] if profile else [python, *argv]

    return AgentProcess(
        work, "--site", str(site), "--data", str(work / "data"), "--lan", lan,
        "--wan", f"127.0.0.2:{free_port('127.0.0.2')}", "--cloud", f"sip:{cloud[0]}:{cloud[1]};transport=tcp",
        "--sip-rate-limit", f"{rate_limit:g}", wrap=profiled,
    )  # fmt: skip


def lan_of(agent: AgentProcess) -> Address:
    argv = agent.process.args
    assert isinstance(argv, list)
    host, port = str(argv[argv.index("--lan") + 1]).rsplit(":", 1)
    return host, int(port)


def agent_log(agent: AgentProcess) -> dict[str, Any]:
    """What the agent logged at warning and above (counts by message, a few examples)."""
    counts: dict[str, int] = {}
    for event in agent.events():
        if event.get("level") in ("warning", "error", "critical"):
            key = f"{event.get('level')}: {str(event.get('event'))[:120]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def top_functions(profile: Path, count: int = 25) -> str:
    """The functions that took the most time in the agent (cumulative and own), as pstats prints them."""
    out = io.StringIO()
    stats = pstats.Stats(str(profile), stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(count)
    return out.getvalue()


async def appliance(args: argparse.Namespace, users: dict[str, str], work: Path) -> dict[str, Any]:
    """The appliance as the subject: the agent in front of Kamailio (the cloud, with presence)."""
    cloud = Kamailio(CLOUD_HOST, free_port(CLOUD_HOST), work / "cloud", users=users, presence=True).start()
    try:
        agent = start_agent(
            work / "agent", users, (cloud.address, cloud.port), args.agent_rate_limit, args.profile
        )
        try:
            await asyncio.to_thread(agent.wait_notification, "READY", "1", 30)
            result = await measure(
                lan_of(agent),
                users,
                args.watchers,
                args.sockets,
                args.rate,
                agent_memory(agent.process.pid),
                work / "appliance-run",
            )
            result["upstream_subscriptions_at_cloud"] = cloud.subscriptions()
            result["subscribes_received_by_cloud"] = cloud.subscribes_received()
        finally:
            code = await asyncio.to_thread(agent.stop, 60)
            result_log = agent_log(agent)
        result["agent_exit"] = code
        result["agent_warnings"] = result_log
        if args.profile:
            print(top_functions(args.profile))
        return result
    finally:
        cloud.stop()


def readable(memory: dict[str, float]) -> str:
    """ "pss_mib 44.1, processes 11" from {"pss_mib": 44.1, "processes": 11}."""
    return ", ".join(f"{name} {value:g}" for name, value in memory.items())


def subscription_rows(subject: dict[str, Any], users: int) -> list[str]:
    """Table rows on who holds the subscriptions: the subject itself, or (the appliance) the cloud
    behind it, which should hold one per watched user."""
    if "upstream_subscriptions_at_cloud" in subject:
        return [
            f"| upstream subscriptions the cloud holds (one per watched user: {users}) / SUBSCRIBEs "
            f"the cloud received | {subject['upstream_subscriptions_at_cloud']} / "
            f"{subject['subscribes_received_by_cloud']} |"
        ]
    return [
        f"| subscriptions the subject holds / SUBSCRIBEs it received | "
        f"{subject.get('subscriptions_at_subject', '-')} / {subject.get('subscribes_received', '-')} |"
    ]


def comparison(results: dict[str, Any]) -> list[str]:
    """The appliance against the reference: last watcher's NOTIFY per state, the ratio, the target."""
    subjects = results["subjects"]
    if APPLIANCE not in subjects or REFERENCE not in subjects:
        return []
    mine, theirs = subjects[APPLIANCE]["fanout"], subjects[REFERENCE]["fanout"]
    lines = [
        "## Fan-out: appliance against Kamailio",
        "",
        f"| state | appliance, last | Kamailio, last | ratio appliance / Kamailio | target < {TARGET_MS:g} ms |",
        "|---|---|---|---|---|",
    ]
    for state in STATES:
        a, k = mine[state]["last_ms"], theirs[state]["last_ms"]
        ratio = f"{a / k:.1f}" if a is not None and k else "-"
        met = a is not None and a < TARGET_MS and mine[state]["notified"] == mine[state]["watchers"]
        lines.append(f"| {state} | {a} ms | {k} ms | {ratio} | {'met' if met else '**missed**'} |")
    return [*lines, ""]


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    base = out / f"presence-{stamp}-{platform.node()}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    r = results
    lines = [
        f"# Presence benchmark, {r['date']}",
        "",
        f"Machine: {r['machine']}",
        f"Code: {r['code']}.",
        f"Command: `{r['command']}`. Loopback only.",
        f"{r['watchers']} watchers (Event: dialog, {r['sockets']} UDP sockets) of {r['users']} users, "
        f"subscribing at {r['rate']:g}/s; then one call to one user, whose {r['watchers'] // r['users']} "
        "watchers are timed from each state's trigger (early: the caller's INVITE; confirmed: the callee's 200; "
        "terminated: the caller's BYE) to their NOTIFY.",
        "",
        "The appliance: `vaxelbox run` (a site with the same users) in front of Kamailio with presence "
        "as the cloud; watchers and phones use the agent's LAN address. Its memory: the agent process' "
        f"VmRSS and VmHWM. It runs with `--sip-rate-limit {r['agent_rate_limit']:g}`"
        + (
            " (no limit): all watchers here share one source address, 127.0.0.1, which the default "
            "(200 messages/s per address, burst 400) would throttle; in an office each phone has its own."
            if not r["agent_rate_limit"]
            else "."
        ),
        "",
    ]
    for name, s in r["subjects"].items():
        sub, mem = s["subscribing"], s["memory_with_subscriptions"]
        lines += [
            f"## {name}",
            "",
            "| measure | value |",
            "|---|---|",
            f"| subscribed / failed / with a first NOTIFY | {sub['subscribed']} / {sub['failed']} / "
            f"{sub['first_notify']} |",
            f"| all first NOTIFYs after the first SUBSCRIBE | {sub['all_first_notifies_after_s']} s |",
            *subscription_rows(s, r["users"]),
            f"| memory before subscriptions | {readable(s['memory_before'])} |",
            f"| memory with the subscriptions | {readable(mem)} |",
            f"| memory after the call | {readable(s['memory_after_call'])} |",
            *(
                f"| lamp states the callee's watchers saw (NOTIFYs from 1 s before the call) | {seq}: "
                f"{n} watchers |"
                for seq, n in s["lamps"]["sequences"].items()
            ),
            f"| watchers whose document versions did not rise | {s['lamps']['versions_not_rising']} |",
            *(
                f"| {state}: watchers notified, first / **last** after the trigger | "
                f"{f['notified']} of {f['watchers']}, {f['first_ms']} / **{f['last_ms']} ms** |"
                for state, f in s["fanout"].items()
            ),
            *(f"| agent log: {message} | {n} |" for message, n in s.get("agent_warnings", {}).items()),
            "",
        ]  # fmt: skip
    lines += comparison(r)
    base.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results: {base}.md")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--sockets", type=int, default=50, help="UDP sockets the watchers share")
    parser.add_argument("--rate", type=float, default=200.0, help="new subscriptions per second")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--profile", type=Path, help="run the agent under cProfile, writing here")
    parser.add_argument(
        "--agent-rate-limit",
        type=float,
        default=0.0,
        help="the agent's --sip-rate-limit (0: none; every watcher here shares one address)",
    )
    args = parser.parse_args()
    users = {str(FIRST_USER + n): f"pw-{FIRST_USER + n}-secret" for n in range(args.users)}
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code(),
        "command": command_line(),
        "watchers": args.watchers,
        "users": args.users,
        "sockets": args.sockets,
        "rate": args.rate,
        "agent_rate_limit": args.agent_rate_limit,
        "subjects": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["subjects"][REFERENCE] = asyncio.run(kamailio_reference(args, users, work))
        results["subjects"][APPLIANCE] = asyncio.run(appliance(args, users, work))
    write(results, args.out)
    failures = []  # written first, then a miss fails the run
    for name, subject in results["subjects"].items():
        missed = [state for state, f in subject["fanout"].items() if f["notified"] < f["watchers"]]
        if subject["subscribing"]["failed"] or missed:
            failures.append(f"{name}: failed subscriptions or watchers that missed {missed}")
    appliance_result = results["subjects"][APPLIANCE]
    slow = [
        s for s, f in appliance_result["fanout"].items() if f["last_ms"] is None or f["last_ms"] >= TARGET_MS
    ]
    if slow:
        failures.append(f"{APPLIANCE}: the last watcher's NOTIFY took {TARGET_MS:g} ms or more for {slow}")
    if appliance_result["upstream_subscriptions_at_cloud"] != args.users:
        failures.append(f"{APPLIANCE}: {appliance_result['upstream_subscriptions_at_cloud']} upstream "
                        f"subscriptions at the cloud, not one per watched user ({args.users})")  # fmt: skip
    if failures:
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
