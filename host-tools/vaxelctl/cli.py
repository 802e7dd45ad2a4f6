"""`vaxelctl`: the installer's whole interface to the appliance.

Today it validates site files on the laptop, before they go anywhere; talking
to an appliance over CoAP (discover, pair, push) joins it with management.
"""

from pathlib import Path
from typing import Annotated

import typer
from vaxelbox import __version__
from vaxelbox.site import check_site_file

app = typer.Typer(help="Manage Vaxelbox appliances.", no_args_is_help=True, add_completion=False)
site_app = typer.Typer(help="Site files: the office's users, phones, groups and hours.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("validate")
def validate(
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result")] = False,
) -> None:
    """Check a site file on this laptop, exactly as the appliance will. Exit 0 if valid, 1 if not."""
    if not check_site_file(file, as_json):
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        print(f"vaxelctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    pass


def main() -> None:
    app()
