"""A phone with a wrong password retrying REGISTER every 2 s for 5 minutes, with the auth guard's
real timings: how many of its attempts reach the cloud, counted at Kamailio (issue 17).

The agent (`vaxelbox run`) between sipp phones and Kamailio as the cloud, which logs every REGISTER
it receives. The bad phone (user 101) runs one register attempt every 2 s from one port; another
phone (102) registers with its right password at the start and at the end (it must succeed both
times). `make test` runs the same sequence with the holds scaled down (test_auth_guard_e2e.py);
this is the real figure. Results: bench/results/wrong-password-<date>-<host>.md. Loopback only.
"""

import argparse
import asyncio
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from local_site import CLOUD_HOST, ROOT, code, command_line, free_port, kamailio, kamailio_config, machine

import peers  # isort: skip  (local_site puts firmware/tests on the path)
from test_auth_guard_e2e import RETRY_EVERY, retry_with_wrong_password  # isort: skip
from test_failback import CLOUD_LINE, CLOUD_REGISTER_LOG, E2E_USERS, FailbackOffice  # isort: skip
from vaxelbox.edge.auth_guard import FIRST_HOLD, TIME_SCALE_ENV  # isort: skip


async def good_phone(office: FailbackOffice, workdir: Path) -> float:
    """Phone 102 registers with its right password through the appliance; seconds it took."""
    started = time.monotonic()
    phone = await peers.phone(
        "register.xml", office.lan, "102", workdir, password=E2E_USERS["102"], timeout=10
    )
    await phone.finish(timeout=15)  # raises unless 401 then 200
    return time.monotonic() - started


async def measure(seconds: float, workdir: Path) -> dict[str, Any]:
    os.environ.pop(TIME_SCALE_ENV, None)  # the real timings
    port = free_port(CLOUD_HOST)
    config = kamailio_config(workdir, '    if (is_method("REGISTER")) {\n', CLOUD_REGISTER_LOG)
    with kamailio(workdir, E2E_USERS, (CLOUD_HOST, port), config) as cloud:
        office = FailbackOffice(workdir, port)
        try:
            await office.ready()
            first = await good_phone(office, workdir)
            bad_port = free_port("127.0.0.1")
            started = time.time()
            answers = await retry_with_wrong_password(office.lan, workdir, bad_port, seconds)
            ended = time.time()
            last = await good_phone(office, workdir)
            log = office.agent.output()
        finally:
            await asyncio.to_thread(office.agent.stop)
        arrivals = [m.groups() for m in CLOUD_LINE.finditer(cloud.output())]
    from_bad = [(float(at), cseq) for at, user, cseq, _ in arrivals if user == "101"]
    return {
        "seconds": round(ended - started, 1),
        "attempts": len(answers),
        "answered_401_by_the_cloud": answers.count("401"),
        "answered_403_by_the_appliance": answers.count("403"),
        "registers_at_the_cloud": len(from_bad),
        "with_credentials_at_the_cloud": sum(1 for _, cseq in from_bad if cseq == "2"),
        "last_at_the_cloud_after_s": round(max(at for at, _ in from_bad) - started, 1) if from_bad else None,
        "holds_logged": log.count("auth hold: "),
        "good_phone_registered_s": [round(first, 2), round(last, 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the bad phone retries")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.seconds, Path(tmp)))
    stamp = datetime.datetime.now(datetime.UTC)
    results = {"date": stamp.isoformat(timespec="seconds"), "machine": machine(), "code": code(),
               "command": command_line(), "retry_every_s": RETRY_EVERY, "first_hold_s": FIRST_HOLD,
               "result": result}  # fmt: skip
    out = ROOT / "bench" / "results" / f"wrong-password-{stamp:%Y-%m-%d}-{machine()['host']}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# A wrong-password phone for {result['seconds']:g} s, {results['date']}\n\n"
        f"Machine: {results['machine']}\nCode: {results['code']}\n"
        f"Command: `{results['command']}` (`make bench` runs it so). Loopback only. The agent between "
        "sipp phones and Kamailio (the cloud, logging each REGISTER); the auth guard's real timings "
        f"(first hold {FIRST_HOLD:g} s). Phone 101 retries with a wrong password every {RETRY_EVERY:g} s.\n\n"
        "| what | figure |\n|---|---|\n"
        + "".join(f"| {key.replace('_', ' ')} | {value} |\n" for key, value in result.items())
    )
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
