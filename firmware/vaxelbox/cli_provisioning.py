"""`vaxelbox phones` and `vaxelbox enrol`: the installer's provisioning commands on the appliance.

They work on the store beside a running agent (SQLite WAL lets both in); the
agent sees an assignment at the phone's next request. Which store: --data, else
--board's, else the running agent's, else the user's state directory (see
vaxelbox.agent.runtime); one without the agent's state is refused.
"""

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from phoneprov.device import installer_mac

from vaxelbox.agent.runtime import NoAgentState, local_data_dir
from vaxelbox.cli_console import console
from vaxelbox.cli_help import plain_flags
from vaxelbox.hw.board import BoardError
from vaxelbox.inventory import (
    already_assigned,
    device_rows,
    is_dect_base,
    not_in_site,
    seen_device,
    site_vendor,
)
from vaxelbox.inventory import assign as assign_device
from vaxelbox.inventory import unassign as unassign_device
from vaxelbox.outlook import assigned_outlook
from vaxelbox.problems import report
from vaxelbox.site import SiteError
from vaxelbox.site.edit import EditError
from vaxelbox.site.fields import colon_mac
from vaxelbox.site.model import Vendor
from vaxelbox.store import Store
from vaxelbox.tables import print_table

plain_flags()  # these commands' help, and every other vaxelbox command's, without `<bool>`
# Where every local command's state comes from, for the groups' help.
WHICH_STORE = (
    "State: the running agent's data directory (--data DIR picks another); with no agent running, "
    "the user's state directory if an agent left state there."
)
phones_app = typer.Typer(
    help=f"Devices provisioning has seen; assign them to users. {WHICH_STORE}", no_args_is_help=False
)
enrol_app = typer.Typer(
    help=f"The enrolment window: when assigned phones may fetch their secrets. {WHICH_STORE}"
)
# Printed as it is: a '[' in data (a phone's User-Agent, a log line) is not rich markup.
out = console(soft_wrap=True, markup=False)
err = console(stderr=True, soft_wrap=True, markup=False)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Data directory (default: the running agent's, else the user state directory)"
    ),
]
BoardOption = Annotated[
    Path | None, typer.Option("--board", help="Board file: its data directory instead of the running agent's")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _store(data: Path | None, board: Path | None) -> Store:
    return Store(agent_data_dir(data, board))


def agent_data_dir(data: Path | None, board: Path | None) -> Path:
    """The data directory a local command acts on (see vaxelbox.agent.runtime.local_data_dir); says on
    stderr which one when no agent runs. Exits 1 when it holds no agent state or is ambiguous."""
    try:
        state = local_data_dir(data, board)
    except NoAgentState as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    except BoardError as exc:
        report(exc, as_json=False)
        raise typer.Exit(1) from None
    if state.note:
        err.print(state.note)
    return state.data_dir


def _mac(text: str) -> str:
    try:
        return installer_mac(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@phones_app.callback(invoke_without_command=True)
def phones(
    ctx: typer.Context, data: DataOption = None, board: BoardOption = None, as_json: JsonOption = False
) -> None:
    """List every device seen, assigned or not."""
    if ctx.invoked_subcommand is not None:  # `phones --data D assign ...`: the group's options reach it
        given = {name: value for name, value in ctx.params.items() if value not in (None, False)}
        ctx.default_map = {name: dict(given) for name in getattr(ctx.command, "commands", {})}
        return
    seen = device_rows(_store(data, board))
    if as_json:
        rows = [
            {**row, "first_seen": _when(row["first_seen"]), "last_seen": _when(row["last_seen"])}
            for row in seen
        ]
        out.print_json(json.dumps(rows))
        return
    columns = ("mac", "vendor", "model", "firmware", "ip", "assigned", "enrolled", "last_seen")
    cells = [[_cell(row[c]) for c in columns] for row in seen]
    headers = [c.replace("_", " ") for c in columns]
    print_table(out, f"Devices seen ({len(seen)})", headers, cells, whole={"mac"}, words={"assigned"})
    if any(row["assigned"] is None for row in seen):
        out.print("Assign one with: vaxelbox phones assign MAC USER")
    _unknown_vendors(seen)


def _unknown_vendors(seen: list[dict[str, object]]) -> None:
    """Devices no evidence names the vendor of: they get no file until the installer names it."""
    unknown = [row for row in seen if row["vendor"] is None]
    if not unknown:
        return
    out.print(
        f"Vendor unknown ({len(unknown)}), these get no file; name it with: "
        "vaxelbox phones assign MAC USER --vendor VENDOR"
    )
    for row in unknown:
        out.print(f"  {row['mac']}  User-Agent: {row['user_agent'] or '(none)'}")


def _cell(value: object) -> str:
    """A value as a table shows it; a time with a space, so a narrow column wraps it there."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).isoformat(timespec="seconds")


@phones_app.command("assign")
def assign(
    mac: Annotated[str, typer.Argument(help="The device's MAC, as `vaxelbox phones` lists it")],
    users: Annotated[list[str], typer.Argument(help="User ids on line 1, 2, ... (DECT: handset 1, 2, ...)")],
    dect: Annotated[
        bool, typer.Option(help="A DECT base: the users are its handsets (implied by a DECT model)")
    ] = False,
    vendor: Annotated[
        Vendor | None,
        typer.Option(help="The device's vendor, when provisioning could not tell it (see vaxelbox phones)"),
    ] = None,
    data: DataOption = None,
    board: BoardOption = None,
) -> None:
    """Assign a device to users: a new site version, validated like any other (none if it is
    assigned so already)."""
    bare = _mac(mac)
    store = _store(data, board)
    seen = seen_device(store, bare)
    if not dect and is_dect_base(seen):
        dect = True
        out.print(
            f"{colon_mac(bare)} is a DECT base ({seen.model if seen else ''}): the users are its handsets."
        )
    wanted = vendor.value if vendor else None
    if already_assigned(store, bare, users, dect, wanted):
        out.print(f"{colon_mac(bare)} is already assigned to {', '.join(users)}; nothing changed.")
    else:
        _change_site(lambda: assign_device(store, bare, users, dect, wanted))
        out.print(f"{colon_mac(bare)} assigned to {', '.join(users)}.")
    for line in assigned_outlook(
        vendor_known=site_vendor(store, bare) is not None,
        seen=seen is not None,
        enrolled=store.devices.enrolled(bare) is not None,
        until=store.devices.open_until(bare, time.time()),
        vendors=[v.value for v in Vendor],
        tool="vaxelbox",
    ):
        out.print(line)


@phones_app.command("unassign")
def unassign(mac: str, data: DataOption = None, board: BoardOption = None) -> None:
    """Remove a device from the site and forget its provisioning credential."""
    bare = _mac(mac)
    _change_site(lambda: unassign_device(_store(data, board), bare))
    out.print(f"{colon_mac(bare)} unassigned; it gets only the bootstrap configuration from now on.")


def _change_site(change: Callable[[], object]) -> None:
    try:
        change()
    except EditError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    except SiteError as exc:
        report(exc, as_json=False)
        raise typer.Exit(1) from None


@enrol_app.command("open")
def enrol_open(
    minutes: Annotated[float, typer.Option(min=1, max=24 * 60, help="How long the window stays open")] = 30,
    mac: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MAC",
            help="Only this assigned device (repeatable); re-enrols it, e.g. after a factory reset",
        ),
    ] = None,
    data: DataOption = None,
    board: BoardOption = None,
) -> None:
    """Let assigned phones fetch their configuration (with their SIP passwords) for a while.
    Opening while a window is open widens it (both windows' phones, until the later end);
    nothing that was open closes early."""
    macs = [_mac(m) for m in mac] if mac else None
    store = _store(data, board)
    if stray := not_in_site(store, macs or []):
        err.print(
            f"{', '.join(colon_mac(m) for m in stray)}: not assigned in the site, so no enrolment "
            "window may name it; assign it first (vaxelbox phones assign MAC USER)"
        )
        raise typer.Exit(1)
    before = store.devices.enrolment()
    window = store.devices.open_enrolment(minutes, macs)
    out.print(f"Enrolment open until {_when(window.until)} for {_scope(window.macs)}.")
    if before is not None and before.until > time.time():
        out.print(f"It widened the window that was open for {_scope(before.macs)}: nothing closes early.")


def _scope(macs: frozenset[str] | None) -> str:
    return ", ".join(colon_mac(m) for m in sorted(macs)) if macs else "every assigned phone"


@enrol_app.command("close")
def enrol_close(data: DataOption = None, board: BoardOption = None) -> None:
    """Close the enrolment window now."""
    _store(data, board).devices.close_enrolment()
    out.print("Enrolment closed.")


@enrol_app.command("status")
def enrol_status(data: DataOption = None, board: BoardOption = None, as_json: JsonOption = False) -> None:
    """Whether the window is open, until when, for whom."""
    window = _store(data, board).devices.enrolment()
    is_open = window is not None and window.until > time.time()
    result = {
        "open": is_open,
        "until": _when(window.until) if window and is_open else None,
        "macs": sorted(colon_mac(m) for m in window.macs) if window and window.macs else None,
    }
    if as_json:
        out.print_json(json.dumps(result))
    elif not is_open:
        out.print("Enrolment closed.")
    else:
        scope = ", ".join(result["macs"] or ["every assigned phone"])
        out.print(f"Enrolment open until {result['until']} for {scope}.")
