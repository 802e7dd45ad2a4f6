"""`vaxelbox factory-reset`: back to the state the appliance left the factory in.

With no agent on the data directory the command wipes it itself; with one running, it asks that
agent (a request file it watches, vaxelbox.agent.factory_reset), which holds the store open:
the agent wipes and starts again as a fresh box, and this command waits until it has.
"""

import getpass
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from vaxelbox.agent.factory_reset import KEPT, WipeError, doomed, request, wipe
from vaxelbox.agent.logs import Redactor, audit, configure_logging
from vaxelbox.agent.runtime import DataDirUnavailable, RunningAgent, running_agents, sole_agent
from vaxelbox.cli_console import console
from vaxelbox.cli_provisioning import BoardOption, DataOption, agent_data_dir
from vaxelbox.store.database import DB_NAME

HELP = (
    "Wipe this appliance's state (store, installers, site PKI, staged firmware) and keep its serial "
    "and pairing code; a running agent wipes and starts again as a fresh box (its --site applied "
    "again). Asks first unless --yes. The companion's button held 10 s does the same. "
)
AGENT_TIMEOUT = 30.0  # s for a running agent to wipe and start again

out = console(soft_wrap=True, markup=False)
err = console(stderr=True, soft_wrap=True, markup=False)

YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask: reset at once (for scripts)")]


def factory_reset(yes: YesOption = False, data: DataOption = None, board: BoardOption = None) -> None:
    directory = agent_data_dir(data, board)
    agent = _agent_on(directory)
    _confirm(directory, agent, yes)
    by = getpass.getuser()
    if agent is None:
        _wipe_here(directory, by)
    else:
        _ask_agent(directory, agent, by)


def _agent_on(directory: Path) -> RunningAgent | None:
    resolved = directory.resolve()
    return next((a for a in running_agents() if a.data_dir.resolve() == resolved), None)


def _confirm(directory: Path, agent: RunningAgent | None, yes: bool) -> None:
    """Exit 1 unless --yes, or a person at a terminal said yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        err.print(f"factory-reset wipes {directory}: not confirmed (no terminal); pass --yes to reset")
        raise typer.Exit(1)
    gone = ", ".join(doomed(directory)) or "nothing"
    who = f"the running agent (pid {agent.pid}) wipes" if agent else "this wipes"
    out.print(f"Factory reset of {directory}: {who} {gone}; kept: {', '.join(KEPT)}.")
    if not typer.confirm("Reset this appliance to its factory state?", default=False):
        err.print("not reset")
        raise typer.Exit(1)


def _wipe_here(directory: Path, by: str) -> None:
    configure_logging(Redactor())  # the audit line to stderr (the journal, when run from a unit)
    origin = f"vaxelbox factory-reset ({by})"
    try:
        with sole_agent(directory):  # an agent that started meanwhile, or runs without its record
            removed = wipe(directory)
    except DataDirUnavailable as exc:
        err.print(f"not reset: {exc}")
        raise typer.Exit(1) from None
    except WipeError as exc:
        audit("factory-reset", "failed", None, origin, stage="wiped", removed=exc.removed, reason=str(exc))
        err.print(f"factory reset incomplete in {directory}: {exc}")
        raise typer.Exit(1) from None
    audit("factory-reset", "ok", None, origin, stage="wiped", removed=removed, kept=list(KEPT))
    out.print(f"Reset {directory}: removed {', '.join(removed) or 'nothing'}; serial and pairing code kept.")


def _ask_agent(directory: Path, agent: RunningAgent, by: str) -> None:
    """Leave the request, then wait for the agent to take it (the request gone with the wipe) and to
    open a fresh store. Exit 1 (the request withdrawn) when it does not within AGENT_TIMEOUT."""
    path = request(directory, by)
    out.print(f"Asked the agent (pid {agent.pid}) for a factory reset; waiting for it to start afresh...")
    deadline = time.monotonic() + AGENT_TIMEOUT
    while path.exists():
        if time.monotonic() > deadline:
            path.unlink(missing_ok=True)
            err.print(f"the agent (pid {agent.pid}) did not take the request within {AGENT_TIMEOUT:.0f} s")
            raise typer.Exit(1)
        time.sleep(0.1)
    while not (directory / DB_NAME).is_file():
        if time.monotonic() > deadline or not _alive(agent.pid):
            err.print(
                f"the state is wiped but the agent (pid {agent.pid}) has not started again: see its log"
            )
            raise typer.Exit(1)
        time.sleep(0.1)
    out.print(f"Reset {directory}: the agent wiped its state and started again as a fresh box.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
