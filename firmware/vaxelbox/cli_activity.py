"""`vaxelbox activity`: see and set users' activities (hänvisning) on the appliance.

An activity forwards a user's calls per its profile while the appliance runs
the office locally (VIP callers ring through); it ends by itself at its end
time. Phones set them with the star code *24* (to come, issue 10); support
and installers set them here. It works on the store beside a running agent.
"""

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from vaxelbox.cli_console import console
from vaxelbox.cli_provisioning import WHICH_STORE, DataOption, agent_data_dir
from vaxelbox.site import SiteError, parse_site
from vaxelbox.site.model import Activity, Site, User
from vaxelbox.store import Store
from vaxelbox.tables import print_table

activity_app = typer.Typer(help=f"Users' activities (hänvisning): the active ones, set, clear. {WHICH_STORE}")
out = console(soft_wrap=True, markup=False)


def _open(data: Path | None) -> tuple[Store, Site]:
    store = Store(agent_data_dir(data, None))
    active = store.sites.active()
    if active is None:
        raise typer.BadParameter("no site yet: start the agent once (vaxelbox run)")
    try:
        return store, parse_site(active.source, f"site version {active.number}")
    except SiteError as exc:
        raise typer.BadParameter(str(exc)) from None


def _user(site: Site, user_id: str) -> User:
    user = next((u for u in site.users if u.id == user_id), None)
    if user is None:
        raise typer.BadParameter(f"no user {user_id!r} in the site ({', '.join(u.id for u in site.users)})")
    return user


def _profile(user: User, text: str) -> Activity:
    found = next((a for a in user.activities if text in (a.id, str(a.number))), None)
    if found is None:
        names = ", ".join(f"{a.number} {a.id}" for a in user.activities) or "none"
        raise typer.BadParameter(f"{user.id} has no activity {text!r} (profiles: {names})")
    return found


@activity_app.callback(invoke_without_command=True)
def activities(ctx: typer.Context, data: DataOption = None) -> None:
    """List the active activities."""
    if ctx.invoked_subcommand is not None:
        return
    store, _ = _open(data)
    rows = [
        [a.user, a.activity, _clock(a.until) if a.until else "further notice", a.origin]
        for a in store.users.activities()
        if a.until is None or a.until > time.time()
    ]
    print_table(out, f"Active activities ({len(rows)})", ["user", "activity", "until", "set by"], rows,
                whole={"user"})  # fmt: skip


@activity_app.command("set")
def set_activity(
    user_id: Annotated[str, typer.Argument(metavar="USER", help="The user's id in the site")],
    profile: Annotated[
        str, typer.Argument(metavar="PROFILE", help="The activity's id or number, e.g. lunch or 1")
    ],
    minutes: Annotated[int | None, typer.Option(help="How long (default: the profile's length)")] = None,
    data: DataOption = None,
) -> None:
    """Switch on an activity for a user, until it ends by itself."""
    store, site = _open(data)
    user = _user(site, user_id)
    chosen = _profile(user, profile)
    length = chosen.default_minutes if minutes is None else minutes
    until = time.time() + 60 * length if length else None
    store.users.set_activity(user.id, chosen.id, until, "vaxelbox activity")
    end = _when(until) if until else "until further notice"
    out.print(f"{user.id}: {chosen.name} ({chosen.id}) {end}; calls go to {chosen.forward} in local mode.")


@activity_app.command("clear")
def clear_activity(
    user_id: Annotated[str, typer.Argument(metavar="USER", help="The user's id in the site")],
    data: DataOption = None,
) -> None:
    """Back to available."""
    store, site = _open(data)
    user = _user(site, user_id)
    ended = store.users.clear_activity(user.id)
    out.print(f"{user.id}: available" + ("" if ended else " (had no activity)"))


def _when(stamp: float) -> str:
    return "until " + _clock(stamp)


def _clock(stamp: float) -> str:
    """Local time to the minute, e.g. `2026-11-30 14:05` (the table's column says "until")."""
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
