"""The Vaxelbox edge alone up a call-rate ladder, for A/B runs of two builds of the agent: two source
trees, two interpreters, an environment change. Each build gets a fresh agent, alternately, as
often as --rounds says; each step reports calls, failures, retransmissions, 503s and the agent's
CPU per completed call (user + system), and a build's ladder stops at its first unclean step.

    python bench/agent_ladder.py --rates 550,600,650,700 --step-seconds 8 --rounds 2 \\
        HEAD=firmware old=/path/to/old/firmware

A build is NAME=PATH: PATH goes first on the agent's PYTHONPATH. The agent runs on the interpreter
running this script; for another, run it from that interpreter's venv. NAME=PATH#VAR=VALUE also
sets one environment variable for that build's agent (LD_PRELOAD=..., say). The load, the cloud and
the phones are bench/sip_relay.py's; its ladder compares the edge with Kamailio's, this one builds
with each other. Loopback only.
"""

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from relay_edges import Agent, Kamailio, free_port
from sip_relay import CALLEES, SHM_MB, USERS, Callee, step


def parse_build(text: str) -> tuple[str, str, dict[str, str]]:
    """NAME=PATH[#VAR=VALUE] -> (name, path, extra environment)."""
    name, _, rest = text.partition("=")
    path, _, setting = rest.partition("#")
    variable, _, value = setting.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"a build is NAME=PATH[#VAR=VALUE], not {text!r}")
    return name, str(Path(path).resolve()), {variable: value} if variable else {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("builds", nargs="+", type=parse_build, help="NAME=PATH[#VAR=VALUE]")
    parser.add_argument("--rates", default="500,550,600,650,700", help="calls/s, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    users = iter(CALLEES)
    print(f"interpreter: {sys.version.split()[0]} ({sys._base_executable})", flush=True)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="vaxelbox-ladder-") as tmp:
        work = Path(tmp)
        cloud = Kamailio("127.0.0.3", free_port("127.0.0.3"), work / "cloud", users=USERS,
                         challenge_invites=True, shm_mb=SHM_MB)  # fmt: skip
        cloud.start()
        try:
            for round_ in range(args.rounds):
                for name, path, extra in args.builds:
                    ladder(
                        name, path, extra, rates, args.step_seconds, work / f"{round_}-{name}", cloud, users
                    )
        finally:
            cloud.stop()


def ladder(name: str, path: str, extra: dict[str, str], rates: list[int], seconds: float, work: Path,
           cloud: Kamailio, users: Iterator[str]) -> None:  # fmt: skip
    """One build up the ladder on a fresh agent, a line per step."""
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [saved.get("PYTHONPATH")])])
    os.environ.update(extra)
    try:
        agent = Agent(work / "edge", cloud)  # started with this environment
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        with Callee(agent.lan, work / "callee", users) as callee:
            for rate in rates:
                before = agent.cpu_seconds()
                outcome = step(agent.lan, callee.user, rate, seconds, work / f"r{rate}")
                cpu = (agent.cpu_seconds() - before) / max(1, outcome["successful"]) * 1000
                print(f"{name}: {rate} calls/s: {outcome['successful']} ok, {outcome['failed']} failed, "
                      f"{outcome['retransmissions']} retransmissions, {outcome['503']} 503; "
                      f"agent CPU {cpu:.3f} ms/call{' (clean)' if outcome['clean'] else ''}", flush=True)  # fmt: skip
                if not outcome["clean"]:
                    break
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
