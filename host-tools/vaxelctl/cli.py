"""`vaxelctl`: the installer's whole interface to the appliance.

It validates site files on the laptop before they go anywhere, prints DHCP
hints for the office router, and manages appliances over CoAP with OSCORE
(vaxelctl.remote): discover, pair, status, site, phones, enrolment, firmware.
"""

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from phoneprov.context import Appliance
from phoneprov.dhcp import dnsmasq, hints, isc_dhcpd
from phoneprov.vendors import load_vendors
from rich.console import Console
from vaxelbox import __version__
from vaxelbox.site import check_site_file
from vaxelbox.tables import print_table

from vaxelctl import files
from vaxelctl.client import ClientError
from vaxelctl.remote import JsonOption, register, register_site

app = typer.Typer(help="Manage Vaxelbox appliances.", no_args_is_help=True, add_completion=False)
site_app = typer.Typer(help="Site files: the office's users, phones, groups and hours.", no_args_is_help=True)
app.add_typer(site_app, name="site")
register(app)
register_site(site_app)


@site_app.command("validate")
def validate(
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result")] = False,
) -> None:
    """Check a site file on this laptop, exactly as the appliance will. Exit 0 if valid, 1 if not
    (2 if it cannot be read: a mistyped name is a usage error, as in every vaxelctl command)."""
    files.read_text(file, "site file")
    if not check_site_file(file, as_json):
        raise typer.Exit(1)


@app.command("dhcp-hints")
def dhcp_hints(
    appliance: Annotated[str, typer.Argument(help="The appliance's LAN address, e.g. 192.0.2.1")],
    http_port: Annotated[int, typer.Option(help="Its provisioning HTTP port")] = 80,
    https_port: Annotated[int, typer.Option(help="Its provisioning HTTPS port")] = 443,
    output: Annotated[
        str, typer.Option("--format", help="table, dnsmasq or isc (ISC dhcpd), or json")
    ] = "table",
    as_json: JsonOption = False,
) -> None:
    """What the office's DHCP server should hand each vendor's phones: it emits options 66, 160 and
    114; option 43 is vendor-encoded, so it is not emitted, and the notes say where a vendor reads it."""
    if as_json:
        output = "json"
    try:
        ipaddress.ip_address(appliance)
    except ValueError:
        raise typer.BadParameter(f"{appliance!r} is not an IP address", param_hint="APPLIANCE") from None
    found = hints(load_vendors(), Appliance(appliance, 5060, http_port, https_port))
    if output == "dnsmasq":
        print(dnsmasq(found), end="")
    elif output == "isc":
        print(isc_dhcpd(found), end="")
    elif output == "json":
        rows = [
            {
                "vendor": h.vendor.id,
                "vendor_class": h.vendor_class,
                "options": h.options,
                "notes": h.vendor.dhcp.notes,
            }
            for h in found
        ]
        print(json.dumps(rows, indent=2))
    elif output == "table":
        rows = [
            [
                h.vendor.name,
                h.vendor_class,
                "\n".join(f"{n}: {v}" for n, v in h.options.items()),
                h.vendor.dhcp.notes,
            ]
            for h in found
        ]
        columns = ["vendor", "option 60 starts with", "options", "notes"]
        print_table(
            Console(soft_wrap=True, markup=False),
            "DHCP hints",
            columns,
            rows,
            whole={"option 60 starts with"},
        )
        print("Snippets: --format dnsmasq or --format isc")
    else:
        raise typer.BadParameter("table, dnsmasq, isc or json", param_hint="--format")


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
    """vaxelctl's entry point. With --json every error is also JSON on stdout, usage errors included;
    a ClientError that escaped a command still ends as its one line and exit code, never a traceback."""
    as_json = "--json" in sys.argv[1:]
    try:
        result = app(standalone_mode=not as_json)
    except SystemExit as exc:
        if exc.code == 130:  # Ctrl-C: the command said its one line; leave now, before the interpreter's
            sys.stdout.flush()  # shutdown can print leftovers of the interrupted asyncio tasks
            sys.stderr.flush()
            os._exit(130)
        raise
    except ClientError as exc:
        failed(str(exc), exc.exit_code, as_json)
    except typer.Abort:
        failed("aborted", 1, as_json)
    except Exception as exc:
        # click's ClickException (usage errors, exit 2), however typer packages click
        if not hasattr(exc, "format_message") or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        exc.show()  # type: ignore[attr-defined]
        failed(exc.format_message(), exc.exit_code, as_json, shown=True)  # type: ignore[attr-defined]
    if result == 130:  # Ctrl-C under --json: the same quiet exit as above
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def failed(message: str, exit_code: int, as_json: bool, shown: bool = False) -> NoReturn:
    """`vaxelctl: message` on stderr (unless `shown` already), with --json also
    {"error": message, "exit_code": N} on stdout; then exit."""
    if not shown:
        print(f"vaxelctl: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": exit_code}, ensure_ascii=False))
    sys.exit(exit_code)
