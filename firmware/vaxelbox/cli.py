"""`vaxelbox`: the agent's command line (run it, check files, print the demo site and schemas)."""

import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from vaxelbox import __version__
from vaxelbox.agent.command import EXIT_USAGE, RunFlags, refusals, run_agent
from vaxelbox.cli_activity import activity_app
from vaxelbox.cli_console import console
from vaxelbox.cli_factory_reset import HELP as FACTORY_RESET_HELP
from vaxelbox.cli_factory_reset import factory_reset
from vaxelbox.cli_provisioning import (
    WHICH_STORE,
    BoardOption,
    DataOption,
    agent_data_dir,
    enrol_app,
    phones_app,
)
from vaxelbox.hw.board import Board, BoardError, load_board
from vaxelbox.mgmt.security import PairingSecret
from vaxelbox.problems import report
from vaxelbox.site import Site, check_site_file, demo_site_text
from vaxelbox.site.holidays import swedish_holidays
from vaxelbox.tables import print_table

app = typer.Typer(
    help="Vaxelbox agent: office edge appliance for cloud PBX customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(phones_app, name="phones")
app.add_typer(enrol_app, name="enrol")
app.add_typer(activity_app, name="activity")
fw_app = typer.Typer(
    help="This board's firmware slots (vaxelctl fw updates an appliance).", no_args_is_help=True
)
app.add_typer(fw_app, name="fw")
# Printed as it is: a '[' in data (a phone's User-Agent, a log line) is not rich markup.
out = console(soft_wrap=True, markup=False)
err = console(stderr=True, soft_wrap=True, markup=False)

EXIT_INVALID = 1  # the file checked is not valid


@app.command()
def run(
    site: Annotated[Path | None, typer.Option(help="Site file, applied at start and on SIGHUP")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data directory (default: board's, else user state)")
    ] = None,
    board: Annotated[Path | None, typer.Option(help="Board file, e.g. boards/rpi-4b.yaml")] = None,
    lan: Annotated[str | None, typer.Option(help="LAN address HOST:PORT (default: board's LAN)")] = None,
    lan_tls_port: Annotated[
        int | None, typer.Option(help="SIP over TLS for phones, on the LAN host (default: LAN port + 1)")
    ] = None,
    cloud: Annotated[str | None, typer.Option(help="Cloud proxy SIP URI, overriding the site's")] = None,
    wan: Annotated[
        str | None, typer.Option(help="WAN address HOST:PORT the cloud reaches (default: board's WAN)")
    ] = None,
    sip_rate_limit: Annotated[
        float, typer.Option(help="SIP messages per second allowed from one phone address; 0 = no limit")
    ] = 200.0,
    http_port: Annotated[
        int | None, typer.Option(help="Provisioning HTTP port (board: 80, else 8080)")
    ] = None,
    https_port: Annotated[
        int | None, typer.Option(help="Provisioning HTTPS port (board: 443, else 8443)")
    ] = None,
    https_cert: Annotated[
        Path | None, typer.Option(help="Your HTTPS certificate chain (PEM) instead of the site CA's")
    ] = None,
    https_key: Annotated[Path | None, typer.Option(help="The key of --https-cert (PEM)")] = None,
    coap_port: Annotated[int, typer.Option(help="Management port (CoAP over UDP and TCP)")] = 5683,
    fw_key: Annotated[
        Path | None, typer.Option(help="Ed25519 public key (PEM) firmware bundles must be signed with")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR or CRITICAL")] = "INFO",
    log_format: Annotated[str, typer.Option(help="auto (human on a terminal), human or json")] = "auto",
) -> None:
    """Run the agent. Without --site it runs the stored site, or the demo office on first start."""
    # `python -m vaxelbox run` and the installed `vaxelbox run` come here only when plain_run
    # left their flags to typer (vaxelbox.__main__); both run the same run_agent.
    flags = RunFlags(
        site=site, data=data, board=board, lan=lan, lan_tls_port=lan_tls_port, cloud=cloud, wan=wan,
        sip_rate_limit=sip_rate_limit, http_port=http_port, https_port=https_port, https_cert=https_cert,
        https_key=https_key, coap_port=coap_port, fw_key=fw_key, log_level=log_level, log_format=log_format,
    )  # fmt: skip
    if refused := next(refusals(flags), None):  # the first, as typer reports a value it cannot read
        flag, why = refused
        raise typer.BadParameter(why, param_hint=flag)
    if code := run_agent(flags):
        raise typer.Exit(code)


@app.command("check-site")
def check_site(
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result")] = False,
) -> None:
    """Validate a site file without running anything. Exit 0 if valid, 1 if not."""
    if not check_site_file(file, as_json):
        raise typer.Exit(EXIT_INVALID)


@app.command("check-board")
def check_board(file: Path) -> None:
    """Validate a board file. Exit 0 if valid, 1 if not."""
    try:
        board = load_board(file)
    except BoardError as exc:
        report(exc, as_json=False)
        raise typer.Exit(EXIT_INVALID) from None
    out.print(f"{file}: OK — {board.description} (LAN {board.interfaces.lan}, WAN {board.wan_interface})")


PAIRING_CODE_HELP = (
    "Show this appliance's pairing code (a board has it on its label): vaxelctl pair asks for it."
)


@app.command("pairing-code", help=f"{PAIRING_CODE_HELP} {WHICH_STORE}")
def pairing_code(data: DataOption = None, board: BoardOption = None) -> None:
    directory = agent_data_dir(data, board) / "mgmt"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.print(PairingSecret(directory).code)


@app.command("demo-site")
def demo_site() -> None:
    """Print the embedded demo site: a starting point for a real one."""
    sys.stdout.write(demo_site_text())


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="site or board")] = "site") -> None:
    """Print the JSON Schema of site or board files, for editors."""
    models: dict[str, type[Site] | type[Board]] = {"site": Site, "board": Board}
    if kind not in models:
        err.print(f"unknown schema {kind!r}: site or board")
        raise typer.Exit(EXIT_USAGE)
    sys.stdout.write(json.dumps(models[kind].model_json_schema(), indent=2, ensure_ascii=False) + "\n")


@app.command()
def holidays(year: Annotated[int | None, typer.Argument(help="Default: this year")] = None) -> None:
    """List the Swedish public holidays and de-facto closed days that schedules close on."""
    year = year or date.today().year
    rows = [
        [
            day.day.isoformat(),
            day.day.strftime("%a"),
            day.name,
            "public holiday" if day.public else "de-facto closed",
        ]
        for day in swedish_holidays(year)
    ]
    print_table(out, f"Closed days {year}", ["date", "day", "name", "kind"], rows, whole={"date"})


@fw_app.command("trial-failed")
def fw_trial_failed(
    board: Annotated[Path, typer.Option(help="Board file, e.g. /etc/vaxelbox/board.yaml")],
    data: Annotated[Path | None, typer.Option(help="Data directory (default: the board's)")] = None,
) -> None:
    """What systemd runs once the agent failed for good (OnFailure=): an update on trial is rolled
    back (its slot marked bad, the board restarted into the previous one); otherwise nothing."""
    from vaxelbox.update.trial import trial_failed_command  # the slots' code only when asked

    status, line = trial_failed_command(board, data, os.environ)
    (err if status else out).print(line)
    raise typer.Exit(status)


app.command(
    "factory-reset",
    help=f"{FACTORY_RESET_HELP}{WHICH_STORE}",
    short_help="Wipe the appliance's state, keep its serial and pairing code (asks first).",
)(factory_reset)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"vaxelbox {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version")
    ] = False,
) -> None:
    pass


def main() -> None:
    """The `vaxelbox` command line, every command through typer (vaxelbox.__main__ first starts
    a plain `run` without it)."""
    app()
