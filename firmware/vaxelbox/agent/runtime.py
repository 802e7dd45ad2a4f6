"""Which agents run on this machine, and on which data directory: so that `vaxelbox phones` typed
in another terminal acts on the store the running agent serves, not on an empty one of its own.

`vaxelbox run` writes one record per agent process, `<runtime dir>/agent-<pid>.json`
(`{"pid": int, "started": float, "data_dir": str}`: the process's start time in seconds since the
epoch tells a reused PID apart; the data directory is absolute) when it starts, and removes it
when it stops. A record whose process has gone (SIGKILL) is ignored and pruned.

The runtime directory: `$VAXELBOX_RUNTIME_DIR` if set; for root `/run/vaxelbox` (the systemd
unit's RuntimeDirectory, found by a root shell whatever its XDG_RUNTIME_DIR); else
`$XDG_RUNTIME_DIR/vaxelbox`, or `/run/user/<uid>/vaxelbox` where that exists; else
`vaxelbox-agents` beside the user's state directory.

One agent per data directory: `vaxelbox run` holds an exclusive lock (flock) on the directory
itself while it runs (`sole_agent`), so a second agent on the same store is refused at start,
however it was started; the kernel lets go of the lock however the process ends.

A local command's data directory (`local_data_dir`), first that applies: `--data`; the board
file's (`--board`); the running agent's; the user's state directory. A directory without the
agent's store is refused, never filled with an empty one.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vaxelbox.agent.options import default_data_dir
from vaxelbox.hw.board import load_board
from vaxelbox.store.database import DB_NAME

RUNTIME_ENV = "VAXELBOX_RUNTIME_DIR"
ROOT_RUNTIME_DIR = Path("/run/vaxelbox")


class DataDirUnavailable(RuntimeError):
    """This agent cannot have its data directory: another agent runs on it, or it cannot be made or
    opened. The message says which, and what to do."""


class NoAgentState(LookupError):
    """The data directory a local command would use holds no agent state, or it is ambiguous which
    one to use; the message says which and what to pass."""


@dataclass(frozen=True)
class RunningAgent:
    pid: int
    data_dir: Path


@dataclass(frozen=True)
class LocalState:
    """The data directory a local command acts on, and a note for stderr when it is not obvious
    (None when the command line or the one running agent chose it)."""

    data_dir: Path
    note: str | None = None


def runtime_dir() -> Path:
    """Where agents' records live (see the module's docstring)."""
    if override := os.environ.get(RUNTIME_ENV):
        return Path(override)
    if os.geteuid() == 0:
        return ROOT_RUNTIME_DIR
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "vaxelbox"
    session = Path(f"/run/user/{os.geteuid()}")
    if session.is_dir():
        return session / "vaxelbox"
    return default_data_dir().with_name("vaxelbox-agents")


@contextmanager
def registered(data_dir: Path) -> Iterator[str | None]:
    """Record this process as an agent on `data_dir` for the duration of the block. Yields None, or
    why the record could not be written (the agent runs anyway; local commands then need --data)."""
    record = runtime_dir() / f"agent-{os.getpid()}.json"
    try:
        _write_record(record, data_dir)
    except OSError as exc:
        yield f"{record}: {exc.strerror or exc}"
        return
    try:
        yield None
    finally:
        record.unlink(missing_ok=True)


@contextmanager
def sole_agent(data_dir: Path) -> Iterator[None]:
    """Hold `data_dir` (created 0700 if missing) for this process alone for the duration of the
    block: two agents on one store would each serve, apply and replay it as theirs. The lock is on
    the directory, not a file in it, so a factory reset's wipe cannot remove it. Raises
    DataDirUnavailable naming the agent that holds it, or why the directory cannot be had."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DataDirUnavailable(f"cannot open the data directory {data_dir}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirUnavailable(_taken(data_dir)) from None
        yield
    finally:
        os.close(fd)  # the lock goes with the last descriptor


def _taken(data_dir: Path) -> str:
    where = os.path.realpath(data_dir)  # however either was named: relative, through a link
    holder = next((a for a in running_agents() if os.path.realpath(a.data_dir) == where), None)
    who = f"another agent (pid {holder.pid})" if holder else "another agent"
    return (
        f"{where} is in use by {who}: one agent per data directory; stop that one first, or use "
        "another directory (--data DIR)"
    )


def _write_record(record: Path, data_dir: Path) -> None:
    record.parent.mkdir(
        mode=0o755 if record.parent == ROOT_RUNTIME_DIR else 0o700, parents=True, exist_ok=True
    )
    _prune(record.parent)
    body = {
        "pid": os.getpid(),
        "started": process_started(os.getpid()),
        "data_dir": os.path.abspath(data_dir),
    }
    partial = record.with_suffix(".tmp")
    partial.write_text(json.dumps(body) + "\n")
    os.replace(partial, record)  # a reader never sees half a record


def running_agents() -> list[RunningAgent]:
    """The agents whose records name a live process, by PID."""
    return sorted(
        (agent for path in _records(runtime_dir()) if (agent := _alive(path)) is not None),
        key=lambda agent: agent.pid,
    )


def _records(directory: Path) -> list[Path]:
    try:
        return list(directory.glob("agent-*.json"))
    except OSError:
        return []


def _alive(path: Path) -> RunningAgent | None:
    """The agent a record names if that very process still runs (same PID and start time)."""
    try:
        body = json.loads(path.read_text())
        pid, started, data_dir = int(body["pid"]), float(body["started"]), Path(body["data_dir"])
        alive = abs(process_started(pid) - started) < 1.0
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return RunningAgent(pid, data_dir) if alive else None


def process_started(pid: int) -> float:
    """When process `pid` started, in seconds since the epoch, as psutil's create_time() reckons it
    on Linux: its start in clock ticks after boot (/proc/PID/stat) plus the boot time (/proc/stat).
    Read here, not through psutil, which would cost the agent ~0.9 MiB for life. Raises OSError
    (no such process) or ValueError."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()  # after the name, which may hold anything
    ticks = float(fields[19])  # field 22 of stat(5); fields[0] is field 3 (state)
    with open("/proc/stat", "rb") as system:
        boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime"))
    return ticks / os.sysconf("SC_CLK_TCK") + boot


def _prune(directory: Path) -> None:
    """Remove the records of agents that have gone without removing their own (SIGKILL)."""
    for path in _records(directory):
        if _alive(path) is None and path.name != f"agent-{os.getpid()}.json":
            path.unlink(missing_ok=True)


def local_data_dir(data: Path | None = None, board: Path | None = None) -> LocalState:
    """The data directory a local command (`vaxelbox phones`, `enrol`, `activity`, `pairing-code`)
    acts on: `data`, else the board file's, else the running agent's, else the user's state
    directory. Raises NoAgentState when that directory holds no agent state (no store yet), or
    when several agents run on different directories. Raises BoardError for a bad board file."""
    if data is not None:
        return LocalState(
            _existing(data, f"is it the agent's --data? (vaxelbox run --data {data} creates it)")
        )
    if board is not None:
        directory = load_board(board).storage.data_dir
        return LocalState(_existing(directory, f"is the agent running with --board {board}?"))
    agents = {agent.data_dir: agent for agent in running_agents()}
    if len(agents) > 1:
        listed = ", ".join(f"pid {a.pid} on {d}" for d, a in agents.items())
        raise NoAgentState(
            f"{len(agents)} agents are running here ({listed}): pass --data with the one you mean"
        )
    if agents:
        ((directory, agent),) = agents.items()
        return LocalState(_existing(directory, f"the agent (pid {agent.pid}) is still starting: try again"))
    directory = default_data_dir()
    hint = "is the agent running? Start it (make run, or vaxelbox run), or pass --data DIR"
    return LocalState(
        _existing(directory, hint), note=f"no agent is running; using the state it left in {directory}"
    )


def _existing(directory: Path, hint: str) -> Path:
    if not (directory / DB_NAME).is_file():
        raise NoAgentState(f"no agent state at {directory}: {hint}")
    return directory
