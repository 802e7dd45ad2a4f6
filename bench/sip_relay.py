"""SIP relay benchmark (issue 12): the Vaxelbox edge against a Kamailio edge, same load, same run.

Run with `make bench` (every part at the issue's lengths), or one part at a time, short:

    python bench/sip_relay.py --only ladder --step-seconds 3 --rates 100,200,300
    python bench/sip_relay.py --only overload,latency --clean-rate 200 --overload-seconds 10
    python bench/sip_relay.py --only memory,soak --soak-minutes 1 --peak-seconds 10
    python bench/sip_relay.py --only profile --profile-seconds 10

sipp phones sit behind the edge (caller and callee, as in an office: each call crosses
the edge twice); the cloud is Kamailio over TCP (firmware/tests/peers.py) and challenges
every INVITE (407, answered by sipp's [authentication]). Edge A is the Vaxelbox agent,
edge B a Kamailio record-routing outbound proxy with Path (bench/kamailio-edge.cfg).
Parts (results in bench/results/sip-relay-<date>-<host>.md and .json):

- ladder: per edge, the highest rate of --rates that is clean (0 failed calls, 0
  retransmissions) for --step-seconds; the ratio Vaxelbox / Kamailio; per step the edge's CPU time
  (its processes' user + system) and the whole machine's, each per completed call;
- overload: per edge, twice its clean rate for --overload-seconds: goodput (calls
  completed per second within the step) against the clean rate, failed calls,
  retransmissions, 503s; then half the clean rate, and the seconds until every
  second of sipp's periodic statistics is clean again;
- memory: the agent's RSS idle, with 2,000 registered phones (after their transactions
  ended), and its peak (psutil every 0.5 s) during --peak-seconds at the clean rate;
- soak: the agent at 100 calls/s for --soak-minutes, RSS every 10 s, growth from minute 2;
- latency: INVITE -> 200 at 100 calls/s timed in nanoseconds (bench/sip_latency.py), straight
  to the cloud and through each edge; the difference is what the edge adds;
- profile: py-spy on the agent during --profile-seconds at --profile-rate, its top
  functions by self and inclusive samples;
- split (only when named in --only): --split-agents independent agents, each with its own
  caller and callee and an equal share of each rate of --rates, up to the first unclean step: an
  upper bound for an edge spread over that many processes on this machine (they share no state).
Everything runs on loopback; nothing leaves this machine.
"""

import argparse
import csv
import datetime
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from relay_edges import (
    ROOT,
    SHM_MB,
    Address,
    Agent,
    Edge,
    Kamailio,
    KamailioEdge,
    box_cpu_seconds,
    free_port,
    tool,
)
from sip_latency import measure as measure_latency
from sip_relay_report import OPTIONAL_PARTS, PARTS, write

SCENARIOS = Path(__file__).with_name("sipp")
PY_SPY = Path(sys.executable).with_name("py-spy")
PHONES = 2000
CALLER, CALLER_PASSWORD = "101", "pw-101-secret"
CALLEES = [str(n) for n in range(110, 160)]  # one fresh callee per registration: the cloud never forks
USERS = (
    {CALLER: CALLER_PASSWORD}
    | {u: f"pw-{u}-secret" for u in CALLEES}
    | {str(2000 + n): f"pw-{2000 + n}" for n in range(PHONES)}
)
EDGES: dict[str, Callable[[Path, Kamailio], Edge]] = {"vaxelbox": Agent, "kamailio": KamailioEdge}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- sipp ----------------------------------------------------------------------------------


def sipp(
    target: Address, scenario: str, workdir: Path, *args: str, port: int | None = None
) -> subprocess.Popen[bytes]:
    """Start sipp on `scenario` against `target` over UDP, periodic statistics every second in workdir/stats.csv."""
    command = [tool("sipp"), f"{target[0]}:{target[1]}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
               "-t", "u1", "-nostdin", "-trace_stat", "-stf", "stats.csv", "-fd", "1", "-trace_err", *args]  # fmt: skip
    if port:
        command += ["-p", str(port)]
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], seconds: float) -> int:
    """Wait up to `seconds` for sipp; past that, stop it (a call stuck waiting) and return -1.

    sipp's -recv_timeout fails a call whose next message never comes, but a backstop is cheap."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return -1


def stats_rows(workdir: Path) -> list[dict[str, str]]:
    with (workdir / "stats.csv").open() as file:
        return list(csv.DictReader(file, delimiter=";"))


def seconds_in(row: dict[str, str]) -> float:
    """A stats row's time since sipp started, in seconds (the epoch is the last field of each time)."""
    return float(row["CurrentTime"].split()[-1]) - float(row["StartTime"].split()[-1])


def count_503(workdir: Path) -> int:
    """503 responses sipp took as unexpected (its -trace_err log names each)."""
    return sum(path.read_text(errors="replace").count("SIP/2.0 503") for path in workdir.glob("*_errors.log"))


def register(target: Address, user: str, port: int, workdir: Path) -> None:
    """Register `user` with contact 127.0.0.1:port through `target` (digest); raises on failure."""
    inf = workdir / "one.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    inf.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={USERS[user]}]\n")
    process = sipp(target, "register_many.xml", workdir, "-inf", str(inf), "-m", "1", port=port)
    if process.wait(60) != 0:
        raise RuntimeError(f"registering {user} through {target} failed (see {workdir})")


class Callee:
    """A fresh registered user answering on its own port (sipp uas.xml) while in a `with` block."""

    def __init__(self, edge_lan: Address, workdir: Path, users: Iterator[str]) -> None:
        self.user, self.port, self.workdir = next(users), free_port("127.0.0.1"), workdir
        register(edge_lan, self.user, self.port, workdir / "register")

    def __enter__(self) -> "Callee":
        self.process = sipp(("127.0.0.1", 9), "uas.xml", self.workdir / "uas", port=self.port)
        time.sleep(0.3)
        return self

    def __exit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGUSR1)  # sipp's soft stop
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def caller(
    target: Address, callee: str, rate: float, seconds: float, workdir: Path, limit: int = 0
) -> subprocess.Popen[bytes]:
    """Start sipp's caller (uac_auth.xml: INVITE, 407 answered, 200, ACK, BYE) at `rate` calls/s for `seconds`."""
    calls = max(1, int(rate * seconds))
    return sipp(target, "uac_auth.xml", workdir, "-s", callee, "-au", CALLER, "-ap", CALLER_PASSWORD,
                "-r", str(rate), "-m", str(calls), "-l", str(limit or max(40, int(rate * 4))),
                "-timeout", f"{int(seconds + 60)}s", "-recv_timeout", "32000")  # fmt: skip


def step(target: Address, callee: str, rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """One clean-or-not step: `rate` calls/s for `seconds`; clean = all calls done, 0 failed, 0 retransmitted."""
    started = time.monotonic()
    process = caller(target, callee, rate, seconds, workdir)
    finish(process, seconds + 90)
    elapsed = round(time.monotonic() - started, 1)
    final = stats_rows(workdir)[-1]
    calls, ok = int(rate * seconds), int(final["SuccessfulCall(C)"])
    failed, retrans = int(final["FailedCall(C)"]), int(final["Retransmissions(C)"])
    return {"rate": rate, "calls": calls, "seconds": elapsed, "successful": ok, "failed": failed, "retransmissions": retrans,
            "503": count_503(workdir), "clean": process.returncode == 0 and failed == retrans == 0 and ok == calls}  # fmt: skip


# --- the parts -----------------------------------------------------------------------------


@contextmanager
def edge_with_callee(
    name: str, work: Path, cloud: Kamailio, users: Iterator[str]
) -> Iterator[tuple[Edge, Callee]]:
    edge = EDGES[name](work / name / "edge", cloud)
    try:
        with Callee(edge.lan, work / name / "callee", users) as callee:
            yield edge, callee
    finally:
        edge.stop()


def ladder(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str]) -> dict[str, Any]:
    """Per edge: steps up --rates until one is not clean; the highest clean rate and the ratio."""
    result: dict[str, Any] = {}
    for name in EDGES:
        best, steps = 0, []
        with edge_with_callee(name, work / "ladder", cloud, users) as (edge, callee):
            for rate in args.rates:
                say(f"ladder {name}: {rate} calls/s for {args.step_seconds} s")
                edge_before, box_before = edge.cpu_seconds(), box_cpu_seconds()
                outcome = step(
                    edge.lan, callee.user, rate, args.step_seconds, work / "ladder" / name / f"r{rate}"
                )
                completed = max(1, outcome["successful"])
                outcome["edge_cpu_ms_per_call"] = round(
                    (edge.cpu_seconds() - edge_before) / completed * 1000, 3
                )
                outcome["box_cpu_ms_per_call"] = round((box_cpu_seconds() - box_before) / completed * 1000, 3)
                steps.append(outcome)
                say(f"  {outcome}")
                if not outcome["clean"]:
                    break
                best = rate
        result[name] = {"clean_rate": best, "steps": steps}
    kamailio = result["kamailio"]["clean_rate"]
    result["ratio"] = round(result["vaxelbox"]["clean_rate"] / kamailio, 2) if kamailio else None
    return result


def overload(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str],
             clean: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """Per edge: 2x its clean rate for --overload-seconds, then half its clean rate for --recovery-seconds."""
    result: dict[str, Any] = {}
    for name in EDGES:
        rate, seconds = clean[name] * 2, args.overload_seconds
        low = max(1, clean[name] // 2)
        say(
            f"overload {name}: {rate} calls/s for {seconds} s, then {low} calls/s for {args.recovery_seconds} s"
        )
        base = work / "overload" / name
        with edge_with_callee(name, base, cloud, users) as (edge, callee):
            high = caller(edge.lan, callee.user, rate, seconds, base / "high", limit=rate * 60)
            time.sleep(seconds)
            recovery = caller(edge.lan, callee.user, low, args.recovery_seconds, base / "low")
            finish(high, seconds + 90)
            finish(recovery, args.recovery_seconds + 90)
        result[name] = overload_figures(base, clean[name], rate, seconds, low)
        say(f"  {result[name]}")
    return result


def overload_figures(base: Path, clean: int, rate: int, seconds: float, low: int) -> dict[str, Any]:
    """Goodput within the overload step and the recovery time from sipp's periodic rows (see module doc)."""
    rows = stats_rows(base / "high")
    within = sum(int(r["SuccessfulCall(P)"]) for r in rows if seconds_in(r) <= seconds + 0.5)
    final = rows[-1]
    goodput = within / seconds
    low_rows = stats_rows(base / "low")[1:]  # the first row is sipp's start
    offering = [n for n, r in enumerate(low_rows) if int(r["OutgoingCall(P)"])]
    recovered = None  # not clean within the run: the clean rows, if any, come after the last new call
    for n in range(
        offering[-1] + 1 if offering else 0
    ):  # rows from n on all clean: clean since row n - 1 ended
        if all(int(r["FailedCall(P)"]) == int(r["Retransmissions(P)"]) == 0 for r in low_rows[n:]):
            recovered = round(seconds_in(low_rows[n - 1]) if n else 0.0, 1)
            break
    low_final = low_rows[-1] if low_rows else {}
    return {"offered_rate": rate, "clean_rate": clean, "goodput_cps": round(goodput, 1),
            "goodput_share_of_clean": round(goodput / clean, 3) if clean else None,
            "successful": int(final["SuccessfulCall(C)"]), "failed": int(final["FailedCall(C)"]),
            "retransmissions": int(final["Retransmissions(C)"]), "503": count_503(base / "high"),
            "recovery_rate": low, "recovery_s": recovered,
            "recovery_run": {k: int(low_final.get(f"{k}(C)", 0)) for k in ("SuccessfulCall", "FailedCall",
                                                                           "Retransmissions")}}  # fmt: skip


class RssSampler:
    """Samples `rss()` (MiB) every `period` s in a thread while in a `with` block; `samples` are (s, MiB)."""

    def __init__(self, rss: Callable[[], float], period: float) -> None:
        self.rss, self.period, self.samples = rss, period, []  # type: list[tuple[float, float]]
        self.stop = threading.Event()

    def __enter__(self) -> "RssSampler":
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((round(time.monotonic() - self.start, 1), round(self.rss(), 1)))
            self.stop.wait(self.period)

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def memory(
    args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str], clean: int
) -> dict[str, Any]:
    """A fresh agent: RSS idle, with 2,000 phones registered, and at peak during --peak-seconds at `clean`."""
    agent = Agent(work / "memory" / "edge", cloud)
    try:
        result: dict[str, Any] = {"rss_mb_idle": round(agent.rss_mb(), 1)}
        say(f"memory: idle {result['rss_mb_idle']} MB; registering {PHONES} phones at 200/s")
        result["registrations"] = register_many(agent.lan, work / "memory" / "register")
        say(f"  {result['registrations']}; waiting {args.settle_seconds} s for their transactions to end")
        time.sleep(args.settle_seconds)
        result["rss_mb_2000_phones"] = round(agent.rss_mb(), 1)
        say(
            f"  RSS with {PHONES} phones: {result['rss_mb_2000_phones']} MB; {clean} calls/s for {args.peak_seconds} s"
        )
        with (
            Callee(agent.lan, work / "memory" / "callee", users) as callee,
            RssSampler(agent.rss_mb, 0.5) as sampler,
        ):
            result["peak_run"] = step(
                agent.lan, callee.user, clean, args.peak_seconds, work / "memory" / "peak"
            )
        result["peak_rate"] = clean
        result["rss_mb_peak"] = max(mb for _, mb in sampler.samples)
        result["rss_mb_after_peak_run"] = round(agent.rss_mb(), 1)
        say(f"  peak RSS {result['rss_mb_peak']} MB; {result['peak_run']}")
        return result
    finally:
        agent.stop()


def register_many(target: Address, workdir: Path, rate: int = 200) -> dict[str, Any]:
    """Register the PHONES users 2000... through `target` at `rate`/s (digest each)."""
    inf = workdir / "phones.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    inf.write_text("SEQUENTIAL\n" + "".join(f"{u};[authentication username={u} password={USERS[u]}]\n"
                                            for u in (str(2000 + n) for n in range(PHONES))))  # fmt: skip
    started = time.monotonic()
    process = sipp(target, "register_many.xml", workdir, "-inf", str(inf), "-m", str(PHONES), "-r", str(rate),
                   "-l", str(rate * 2), "-timeout", "120s")  # fmt: skip
    process.wait()
    final = stats_rows(workdir)[-1]
    return {"phones": PHONES, "rate": rate, "seconds": round(time.monotonic() - started, 1),
            "successful": int(final["SuccessfulCall(C)"]), "failed": int(final["FailedCall(C)"]),
            "retransmissions": int(final["Retransmissions(C)"])}  # fmt: skip


def soak(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str]) -> dict[str, Any]:
    """A fresh agent at 100 calls/s for --soak-minutes; RSS every 10 s; growth from minute 2 to the end.

    A soak shorter than 3 minutes (a trial) reports the growth over its second half instead."""
    seconds, rate = args.soak_minutes * 60, 100
    say(f"soak: {rate} calls/s for {args.soak_minutes} min, RSS every 10 s")
    agent = Agent(work / "soak" / "edge", cloud)
    try:
        with (
            Callee(agent.lan, work / "soak" / "callee", users) as callee,
            RssSampler(agent.rss_mb, 10) as sampler,
        ):
            run = caller(agent.lan, callee.user, rate, seconds, work / "soak" / "calls")
            shown, deadline = 0, time.monotonic() + seconds + 90
            while run.poll() is None and time.monotonic() < deadline:
                time.sleep(1)
                if len(sampler.samples) > shown:
                    shown = len(sampler.samples)
                    say(f"  soak: {sampler.samples[-1][0]:.0f} s, RSS {sampler.samples[-1][1]} MB")
            finish(run, 1)
        final = stats_rows(work / "soak" / "calls")[-1]
    finally:
        agent.stop()
    start = 120 if seconds >= 180 else seconds / 2  # a short trial soak: its second half
    after = [(t, mb) for t, mb in sampler.samples if t >= start] or sampler.samples[-2:]
    slope = linear_slope(after) * 60 if len(after) > 1 else 0.0
    return {"rate": rate, "minutes": args.soak_minutes, "samples": sampler.samples,
            "successful": int(final["SuccessfulCall(C)"]), "failed": int(final["FailedCall(C)"]),
            "retransmissions": int(final["Retransmissions(C)"]),
            "rss_mb_from": after[0][1], "rss_mb_to": after[-1][1], "growth_mb": round(after[-1][1] - after[0][1], 1),
            "from_s": after[0][0], "to_s": after[-1][0], "slope_mb_per_min": round(slope, 2)}  # fmt: skip


def linear_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points, in y per x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / spread if spread else 0.0


def split(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str]) -> dict[str, Any]:
    """--split-agents agents side by side, each 1/N of each rate of --rates, until a step is not clean."""
    count, base = args.split_agents, work / "split"
    best, steps = 0, []
    with ExitStack() as stack:
        pairs = [stack.enter_context(edge_with_callee("vaxelbox", base / f"agent{n}", cloud, users))
                 for n in range(count)]  # fmt: skip
        for rate in args.rates:
            say(f"split: {rate} calls/s over {count} agents for {args.step_seconds} s")
            with ThreadPoolExecutor(count) as pool:
                running = [pool.submit(step, edge.lan, callee.user, rate // count, args.step_seconds,
                                       base / f"agent{n}" / f"r{rate}") for n, (edge, callee) in enumerate(pairs)]  # fmt: skip
                outcomes = [future.result() for future in running]
            total = {
                key: sum(o[key] for o in outcomes)
                for key in ("successful", "failed", "retransmissions", "503")
            }
            steps.append({"rate": rate, **total, "clean": all(o["clean"] for o in outcomes)})
            say(f"  {steps[-1]}")
            if not steps[-1]["clean"]:
                break
            best = rate
    return {"agents": count, "clean_rate": best, "steps": steps}


def latency(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str]) -> dict[str, Any]:
    """INVITE -> 200 (ns clock) at 100 calls/s straight to the cloud and through each edge; added = edge - direct."""
    result: dict[str, Any] = {}
    for name in ("direct", *EDGES):
        edge = EDGES[name](work / "latency" / name / "edge", cloud) if name != "direct" else None
        target = edge.lan if edge else (cloud.address, cloud.port)
        user, port = next(users), free_port("127.0.0.1")
        uas = None
        try:
            register(target, user, port, work / "latency" / name / "register")
            uas = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sip_latency.py")), "uas",
                                    "--port", str(port), "--user", user])  # fmt: skip
            time.sleep(0.5)
            say(f"latency {name}: 100 calls/s for {args.latency_seconds} s")
            result[name] = measure_latency(target, user, 100, args.latency_seconds, CALLER_PASSWORD)
            say(f"  {result[name]}")
        finally:
            if uas:
                uas.terminate()
                uas.wait()
            if edge:
                edge.stop()
    direct = result["direct"]["invite_200_ms"]
    for name in EDGES:
        own = result[name]["invite_200_ms"]
        if own and direct:
            result[name]["added_ms"] = {k: round(own[k] - direct[k], 3) for k in ("median", "p90", "p99")}
    return result


def profile(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str]) -> dict[str, Any]:
    """py-spy on a fresh agent during --profile-seconds at --profile-rate: top functions, self and inclusive."""
    raw = work / "profile" / "agent.raw"
    agent = Agent(work / "profile" / "edge", cloud)
    try:
        with Callee(agent.lan, work / "profile" / "callee", users) as callee:
            say(f"profile: py-spy on the agent at {args.profile_rate} calls/s for {args.profile_seconds} s")
            run = caller(
                agent.lan,
                callee.user,
                args.profile_rate,
                args.profile_seconds + 2,
                work / "profile" / "calls",
            )
            time.sleep(1)
            spy = subprocess.run([str(PY_SPY), "record", "-p", str(agent.pid),
                                  "-f", "raw", "--function", "-r", "200", "-d", str(int(args.profile_seconds)),
                                  "-o", str(raw)], capture_output=True, text=True)  # fmt: skip
            finish(run, args.profile_seconds + 90)
        final = stats_rows(work / "profile" / "calls")[-1]
    finally:
        agent.stop()
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed: {spy.stderr[-2000:]}")
    return {"rate": args.profile_rate, "seconds": args.profile_seconds,
            "run": {k: int(final[f"{k}(C)"]) for k in ("SuccessfulCall", "FailedCall", "Retransmissions")},
            **top_functions(raw)}  # fmt: skip


def top_functions(raw: Path, count: int = 20) -> dict[str, Any]:
    """From py-spy's raw (collapsed) stacks: samples, and the top `count` functions by self and inclusive samples.

    Each line is "frame;frame;... N", outermost first; a frame is "function (file:line)". Inclusive
    counts start below the dispatch of each event-loop callback (Handle._run) or thread-pool job
    (_worker): the frames above those are in nearly every sample and say nothing."""
    own, inclusive, total = Counter[str](), Counter[str](), 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples, frames = int(number), [short(f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        starts = [n for n, f in enumerate(frames) if f.startswith(("Handle._run ", "_worker "))]
        for frame in set(frames[starts[-1] + 1 if starts else 0 :]):
            inclusive[frame] += samples

    def rows(counter: Counter[str]) -> list[str]:
        return [f"{n:6d} {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(count)]

    return {"samples": total, "top_self": rows(own), "top_inclusive": rows(inclusive)}


def short(frame: str) -> str:
    """A frame with its file shortened to the part after site-packages/ or firmware/."""
    for marker in ("site-packages/", "firmware/", "lib/python3"):
        if marker in frame:
            name, _, rest = frame.partition(" (")
            return f"{name} ({rest.split(marker)[-1]}"
    return frame


# --- the run and its results ---------------------------------------------------------------


def versions() -> dict[str, str]:
    def first_line(*command: str) -> str:
        if not Path(command[0]).exists():
            return f"{Path(command[0]).name} not installed"  # py-spy: make bench installs it
        output = subprocess.run(command, capture_output=True, text=True)
        return next(
            (line.strip() for line in (output.stdout + output.stderr).splitlines() if line.strip()), "?"
        )

    return {"python": f"{platform.python_version()} ({python_build()})", "kamailio": first_line(tool("kamailio"), "-v"),
            "sipp": first_line(tool("sipp"), "-v"),
            "py-spy": first_line(str(PY_SPY), "--version"),
            "vaxelbox": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True).stdout.strip()}  # fmt: skip


def python_build() -> str:
    """Which interpreter runs the agent (the bench's own): Debian's is the boards', built with PGO and
    LTO; pyenv's default build is not, and costs the relay ~8 % more CPU per call (issue 12)."""
    return sys._base_executable  # type: ignore[attr-defined]  # the venv's base interpreter


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())  # fmt: skip
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_at_start": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts of {','.join(PARTS + OPTIONAL_PARTS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument(
        "--workdir", type=Path, help="keep the logs and sipp files here (default: a temporary one)"
    )
    parser.add_argument(
        "--rates", default="100,200,300,400,450,500,550,600,700,800,1000,1200", help="the ladder, calls/s"
    )
    parser.add_argument("--step-seconds", type=float, default=10.0, help="each ladder step")
    parser.add_argument("--clean-rate", type=int, help="calls/s taken as clean when the ladder does not run "
                        "(default 200; with the ladder, each edge's own)")  # fmt: skip
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument(
        "--recovery-seconds", type=float, default=15.0, help="at half the clean rate, after overload"
    )
    parser.add_argument("--peak-seconds", type=float, default=30.0, help="memory: at the clean rate")
    parser.add_argument("--settle-seconds", type=float, default=35.0,
                        help="memory: wait after registering, until the transactions ended (64*T1 = 32 s)")  # fmt: skip
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="at 100 calls/s per target")
    parser.add_argument("--profile-rate", type=int, default=300)
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--split-agents", type=int, default=2, help="split: agents side by side")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not args.parts:
        parser.error(f"--only names no part; parts: {', '.join(PARTS + OPTIONAL_PARTS)}")
    unknown = set(args.parts) - set(PARTS + OPTIONAL_PARTS)
    if unknown:
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS + OPTIONAL_PARTS)}"
        )
    if args.split_agents < 1:
        parser.error("--split-agents must be 1 or more")
    try:
        args.rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates {args.rates!r}: calls/s as whole numbers separated by commas")
    if not all(rate > 0 for rate in args.rates):
        parser.error(f"--rates: each rate must be at least 1, not {min(args.rates)}")
    if "profile" in args.parts and not PY_SPY.exists():  # found now, not after the other parts' minutes
        parser.error(f"profile: {PY_SPY} is missing (make bench installs it: pip install -e '.[bench]')")
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
        "versions": versions(), "command": shlex.join(["python", *sys.argv]), "parts": args.parts,
        "parameters": {k: v for k, v in vars(args).items() if k not in ("out", "only", "parts", "workdir")},
    }  # fmt: skip
    say(f"sip relay bench: {', '.join(args.parts)}; machine {results['machine']}")
    users = iter(CALLEES)
    with tempfile.TemporaryDirectory(prefix="vaxelbox-bench-") as tmp:
        work = args.workdir or Path(tmp)
        # 64 MiB of shared memory (the default) runs out at ~500 calls/s ("out of mem" in tm): the
        # cloud, not the edge, would set the ceiling.
        cloud = Kamailio("127.0.0.3", free_port("127.0.0.3"), work / "cloud", users=USERS, challenge_invites=True,
                         shm_mb=SHM_MB)  # fmt: skip
        cloud.start()
        try:
            run_parts(args, work, cloud, users, results)
        finally:
            cloud.stop()
    write(results, args.out)


def run_parts(args: argparse.Namespace, work: Path, cloud: Kamailio, users: Iterator[str],
              results: dict[str, Any]) -> None:  # fmt: skip
    clean = dict.fromkeys(EDGES, args.clean_rate or 200)
    if "ladder" in args.parts:
        results["ladder"] = ladder(args, work, cloud, users)
        clean = {name: results["ladder"][name]["clean_rate"] or args.rates[0] for name in EDGES}
    elif not args.clean_rate and {"overload", "memory"} & set(args.parts):
        say("no ladder and no --clean-rate: taking 200 calls/s as each edge's clean rate")
    results["clean_rates"] = clean
    if "overload" in args.parts:
        results["overload"] = overload(args, work, cloud, users, clean)
    if "memory" in args.parts:
        results["memory"] = memory(args, work, cloud, users, clean["vaxelbox"])
    if "soak" in args.parts:
        results["soak"] = soak(args, work, cloud, users)
    if "latency" in args.parts:
        results["latency"] = latency(args, work, cloud, users)
    if "split" in args.parts:
        results["split"] = split(args, work, cloud, users)
    if "profile" in args.parts:
        results["profile"] = profile(args, work, cloud, users)


if __name__ == "__main__":
    main()
