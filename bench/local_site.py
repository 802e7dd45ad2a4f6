"""What the local-mode benchmarks share (bench/failback.py, bench/local_calls.py): a site for many
users, the agent started on it with no cloud so that it runs the office locally, and Kamailio
with a copy of the tests' configuration changed for the benchmark (e.g. a line per REGISTER).
"""

import csv
import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "tests"))
import peers  # noqa: E402
from agent_process import AgentProcess  # noqa: E402
from peers import DOMAIN, Kamailio, free_port, tool  # noqa: E402

Address = tuple[str, int]
CLOUD_HOST = "127.0.0.3"


def site_text(users: dict[str, str], cloud: Address, hold_down: float, failback_rate: float | None) -> str:
    """A site file: one user per SIP user of `users` (SIP user -> password; the SIP user is also
    the extension, so it must be 2-6 digits), the cloud at `cloud` over TCP, the [local] table."""
    first = next(iter(users))
    rate = "" if failback_rate is None else f"failback_rate = {failback_rate}\n"
    head = (
        f'[site]\nname = "Benchmark office"\n\n'
        f'[cloud]\ndomain = "{DOMAIN}"\nproxies = ["sip:{cloud[0]}:{cloud[1]};transport=tcp"]\n\n'
        f"[local]\nhold_down = {hold_down}\n{rate}\n"
        f'[main]\nnumber = "08-465 004 00"\nentry = "user:u{first}"\n'
    )
    people = (
        f'\n[[users]]\nid = "u{user}"\nname = "Person {user}"\nextension = "{user}"\n'
        f'sip = {{ user = "{user}", password = "{password}" }}\n'
        for user, password in users.items()
    )
    return head + "".join(people)


class LocalAgent:
    """`vaxelbox run` on a site whose cloud does not answer yet: the office runs locally."""

    def __init__(self, workdir: Path, site: str, cloud: Address, log_level: str = "INFO") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "site.toml").write_text(site)
        self.lan = ("127.0.0.1", free_port("127.0.0.1"))
        self.agent = AgentProcess(
            workdir, "--site", str(workdir / "site.toml"), "--data", str(workdir / "data"),
            "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"127.0.0.2:{free_port('127.0.0.2')}",
            "--cloud", f"sip:{cloud[0]}:{cloud[1]};transport=tcp", "--sip-rate-limit", "0",
            "--log-level", log_level,
        )  # fmt: skip

    def local(self, timeout: float = 30) -> dict[str, Any]:
        """Wait for READY, then for local mode (the cloud is declared down in about 3 s)."""
        self.agent.wait_notification("READY", "1", timeout=timeout)
        return self.event("mode", timeout, new="local")

    def event(self, name: str, timeout: float, since: float = 0.0, **fields: Any) -> dict[str, Any]:
        """The first log event `name` at or after `since` (epoch s) with these field values; its
        timestamp as "at" (epoch s). Raises AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.agent.events(name):
                at = epoch(event["timestamp"])
                if at >= since and all(event.get(k) == v for k, v in fields.items()):
                    return {**event, "at": at}
            time.sleep(0.1)
        raise AssertionError(f"no {name!r} {fields} within {timeout} s\n{self.agent.output()[-3000:]}")

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.agent.events() if e.get("level") in ("error", "critical")]

    def stop(self) -> None:
        self.agent.stop(30)


def epoch(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def kamailio_config(workdir: Path, anchor: str, insert: str) -> Path:
    """A directory holding the tests' kamailio.cfg with `insert` placed right after `anchor`."""
    config = (peers.PEERS / "kamailio.cfg").read_text()
    assert config.count(anchor) == 1, f"the tests' kamailio.cfg changed: {anchor!r} is not there once"
    directory = workdir / "kamailio-config"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kamailio.cfg").write_text(config.replace(anchor, anchor + insert))
    return directory


@contextmanager
def kamailio(
    workdir: Path, users: dict[str, str], address: Address, config: Path | None
) -> Iterator[Kamailio]:
    """Kamailio on `address` with these users, from the config in directory `config` (None: the
    tests' own); stopped on leaving."""
    saved = peers.PEERS
    peers.PEERS = config or saved  # peers.Kamailio reads PEERS/kamailio.cfg when it starts
    try:
        cloud = Kamailio(address[0], address[1], workdir / "kamailio", users=users).start()
    finally:
        peers.PEERS = saved
    try:
        yield cloud
    finally:
        cloud.stop()


def machine() -> dict[str, Any]:
    kamailio_version = subprocess.run([tool("kamailio"), "-v"], capture_output=True, text=True).stdout
    sipp_version = subprocess.run([tool("sipp"), "-v"], capture_output=True, text=True).stdout
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "kamailio": kamailio_version.splitlines()[0].strip(),
        "sipp": next((line.strip() for line in sipp_version.splitlines() if "SIPp" in line), "?"),
    }


def command_line() -> str:
    """This command as typed from the project's root, e.g. `.venv/bin/python bench/failback.py`."""
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return " ".join([python, os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def code() -> str:
    """The commit the agent ran from, and whether the tree had changes beyond it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "firmware"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    dirty = " with uncommitted changes in firmware/" if changed.stdout.strip() else ""
    return f"{commit.stdout.strip() or 'unknown'}{dirty}"


__all__ = [
    "CLOUD_HOST",
    "LocalAgent",
    "code",
    "command_line",
    "free_port",
    "kamailio",
    "kamailio_config",
    "machine",
    "site_text",
]


# --- sipp runs (failback.py, local_calls.py) ---------------------------------------------------

SCENARIOS = Path(__file__).with_name("sipp")


def sipp(
    target: tuple[str, int], scenario: str, workdir: Path, *args: str, port: int | None = None,
    wait: bool = True, timeout: float = 300,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """sipp on bench/sipp/`scenario` against `target` over UDP, statistics in workdir/stats.csv;
    `wait`: until it ends (at most `timeout` s)."""
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
    """The last row of sipp's periodic statistics in `workdir` (its totals)."""
    with (workdir / "stats.csv").open() as file:
        return list(csv.DictReader(file, delimiter=";"))[-1]


def register_one(target: tuple[str, int], user: str, password: str, port: int, workdir: Path) -> None:
    """Register `user` from sipp's `port` (answering the digest challenge); raises if it failed."""
    inf = workdir / "one.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    inf.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    process = sipp(target, "register_many.xml", workdir, "-inf", str(inf), "-m", "1", port=port)
    assert process.returncode == 0, f"registering {user} failed"


def rtts(workdir: Path) -> list[float]:
    """Every response time (ms) sipp's -trace_rtt wrote in `workdir`."""
    values = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open() as file:
            values += [float(row["response_time_ms"]) for row in csv.DictReader(file, delimiter=";")]
    return values


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")
