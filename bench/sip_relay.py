"""SIP relay benchmark: the same sipp load against Kamailio directly and through the Vaxelbox agent.

Run with `make bench`. Writes bench/results/sip-relay-<date>-<host>.md (and .json):
- calls per second sustained with zero failed calls and zero retransmissions,
  direct and relayed (each relayed call crosses the agent twice: caller ->
  agent -> cloud -> agent -> callee, as in an office where both phones sit
  behind the appliance);
- REGISTER relays per second (each with a digest challenge: two transactions);
- added INVITE -> 200 latency (median, p99) at 100 calls per second;
- the agent's RSS with 2,000 registered phones;
- a cProfile of the agent at a fixed load: where the time goes.
Everything runs on loopback; nothing leaves this machine.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "tests"))
from peers import Kamailio, free_port, tool  # noqa: E402

SCENARIOS = Path(__file__).with_name("sipp")
Address = tuple[str, int]
PHONES = 2000


def sipp(
    target: Address,
    scenario: str,
    workdir: Path,
    *args: str,
    port: int | None = None,
    wait: bool = True,
    timeout: float = 300,
) -> subprocess.Popen[bytes]:
    command = [tool("sipp"), f"{target[0]}:{target[1]}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
               "-t", "u1", "-nostdin", "-trace_stat", "-stf", "stats.csv", "-fd", "1", *args]  # fmt: skip
    if port:
        command += ["-p", str(port)]
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if wait:
        process.wait(timeout)
    return process


def final_stats(workdir: Path) -> dict[str, str]:
    with (workdir / "stats.csv").open() as file:
        rows = list(csv.DictReader(file, delimiter=";"))
    return rows[-1]


def register_one(target: Address, user: str, password: str, port: int, workdir: Path) -> None:
    inf = workdir / "one.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    inf.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    process = sipp(target, "register_many.xml", workdir, "-inf", str(inf), "-m", "1", port=port)
    assert process.returncode == 0, f"registering {user} failed"


def call_run(
    target: Address, callee_port: int, rate: int, duration: float, workdir: Path, rtt: bool = False
) -> dict[str, Any]:
    """One load step: a callee on callee_port, a caller at `rate` cps for `duration` s."""
    callee = sipp(target, "uas.xml", workdir / "uas", port=callee_port, wait=False)
    time.sleep(0.3)
    calls = int(rate * duration)
    extra = ["-trace_rtt", "-rtt_freq", "1"] if rtt else []
    caller = sipp(target, "uac.xml", workdir / "uac", "-s", "102", "-r", str(rate), "-m", str(calls),
                  "-l", str(rate * 4), "-timeout", f"{int(duration + 30)}s", *extra)  # fmt: skip
    callee.send_signal(signal.SIGUSR1)  # sipp's soft stop
    try:
        callee.wait(10)
    except subprocess.TimeoutExpired:
        callee.kill()
    stats = final_stats(workdir / "uac")
    failed = int(stats["FailedCall(C)"])
    retrans = int(stats["Retransmissions(C)"])
    ok = int(stats["SuccessfulCall(C)"])
    result = {"rate": rate, "calls": calls, "successful": ok, "failed": failed, "retransmissions": retrans,
              "clean": caller.returncode == 0 and failed == 0 and retrans == 0 and ok == calls}  # fmt: skip
    if rtt:
        result["rtt_ms"] = rtts(workdir / "uac")
    return result


def rtts(workdir: Path) -> list[float]:
    values = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open() as file:
            for row in csv.DictReader(file, delimiter=";"):
                values.append(float(row["response_time_ms"]))
    return values


def ramp(
    target: Address, callee_port: int, rates: list[int], duration: float, workdir: Path
) -> tuple[int, list[dict[str, Any]]]:
    steps, best = [], 0
    for rate in rates:
        step = call_run(target, callee_port, rate, duration, workdir / f"rate-{rate}")
        steps.append(step)
        print(f"  {rate:5d} cps: {step}", flush=True)
        if not step["clean"]:
            break
        best = rate
    return best, steps


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class Agent:
    def __init__(self, workdir: Path, cloud: Kamailio, profile: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        wan = ("127.0.0.2", free_port("127.0.0.2"))
        self.profile_path = workdir / "agent.prof"
        prefix = [sys.executable, "-m", "vaxelbox"]
        if profile:  # cProfile writes its file when the agent exits cleanly on SIGTERM
            prefix = [sys.executable, "-m", "cProfile", "-o", str(self.profile_path), "-m", "vaxelbox"]
        self.log = (workdir / "agent.log").open("w")
        self.process = subprocess.Popen(
            [*prefix, "run", "--data", str(workdir / "data"), "--log-level", "WARNING", "--log-format", "json",
             "--sip-rate-limit", "0",
             # Free ports for the other services too: a `make run` on this machine holds the defaults.
             "--http-port", str(free_port("127.0.0.1")), "--https-port", str(free_port("127.0.0.1")),
             "--coap-port", str(free_port("127.0.0.1")),
             "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"{wan[0]}:{wan[1]}",
             "--cloud", f"sip:{cloud.address}:{cloud.port};transport=tcp"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(2.0)
        assert self.process.poll() is None, (workdir / "agent.log").read_text()

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.log.close()


def register_many(target: Address, workdir: Path, count: int, rate: int) -> dict[str, Any]:
    inf = workdir / "phones.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"{2000 + n};[authentication username={2000 + n} password=pw-{2000 + n}]" for n in range(count)]
    inf.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
    started = time.monotonic()
    process = sipp(target, "register_many.xml", workdir, "-inf", str(inf), "-m", str(count), "-r", str(rate),
                   "-l", str(rate * 2), "-timeout", "120s")  # fmt: skip
    elapsed = time.monotonic() - started
    stats = final_stats(workdir)
    return {"phones": count, "rate_asked": rate, "seconds": round(elapsed, 2),
            "successful": int(stats["SuccessfulCall(C)"]), "failed": int(stats["FailedCall(C)"]),
            "retransmissions": int(stats["Retransmissions(C)"]), "exit": process.returncode}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rates", default="50,100,200,300,400,600,800,1000,1500,2000")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "kamailio": subprocess.run(
                        [tool("kamailio"), "-v"], capture_output=True, text=True).stdout.splitlines()[0]},
        "duration_per_step_s": args.duration,
    }  # fmt: skip
    users = {"101": "pw-101-secret", "102": "pw-102-secret"} | {
        str(2000 + n): f"pw-{2000 + n}" for n in range(PHONES)
    }
    with tempfile.TemporaryDirectory(prefix="vaxelbox-bench-") as tmp:
        work = Path(tmp)
        cloud = Kamailio("127.0.0.3", free_port("127.0.0.3"), work / "kamailio", users=users).start()
        try:
            target = (cloud.address, cloud.port)
            callee_port = free_port("127.0.0.1")
            register_one(target, "102", users["102"], callee_port, work / "direct-reg")
            print("direct to Kamailio:", flush=True)
            results["direct_max_cps"], results["direct_steps"] = ramp(
                target, callee_port, rates, args.duration, work / "direct"
            )
            direct_latency = call_run(
                target, callee_port, 100, args.duration, work / "direct-latency", rtt=True
            )

            agent = Agent(work, cloud)
            try:
                edge_callee = free_port("127.0.0.1")
                register_one(agent.lan, "102", users["102"], edge_callee, work / "edge-reg")
                print("through the agent:", flush=True)
                results["relayed_max_cps"], results["relayed_steps"] = ramp(
                    agent.lan, edge_callee, rates, args.duration, work / "edge"
                )
                relayed_latency = call_run(
                    agent.lan, edge_callee, 100, args.duration, work / "edge-latency", rtt=True
                )
                time.sleep(35)  # the last calls' transactions end after 64*T1 = 32 s
                results["rss_mb_after_calls"] = round(agent.rss_mb(), 1)
            finally:
                agent.stop()

            fresh = Agent(work / "fresh", cloud)
            try:
                results["rss_mb_idle"] = round(fresh.rss_mb(), 1)
                results["registrations"] = register_many(fresh.lan, work / "register", PHONES, 200)
                time.sleep(1)
                results["rss_mb_after_burst"] = round(fresh.rss_mb(), 1)
                time.sleep(34)  # the burst's transactions end after 64*T1 = 32 s
                results["rss_mb_with_2000_phones"] = round(fresh.rss_mb(), 1)
            finally:
                fresh.stop()

            profiled = Agent(work, cloud, profile=True)
            try:
                profile_callee = free_port("127.0.0.1")
                register_one(profiled.lan, "102", users["102"], profile_callee, work / "prof-reg")
                results["profile_run"] = call_run(
                    profiled.lan, profile_callee, 100, args.duration, work / "prof"
                )
            finally:
                profiled.stop()
            results["profile_top"] = top_functions(profiled.profile_path)
        finally:
            cloud.stop()
    d_rtt, r_rtt = direct_latency.pop("rtt_ms"), relayed_latency.pop("rtt_ms")
    results["latency_at_100cps_ms"] = {
        "direct": {"median": statistics.median(d_rtt), "p99": percentile(d_rtt, 0.99), "samples": len(d_rtt)},
        "relayed": {
            "median": statistics.median(r_rtt),
            "p99": percentile(r_rtt, 0.99),
            "samples": len(r_rtt),
        },
    }
    lat = results["latency_at_100cps_ms"]
    lat["added"] = {
        "median": lat["relayed"]["median"] - lat["direct"]["median"],
        "p99": lat["relayed"]["p99"] - lat["direct"]["p99"],
    }
    reg = results["registrations"]
    reg["relays_per_second"] = round(reg["successful"] / reg["seconds"], 1) if reg["seconds"] else 0
    write(results, args.out)


def top_functions(path: Path, count: int = 15) -> list[str]:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime")
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in sorted(
        stats.stats.items(), key=lambda item: item[1][2], reverse=True
    )[:count]:
        short = filename.split("site-packages/")[-1].split("firmware/")[-1]
        rows.append(f"{tottime:7.3f}s self {cumtime:7.3f}s cum {calls:8d} calls  {short}:{line} {name}")
    return rows


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    base = out / f"sip-relay-{stamp}-{platform.node()}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lat = results["latency_at_100cps_ms"]
    direct, relayed = results["direct_max_cps"], results["relayed_max_cps"]
    ratio = f"{relayed / direct:.2f}" if direct else "n/a"
    reg = results["registrations"]
    lines = [
        f"# SIP relay benchmark, {results['date']}",
        "",
        f"Machine: {results['machine']}",
        f"Each load step: {results['duration_per_step_s']} s. Loopback only. Command: `make bench`.",
        "",
        "| measure | Kamailio alone | through the Vaxelbox agent | ratio / added |",
        "|---|---|---|---|",
        f"| calls/s sustained, 0 failed, 0 retransmitted | {direct} | {relayed} | {ratio} |",
        f"| INVITE->200 median at 100 cps (ms) | {lat['direct']['median']:.3f} | {lat['relayed']['median']:.3f} | +{lat['added']['median']:.3f} |",
        f"| INVITE->200 p99 at 100 cps (ms) | {lat['direct']['p99']:.3f} | {lat['relayed']['p99']:.3f} | +{lat['added']['p99']:.3f} |",
        f"| REGISTER relays/s (digest: 401 + 200 each) | | {reg['relays_per_second']} | {reg['successful']}/{reg['phones']} ok, {reg['retransmissions']} retransmissions |",
        f"| agent RSS after the call load steps, at rest (MB) | | {results['rss_mb_after_calls']} | |",
        f"| fresh agent RSS, idle (MB) | | {results['rss_mb_idle']} | |",
        f"| agent RSS right after registering {reg['phones']} phones at 200/s (MB) | | {results['rss_mb_after_burst']} | transactions still held |",
        f"| agent RSS with {reg['phones']} registered phones, 35 s later (MB) | | {results['rss_mb_with_2000_phones']} | |",
        "",
        "Relayed calls cross the agent twice (caller -> agent -> Kamailio -> agent -> callee).",
        "sipp reports response times in whole milliseconds, so a median of 0 means under 1 ms.",
        "",
        "## Load steps",
        "",
        "```",
        *(f"direct  {s}" for s in results["direct_steps"]),
        *(f"relayed {s}" for s in results["relayed_steps"]),
        "```",
        "",
        f"## Where the agent's time goes (cProfile, 100 cps for {results['duration_per_step_s']} s)",
        "",
        "```",
        *results["profile_top"],
        "```",
        "",
    ]  # fmt: skip
    base.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results: {base}.md")


if __name__ == "__main__":
    main()
