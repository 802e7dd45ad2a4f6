"""Local calls benchmark: calls per second the appliance completes in local mode with 0 failures,
against Kamailio doing the same work in the same run.

Run with `make bench`, or shorter while developing (`python bench/local_calls.py --duration 3
--rates 10,25`). Writes bench/results/local-calls-<date>-<host>.md (and .json).

The load is the same sipp caller and callee for both: the callee registers (401, 200) and
answers every call at once; the caller places calls from user 101 to 102 at a fixed rate for
`--duration` seconds, answers each INVITE's 407 with its digest credentials, acknowledges the
200, hangs up 100 ms later. The appliance: the agent with a two-user site whose cloud never
answers, so it runs locally (registrar, call authentication, routing by the site). Kamailio: the
tests' cloud configuration plus the same call authentication (407 unless the digest proves the
From user), then location lookup and a record-routed relay. Each rate steps up until a step has
a failed call; the highest clean rate of each, and their ratio, go in the results.
Everything runs on loopback; nothing leaves this machine.
"""

import argparse
import datetime
import json
import platform
import re
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local_site import (
    CLOUD_HOST,
    LocalAgent,
    code,
    command_line,
    final_stats,
    free_port,
    kamailio,
    kamailio_config,
    machine,
    percentile,
    register_one,
    rtts,
    sipp,
    site_text,
)

USERS = {"101": "pw-101-secret", "102": "pw-102-secret"}  # caller, callee
CALLER, CALLEE = "101", "102"
# Kamailio authenticates calls as the appliance does in local mode (after its 'Not relaying' check).
AUTH_ANCHOR = '        sl_send_reply("403", "Not relaying");\n        exit;\n    }\n'
CALL_AUTH = """    # Benchmark: calls authenticated as the appliance does in local mode (407, From user's digest).
    if (is_method("INVITE")) {
        if (!pv_proxy_authenticate("$fd", "$sht(passwd=>$fU)", "0")) {
            proxy_challenge("$fd", "0");
            exit;
        }
        if ($au != $fU) {
            sl_send_reply("403", "Not your user");
            exit;
        }
        consume_credentials();
    }
"""


def step(
    target: tuple[str, int], callee_port: int, rate: int, duration: float, workdir: Path
) -> dict[str, Any]:
    """One load step: the callee (re)registered from `callee_port` and answering there, the caller
    at `rate` calls/s for `duration` s. Registering again each step, with the same contact, keeps
    the appliance's short local grant (60-120 s) and leaves one binding: calls never fork."""
    register_one(target, CALLEE, USERS[CALLEE], callee_port, workdir / "register")
    callee = sipp(target, "uas.xml", workdir / "uas", port=callee_port, wait=False)
    time.sleep(0.3)
    calls = int(rate * duration)
    caller = sipp(target, "uac_auth.xml", workdir / "uac", "-s", CALLEE, "-au", CALLER, "-ap", USERS[CALLER],
                  "-r", str(rate), "-m", str(calls), "-l", str(rate * 4), "-timeout", f"{int(duration + 30)}s",
                  "-trace_rtt", "-rtt_freq", "1", "-trace_err")  # fmt: skip
    callee.send_signal(signal.SIGUSR1)  # sipp's soft stop
    try:
        callee.wait(10)
    except subprocess.TimeoutExpired:
        callee.kill()
        callee.wait()
    stats = final_stats(workdir / "uac")
    ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
    setup = rtts(workdir / "uac")
    return {
        "rate": rate,
        "calls": calls,
        "successful": ok,
        "failed": failed,
        "retransmissions": int(stats["Retransmissions(C)"]),
        "setup_ms_median": statistics.median(setup) if setup else None,
        "setup_ms_p99": percentile(setup, 0.99) if setup else None,
        "clean": caller.returncode == 0 and failed == 0 and ok == calls,
        "unexpected": unexpected(workdir / "uac"),
    }


def unexpected(workdir: Path) -> dict[str, int]:
    """How often each status line the caller did not expect came (sipp -trace_err), e.g. under
    overload {"500 I'm terribly sorry, ...": 12}."""
    errors = "".join(path.read_text(errors="replace") for path in workdir.glob("*_errors.log"))
    return dict(Counter(re.findall(r"received 'SIP/2\.0 ([^\r\n]+)", errors)).most_common())


def ramp(
    target: tuple[str, int], rates: list[int], duration: float, workdir: Path, name: str
) -> dict[str, Any]:
    """Rates in order until a step has a failed call; the highest with 0 failed calls, and the
    highest with 0 failed and 0 retransmitted (the SIP relay benchmark's stricter measure)."""
    steps, best, strict, quiet = [], 0, 0, True
    callee_port = free_port("127.0.0.1")
    for rate in rates:
        result = step(target, callee_port, rate, duration, workdir / f"rate-{rate}")
        steps.append(result)
        print(f"  {name} {rate:5d} calls/s: {result}", flush=True)
        if not result["clean"]:
            break
        best = rate
        quiet = quiet and result["retransmissions"] == 0
        if quiet:
            strict = rate
    return {"max_clean_cps": best, "max_clean_no_retrans_cps": strict,
            "capped": bool(steps) and steps[-1]["clean"], "steps": steps}  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, Any] = {}
    config = kamailio_config(work, AUTH_ANCHOR, CALL_AUTH)
    with kamailio(work, USERS, (CLOUD_HOST, free_port(CLOUD_HOST)), config) as cloud:
        print("Kamailio, registrar and authenticating proxy:", flush=True)
        results["kamailio"] = ramp(
            (cloud.address, cloud.port), rates, args.duration, work / "kamailio-load", "kamailio"
        )
    dead_cloud = (CLOUD_HOST, free_port(CLOUD_HOST))  # nothing ever answers there: local mode
    agent = LocalAgent(
        work / "agent", site_text(USERS, dead_cloud, 30, None), dead_cloud, log_level="WARNING"
    )
    try:
        agent.local()
        print("the appliance in local mode:", flush=True)
        results["appliance"] = ramp(agent.lan, rates, args.duration, work / "agent-load", "appliance")
        results["agent_errors"] = len(agent.errors())
    finally:
        agent.stop()
    return results


def _answers(counted: dict[str, int]) -> str:
    return ", ".join(f"{count}x {status}" for status, count in counted.items()) or "-"


def _ratio(ours: int, theirs: int) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    base = out / f"local-calls-{stamp}-{platform.node()}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    ours, theirs = results["appliance"], results["kamailio"]
    ratio = _ratio(ours["max_clean_cps"], theirs["max_clean_cps"])
    if theirs["capped"]:
        ratio += " (at most: Kamailio passed every rate tried)"
    strict_ratio = _ratio(ours["max_clean_no_retrans_cps"], theirs["max_clean_no_retrans_cps"])

    def row(name: str, steps: list[dict[str, Any]]) -> list[str]:
        return [
            f"| {name} | {s['rate']} | {s['calls']} | {s['successful']} | {s['failed']} | {s['retransmissions']} "
            f"| {s['setup_ms_median']} | {s['setup_ms_p99']} | {_answers(s['unexpected'])} |"
            for s in steps
        ]

    lines = [
        f"# Local calls benchmark, {results['date']}",
        "",
        f"Machine: {results['machine']}",
        f"Code: {results['code']}.",
        f"Command: `{results['command']}` (`make bench` runs it so). Loopback only. Each step: "
        f"{results['duration_s']} s of calls from 101 to 102 at a fixed rate, each INVITE challenged (407) "
        "and answered, 200 at once, BYE after 100 ms.",
        "",
        "| calls/s | highest rate with 0 failed calls | ... and 0 retransmissions |",
        "|---|---|---|",
        f"| the appliance in local mode | **{ours['max_clean_cps']}** | {ours['max_clean_no_retrans_cps']} |",
        f"| Kamailio (auth + location lookup + relay) | {theirs['max_clean_cps']} | {theirs['max_clean_no_retrans_cps']} |",
        f"| ratio appliance / Kamailio | **{ratio}** | {strict_ratio} |",
        "",
        "Call setup is sipp's first INVITE -> 200 (407 round included), in whole milliseconds. A step "
        "with retransmissions is past saturation (setup times climb from milliseconds to seconds), so "
        "its 0-failure rate varies from run to run; the 0-retransmission rate is the steadier measure.",
        "",
        "| who | calls/s | calls | successful | failed | retransmissions | setup median (ms) | setup p99 (ms) "
        "| unexpected answers |",
        "|---|---|---|---|---|---|---|---|---|",
        *row("appliance", ours["steps"]),
        *row("Kamailio", theirs["steps"]),
        "",
        f"Agent errors logged during the run: {results['agent_errors']}.",
        "",
    ]  # fmt: skip
    base.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results: {base}.md")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of calls per step")
    parser.add_argument("--rates", default="10,25,50,100,200,300,400,600,800", help="calls/s, in order")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code(),
        "command": command_line(),
        "duration_s": args.duration,
    }
    with tempfile.TemporaryDirectory(prefix="vaxelbox-bench-local-calls-") as tmp:
        results |= run(args, Path(tmp))
    write(results, args.out)


if __name__ == "__main__":
    main()
