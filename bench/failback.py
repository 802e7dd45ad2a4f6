"""Failback benchmark: phones registered with the appliance in local mode, then the cloud PBX returns.

Run with `make bench`, or smaller while developing (`python bench/failback.py --phones 200`).
Writes bench/results/failback-<date>-<host>.md (and .json):
- seconds from the cloud up (Kamailio answering OPTIONS) to mode online, and to the agent's
  "failback done";
- the REGISTERs the cloud received, counted at the cloud (a copy of the tests' Kamailio config
  logs each with its arrival time and User-Agent): the failback's (User-Agent Vaxelbox/...) and
  the phones' own refreshes, each with its peak in any 1 s window;
- the agent's failback report as it logs it (phones, registered, skipped, failures, requests,
  seconds, peak_rate);
- what the phones saw until then: registrations and refreshes that succeeded or failed, and
  every 5xx.

The phones are one sipp process, a user per line of an -inf file. Each registers (401, 200)
while the cloud is down, then refreshes at half the expiry it was granted, as desk phones do:
if the appliance's local grants are short, some refreshes reach the cloud during the failback,
as they would in an office (the failback skips a binding its phone refreshed itself). The run
ends OBSERVE seconds after "failback done"; refreshes due later are not waited for.
Everything runs on loopback; nothing leaves this machine.
"""

import argparse
import bisect
import csv
import datetime
import json
import platform
import re
import signal
import subprocess
import tempfile
import time
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
    sipp,
    site_text,
)
from vaxelbox.site.model import LocalMode

SITE_DEFAULT_RATE = LocalMode.model_fields["failback_rate"].default  # REGISTER/s
FIRST_USER = 2000  # SIP users (and extensions) 2000, 2001, ...
# The cloud logs every REGISTER it receives, with its arrival time (a copy of the tests' config).
REGISTER_ANCHOR = '    if (is_method("REGISTER")) {\n'
REGISTER_LOG = '        xlog("L_NOTICE", "cloud REGISTER at=$TV(Sn) user=$fU cseq=$cs ua=$ua\\n");\n'
OBSERVE = 5.0  # seconds the phones and the cloud are watched after "failback done"
CLOUD_LINE = re.compile(r"cloud REGISTER at=([\d.]+) user=(\S+) cseq=(\d+) ua=(.*)")


def peak(times: list[float], window: float = 1.0) -> int:
    """The most of `times` (seconds) inside any half-open window [t, t + window)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def start_phones(
    target: tuple[str, int], users: dict[str, str], rate: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """One sipp process registering every user at `rate` per second, each refreshing once."""
    workdir.mkdir(parents=True, exist_ok=True)
    inf = workdir / "phones.csv"
    lines = [
        f"{user};[authentication username={user} password={password}]" for user, password in users.items()
    ]
    inf.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
    return sipp(target, "register_refresh.xml", workdir, "-inf", str(inf), "-m", str(len(users)),
                "-r", str(rate), "-l", str(len(users)), "-timeout", "600s", "-trace_err", "-trace_counts",
                wait=False)  # fmt: skip


def counted(workdir: Path, column: str) -> int:
    """A count from sipp's -trace_counts file (written each second), e.g. "3_200_Recv": messages
    are numbered in scenario order (0 REGISTER, 1 401, 2 REGISTER, 3 200 = registered, 4 pause,
    5-8 the refresh, 8 200 = refreshed)."""
    for path in workdir.glob("*_counts.csv"):
        with path.open() as file:
            rows = list(csv.reader(file, delimiter=";"))
        if len(rows) < 2 or column not in rows[0]:
            return 0
        return int(rows[-1][rows[0].index(column)] or 0)
    return 0


def first_200s(workdir: Path) -> int:
    return counted(workdir, "3_200_Recv")


def wait_registered(workdir: Path, phones: subprocess.Popen[bytes], count: int, timeout: float) -> float:
    started = time.monotonic()
    while (done := first_200s(workdir)) < count:
        if phones.poll() is not None or time.monotonic() - started > timeout:
            raise AssertionError(f"{done} of {count} phones registered locally; see {workdir}")
        time.sleep(0.5)
    return time.monotonic() - started


def phones_saw(workdir: Path) -> dict[str, Any]:
    stats = final_stats(workdir)
    errors = "".join(path.read_text(errors="replace") for path in workdir.glob("*_errors.log"))
    return {
        "registered": first_200s(workdir),
        "refreshed": counted(workdir, "8_200_Recv"),
        "failed": int(stats["FailedCall(C)"]),
        "retransmissions": int(stats["Retransmissions(C)"]),
        "5xx": len(re.findall(r"SIP/2\.0 5\d\d ", errors)),
        "errors_logged": errors.count("Aborting call"),
    }


def cloud_saw(log: str) -> dict[str, Any]:
    arrivals = [(float(at), user, ua) for at, user, _, ua in CLOUD_LINE.findall(log)]
    failback = [at for at, _, ua in arrivals if ua.startswith("Vaxelbox/")]
    phones = [at for at, _, ua in arrivals if not ua.startswith("Vaxelbox/")]
    return {
        "registers": len(arrivals),
        "failback_registers": len(failback),
        "failback_peak_per_s": peak(failback),
        "failback_span_s": round(max(failback) - min(failback), 2) if failback else 0,
        "phone_registers": len(phones),
        "phone_peak_per_s": peak(phones),
        "all_peak_per_s": peak([at for at, _, _ in arrivals]),
        "users_registered_by_failback": len(
            {user for at, user, ua in arrivals if ua.startswith("Vaxelbox/")}
        ),
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    users = {str(FIRST_USER + n): f"pw-{FIRST_USER + n}-secret" for n in range(args.phones)}
    cloud_address = (CLOUD_HOST, free_port(CLOUD_HOST))  # nothing answers there until the cloud starts
    agent = LocalAgent(
        work / "agent", site_text(users, cloud_address, args.hold_down, args.rate), cloud_address
    )
    phones = None
    try:
        started = time.time()
        went_local = agent.local()
        phones = start_phones(agent.lan, users, args.register_rate, work / "phones")
        registering = wait_registered(
            work / "phones", phones, len(users), args.phones / args.register_rate + 60
        )
        config = kamailio_config(work, REGISTER_ANCHOR, REGISTER_LOG)
        with kamailio(work, users, cloud_address, config) as cloud:
            cloud_up = time.time()
            online = agent.event("mode", 60, since=cloud_up, new="online")
            done = agent.event("failback done", args.phones / 5 + 60, since=cloud_up)
            time.sleep(OBSERVE)  # what comes right after, at the cloud and to the phones
            phones.send_signal(signal.SIGKILL)  # the refreshes still due are not waited for
            phones.wait()
            time.sleep(1.5)  # sipp's counts and stats files are written each second; these are its last
            cloud_log = cloud.output()
        errors = agent.errors()
    finally:
        if phones is not None and phones.poll() is None:
            phones.send_signal(signal.SIGKILL)
            phones.wait()
        agent.stop()
    report = {key: done[key] for key in ("phones", "registered", "skipped", "failures", "unregistered",
                                          "requests", "seconds", "peak_rate", "stopped")}  # fmt: skip
    return {
        "local_mode_after_start_s": round(went_local["at"] - started, 2),
        "registered_locally_in_s": round(registering, 2),
        "cloud_up_to_online_s": round(online["at"] - cloud_up, 2),
        "cloud_up_to_failback_done_s": round(done["at"] - cloud_up, 2),
        "failback_report": report,
        "cloud": cloud_saw(cloud_log),
        "phones_saw": phones_saw(work / "phones"),
        "agent_errors": len(errors),
    }


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    base = out / f"failback-{stamp}-{platform.node()}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    r, cloud, phones, report = results, results["cloud"], results["phones_saw"], results["failback_report"]
    rate = r["failback_rate"]
    lines = [
        f"# Failback benchmark, {r['date']}",
        "",
        f"Machine: {r['machine']}",
        f"Code: {r['code']}.",
        f"Command: `{r['command']}` (`make bench` runs it so). Loopback only.",
        f"{r['phones']} phones (one sipp, -inf users) registered with the agent in local mode at "
        f"{r['register_rate']}/s, each refreshing at half its granted expiry; then Kamailio started "
        f"as the cloud with the same users. Site: hold_down {r['hold_down']} s, failback_rate {rate}/s.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| cloud up -> mode online (hold-down {r['hold_down']} s) | {r['cloud_up_to_online_s']} s |",
        f"| cloud up -> failback done | **{r['cloud_up_to_failback_done_s']} s** |",
        f"| failback run (agent's report: first send to last answer) | {report['seconds']} s |",
        f"| bindings registered by the failback / skipped (the phone refreshed first) / in the plan | "
        f"{report['registered']} / {report['skipped']} / {report['phones']} |",
        f"| failback failures / given up | {report['failures']} / {report['unregistered']} |",
        f"| failback REGISTERs sent (agent) / received (cloud) | {report['requests']} / {cloud['failback_registers']} |",
        f"| peak failback REGISTER/s, agent's count / **at the cloud** (any 1 s window) | "
        f"{report['peak_rate']} / **{cloud['failback_peak_per_s']}** (limit {rate}) |",
        f"| phones' own REGISTERs at the cloud (refreshes: challenged + answered), peak/s | "
        f"{cloud['phone_registers']}, {cloud['phone_peak_per_s']} |",
        f"| all REGISTERs at the cloud, peak/s | {cloud['registers']}, {cloud['all_peak_per_s']} |",
        f"| 5xx any phone saw | **{phones['5xx']}** |",
        f"| phones registered / refreshed by the end / failed / retransmissions | "
        f"{phones['registered']} / {phones['refreshed']} / {phones['failed']} / {phones['retransmissions']} |",
        f"| local registration of all phones took | {r['registered_locally_in_s']} s |",
        f"| agent errors logged | {r['agent_errors']} |",
        "",
        f"Watched until {OBSERVE:.0f} s after `failback done`. failback_rate paces the appliance's own "
        "REGISTERs; the phones' refreshes pass through as they come.",
        "",
        "The agent's `failback done` line:",
        "",
        "```",
        json.dumps(report),
        "```",
        "",
    ]  # fmt: skip
    base.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results: {base}.md")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=2000)
    parser.add_argument("--register-rate", type=int, default=100, help="local REGISTERs/s of the phones")
    parser.add_argument("--hold-down", type=float, default=5.0, help="the site's [local] hold_down, s")
    parser.add_argument(
        "--rate", type=float, default=None, help="the site's failback_rate (default: the site default)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code(),
        "command": command_line(),
        "phones": args.phones,
        "register_rate": args.register_rate,
        "hold_down": args.hold_down,
        "failback_rate": SITE_DEFAULT_RATE if args.rate is None else args.rate,
    }
    if args.keep:  # the sipp logs, the agent's and Kamailio's, for a look afterwards
        results |= run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="vaxelbox-bench-failback-") as tmp:
            results |= run(args, Path(tmp))
    write(results, args.out)


if __name__ == "__main__":
    main()
