"""No test leaves a `vaxelbox run` behind (a pytest plugin, loaded by the root conftest.py).

After each test, every agent that appeared during it must have ended: a descendant of this pytest
process, or any process whose command line names this session's temporary directory (so an agent
whose parent died, e.g. `make run` killed before its child, is found too). Agents running before
the test started (a module-scoped fixture's) are left to their fixture. A survivor gets a grace
period to finish stopping, is then ended (SIGTERM, then SIGKILL), and the test fails naming it. At
the end of the session, any agent of this session still running is ended the same way.
"""

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

GRACE = 10.0  # seconds an agent the test has just signalled may take to finish stopping
GRACE_ENV = "AGENT_LEAK_GRACE"  # overrides GRACE, e.g. for a session that leaks on purpose


@dataclass(frozen=True)
class Agent:
    pid: int
    started: int  # clock ticks after boot (field 22 of /proc/PID/stat): tells a reused PID apart
    command: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent PID, start time) of a process, or None if it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "PID (comm) "; comm may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _is_agent(argv: list[str]) -> bool:
    """`... vaxelbox run ...` as `python -m vaxelbox run` or `.venv/bin/vaxelbox run`."""
    return any(
        os.path.basename(word) == "vaxelbox" and after == "run" for word, after in itertools.pairwise(argv)
    )


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):  # deeper than any process tree a test builds
        stat = _stat(pid)
        if stat is None or stat[1] <= 1:
            return False
        if stat[1] == ancestor:
            return True
        pid = stat[1]
    return False


def session_agents(marker: str) -> set[Agent]:
    """The running `vaxelbox run` processes of this pytest session (see the module's docstring);
    `marker` is the session's temporary directory."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not _is_agent(argv):
            continue
        pid, command = int(entry.name), " ".join(argv).strip()
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":  # exited, not yet reaped: not running
            continue
        if f"{marker}/" in command or _descends_from(pid, os.getpid()):
            found.add(Agent(pid, stat[2], command))
    return found


def _running(agent: Agent) -> bool:
    stat = _stat(agent.pid)
    return stat is not None and stat[0] != "Z" and stat[2] == agent.started


def _end(agents: set[Agent], grace: float) -> set[Agent]:
    """Wait up to `grace` seconds for `agents` to stop; then end those still running. Returns them."""
    deadline = time.monotonic() + grace
    while (left := {a for a in agents if _running(a)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for agent in (a for a in left if _running(a)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.pid, sig)
        deadline = time.monotonic() + 5
        while any(_running(a) for a in left) and time.monotonic() < deadline:
            time.sleep(0.1)
    return left


def _grace() -> float:
    return float(os.environ.get(GRACE_ENV, GRACE))


def _failure(left: set[Agent], when: str) -> str:
    listed = "\n".join(f"  pid {a.pid}: {a.command}" for a in sorted(left, key=lambda a: a.pid))
    return f"{when} left {len(left)} `vaxelbox run` running (now ended):\n{listed}"


@pytest.fixture(scope="session")
def _session_marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    marker = str(tmp_path_factory.getbasetemp())
    yield marker
    if left := _end(session_agents(marker), _grace()):
        pytest.fail(_failure(left, "the test session"), pytrace=False)


@pytest.fixture(autouse=True)
def no_agent_left_running(_session_marker: str) -> Iterator[None]:
    """Fails a test that leaves an agent it started running (after ending that agent)."""
    before = session_agents(_session_marker)
    yield
    if left := _end(session_agents(_session_marker) - before, _grace()):
        pytest.fail(_failure(left, "this test"), pytrace=False)
