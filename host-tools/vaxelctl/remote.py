"""vaxelctl's commands that talk to an appliance over CoAP (OSCORE): pair, status, site, phones,
enrolment, registrations, calls, presence, log, mode, firmware, installers."""

import asyncio
import difflib
import getpass
import hashlib
import json
import platform
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from aiocoap import Code, Message
from aiocoap.numbers import ContentFormat
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from phoneprov.device import installer_mac
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from vaxelbox.bundle import BundleError, Header, pack, read_header
from vaxelbox.cli_help import plain_flags
from vaxelbox.hw.board import load_board
from vaxelbox.outlook import assigned_outlook
from vaxelbox.site.mark import SITE_MARK
from vaxelbox.site.mark import site_mark as mark_line
from vaxelbox.tables import print_table
from vaxelbox.update import slots

from vaxelctl import files
from vaxelctl.client import (
    COAP_PORT,
    EXIT_FAILED,
    EXIT_NOT_PAIRED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ClientError,
    Connection,
    Paired,
    Pairing,
    choose,
    decode,
    pair,
    paired_before_at,
    split_host_port,
)
from vaxelctl.discovery import discover_appliances

# Printed as it is: a '[' in data (a phone's User-Agent, a log line) is not rich markup. So nothing
# printed on them may rely on markup either (a Progress column is a TextColumn with markup=False).
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

ApplianceOption = Annotated[
    str | None,
    typer.Option("--appliance", "-a", help="HOST, HOST:PORT or serial (default: the only paired one)"),
]
# The board files of the tree vaxelctl runs from (`fw pack` checks --board against their names).
BOARDS = Path(__file__).resolve().parents[2] / "boards"
json_errors = False  # the running command has --json: its errors go to stdout as JSON too


def _json_wanted(value: bool) -> bool:
    """--json's callback (eager, so it is known before any other option can fail)."""
    global json_errors
    json_errors = value  # the innermost command's value wins; a group's reaches it as its default
    return value


JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output", callback=_json_wanted, is_eager=True)
]
FW_STATES = {0: "idle", 1: "downloading", 2: "downloaded", 3: "updating"}
FW_RESULTS = {
    0: "none",  # LwM2M: initial value
    1: "success",
    2: "not enough space",
    3: "out of memory",
    4: "connection lost",
    5: "integrity check failed",
    6: "unsupported package",
    7: "invalid URI",
    8: "update failed",
    9: "unsupported protocol",
}


def run(work: Callable[[], Awaitable[Any]]) -> Any:
    """Run one command; a ClientError becomes its one line on stderr (and JSON) and its exit code;
    Ctrl-C ends it with exit code 130 (see `_until_interrupted`)."""
    try:
        return asyncio.run(_until_interrupted(work))
    except ClientError as exc:
        fail(str(exc), exc.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(130) from None


RECANCEL = 0.05  # s between cancellations of a command after Ctrl-C, until it has ended


async def _until_interrupted(work: Callable[[], Awaitable[Any]]) -> Any:
    """`work`, cancelled on Ctrl-C, and again every RECANCEL s until it has ended.

    asyncio.run cancels only once, and Python 3.11's wait_for swallows a cancellation that arrives
    as the awaited answer does (CPython gh-86296, fixed in 3.12): that Ctrl-C went unheard and the
    command ran on (an upload sends its next block and waits for an answer the installer no longer
    wants). A second Ctrl-C raises KeyboardInterrupt at once.

    Started with SIGINT ignored (in the background of a script, under nohup) it stays ignored,
    as asyncio.run leaves it: that Ctrl-C is for the foreground command."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    if task is None or threading.current_thread() is not threading.main_thread():
        return await work()  # run from a thread (tests): signals reach only the main one
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        return await work()

    def cancel_until_done() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(RECANCEL, cancel_until_done)

    def interrupted() -> None:
        loop.add_signal_handler(signal.SIGINT, _interrupt_now)
        cancel_until_done()

    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        return await work()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _interrupt_now() -> NoReturn:
    raise KeyboardInterrupt


def fail(message: str, exit_code: int) -> NoReturn:
    """End the command: `vaxelctl: message` on stderr and, under --json, on stdout
    {"error": message, "exit_code": exit_code}, so a script reading stdout learns why."""
    err.print(f"vaxelctl: {message}", highlight=False, markup=False)
    if json_errors:
        print(json.dumps({"error": message, "exit_code": exit_code}, ensure_ascii=False))
    raise typer.Exit(exit_code)


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        human(data)


# Columns an installer copies from: never broken (WHOLE), or broken only between words (WORDS).
WHOLE = {"mac", "aor", "serial", "address", "id", "name"}
WORDS = {"assigned", "origin", "users"}


def table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    """Rows as a table fitted to the terminal: a MAC, a user or an id is never cut or folded."""
    headers = [column.replace("_", " ") for column in columns]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    whole = {h for h, c in zip(headers, columns, strict=True) if c in WHOLE}
    words = {h for h, c in zip(headers, columns, strict=True) if c in WORDS}
    print_table(out, title, headers, cells, whole, words)


def _cell(value: Any) -> str:
    """A value as a table shows it; a time with a space, so a narrow column wraps it there."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value > 1e9:
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    return str(value)


def pass_down(ctx: typer.Context) -> None:
    """A group's options (-a, --json) become its subcommands' defaults: `phones -a HOST assign ...`
    means `phones assign -a HOST ...`; an option given to the subcommand itself still wins."""
    given = {name: value for name, value in ctx.params.items() if value not in (None, False)}
    ctx.default_map = {name: dict(given) for name in getattr(ctx.command, "commands", {})}


def group_options(ctx: typer.Context, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """-a and --json given to a group (`vaxelctl enrol -a HOST open`) reach its subcommands."""
    pass_down(ctx)


def register(app: typer.Typer) -> None:
    """Add the appliance commands to vaxelctl's app."""
    plain_flags()
    app.command()(discover)
    app.command("pair")(pair_command)
    app.command()(forget)
    app.command()(status)
    names = ("registrations", "calls", "journal", "presence")
    for name, path in ((n, n) for n in names):
        app.command(name, help=f"The appliance's {name} (observe with --watch).")(_snapshot_command(path))
    app.command()(log)
    app.command()(mode)
    phones_app = typer.Typer(help="Devices the appliance has seen; assign them to users.")
    phones_app.callback(invoke_without_command=True)(phones)
    phones_app.command("assign")(phones_assign)
    phones_app.command("unassign")(phones_unassign)
    app.add_typer(phones_app, name="phones")
    enrol_app = typer.Typer(help="The enrolment window: when assigned phones may fetch their secrets.")
    enrol_app.callback()(group_options)
    enrol_app.command("open")(enrol_open)
    enrol_app.command("close")(enrol_close)
    enrol_app.command("status")(enrol_status)
    app.add_typer(enrol_app, name="enrol")
    fw_app = typer.Typer(help="Firmware bundles: upload (signed, streamed) and state.")
    fw_app.callback()(group_options)
    fw_app.command("upload")(fw_upload)
    fw_app.command("status")(fw_status)
    fw_app.command("apply")(fw_apply)
    fw_app.command("pack")(fw_pack)
    fw_app.command("keygen")(fw_keygen)
    app.add_typer(fw_app, name="fw")
    installers_app = typer.Typer(help="Installers paired with the appliance.")
    installers_app.callback(invoke_without_command=True)(installers)
    installers_app.command("revoke")(installers_revoke)
    app.add_typer(installers_app, name="installers")


def register_site(site_app: typer.Typer) -> None:
    site_app.callback()(group_options)
    site_app.command("pull")(site_pull)
    site_app.command("push")(site_push)
    site_app.command("diff")(site_diff)
    site_app.command("versions")(site_versions)
    site_app.command("rollback")(site_rollback)


# --- discovery and pairing ---------------------------------------------------------------


def discover(
    timeout: Annotated[float, typer.Option(help="Seconds to listen")] = 3.0,
    interface: Annotated[
        str | None, typer.Option(help="Listen on this local address only (default: every interface)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find appliances on this LAN (mDNS)."""
    found = run(lambda: discover_appliances(timeout, interface))
    emit(
        found,
        as_json,
        lambda rows: (
            table(rows, ["serial", "address", "port", "model", "firmware"], f"Appliances ({len(rows)})")
            if rows
            else err.print("no appliance answered: same LAN? (vaxelctl pair HOST works without discovery)")
        ),
    )
    if not found:
        raise typer.Exit(EXIT_UNREACHABLE)


def pair_command(
    appliance: Annotated[str, typer.Argument(help="The appliance's address, HOST or HOST:PORT")],
    code: Annotated[
        str | None, typer.Option(help="The pairing code from its label (asked for if not given)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="How the appliance lists you")] = None,
    as_json: JsonOption = False,
) -> None:
    """Pair this laptop with an appliance, using the pairing code on its label. Pairing again with
    the same appliance revokes this laptop's earlier installer there (one entry per laptop)."""
    try:
        host, port = split_host_port(appliance)
    except ClientError as exc:
        fail(str(exc), exc.exit_code)
    code = code or typer.prompt("Pairing code (on the label)")
    label = name or f"{getpass.getuser()}@{platform.node()}"
    pairing: Pairing = run(lambda: pair(host, port or COAP_PORT, code, label))
    emit(_paired_row(pairing, label), as_json, _show_paired)
    replaced = pairing.replaced
    if replaced is not None and replaced.error is not None:  # paired all the same: say what is left
        err.print(
            f"vaxelctl: this laptop's earlier installer {replaced.installer} is still listed "
            f"({replaced.error}): vaxelctl installers revoke {replaced.installer}",
            highlight=False,
        )
    for before in paired_before_at(pairing.paired):
        err.print(
            f"vaxelctl: {before.serial} was paired at {before.address} too, where {pairing.paired.serial} "
            f"answers now: if it was reset or replaced, vaxelctl forget {before.serial}",
            highlight=False,
        )


def _paired_row(pairing: Pairing, name: str) -> dict[str, Any]:
    """pair's result: the appliance, this laptop's installer ID and name, and what became of this
    laptop's earlier installer there (`replaced`: None, or {installer, revoked[, error]})."""
    paired, replaced = pairing.paired, pairing.replaced
    earlier = None if replaced is None else {"installer": replaced.installer, "revoked": replaced.revoked}
    if replaced is not None and replaced.error is not None:
        earlier = {**(earlier or {}), "error": replaced.error}
    return {
        "serial": paired.serial,
        "host": paired.host,
        "port": paired.port,
        "address": paired.address,
        "name": name,
        "installer": pairing.installer,
        "replaced": earlier,
    }


def _show_paired(r: dict[str, Any]) -> None:
    out.print(f"Paired with {r['serial']} at {r['address']} as {r['name']} (installer {r['installer']}).")
    earlier = r["replaced"]
    if earlier is not None and "error" not in earlier:
        done = "is revoked" if earlier["revoked"] else "was already revoked"
        out.print(
            f"This laptop's earlier pairing with {r['serial']} (installer {earlier['installer']}) {done}."
        )


def forget(
    appliance: Annotated[str, typer.Argument(help="The paired appliance: its serial, HOST or HOST:PORT")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    as_json: JsonOption = False,
) -> None:
    """Forget a paired appliance: delete this laptop's pairing with it (its OSCORE keys)."""
    try:
        paired = choose(appliance)
    except ClientError as exc:
        if exc.exit_code == EXIT_NOT_PAIRED:
            fail(f"not paired with {appliance}: nothing to forget", EXIT_NOT_PAIRED)
        fail(str(exc), exc.exit_code)
    where = f"{paired.serial} at {paired.host}:{paired.port}"
    if not yes and not confirm(f"Forget {where}? Managing it again needs its pairing code."):
        fail("nothing forgotten", EXIT_FAILED)
    installer = json.loads((paired.directory / "appliance.json").read_text()).get("installer")
    shutil.rmtree(paired.directory)
    result = {"forgotten": paired.serial, "host": paired.host, "port": paired.port, "installer": installer}

    def human(r: dict[str, Any]) -> None:
        out.print(f"Forgot {where}.", highlight=False)
        out.print(
            f"It still lists installer {r['installer']}: another laptop can revoke it with", highlight=False
        )
        out.print(f"vaxelctl installers revoke {r['installer']}", highlight=False)

    emit(result, as_json, human)


def confirm(question: str) -> bool:
    """Ask on stderr, so stdout stays clean for --json; only y or yes agrees, no answer (EOF) is no."""
    err.print(f"{question} [y/N] ", end="", highlight=False, markup=False)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


# --- state -----------------------------------------------------------------------------------


async def _get(appliance: str | None, path: str) -> Any:
    async with Connection(choose(appliance)) as connection:
        return await connection.call(Code.GET, path)


async def _watch(appliance: str | None, path: str, show: Callable[[Any], None]) -> None:
    async with Connection(choose(appliance)) as connection:
        async for state in connection.observe(path):
            show(state)


def status(appliance: ApplianceOption = None, watch: bool = False, as_json: JsonOption = False) -> None:
    """Cloud state, mode, phones, registrations and recent errors (--watch: follow changes)."""

    def show(state: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(state), flush=True)
            return
        phones = state["phones"]
        out.print(
            f"cloud {state['cloud']}, mode {state['mode']}, site version {state['site_version']}, "
            f"phones {phones['in_site']} in site / {phones['seen']} seen / {phones['enrolled']} enrolled, "
            f"registrations {state['registrations']}"
        )
        if state.get("mode_since"):
            out.print(f"  mode {state['mode']} since {state['mode_since']}: {state['mode_reason']}")
        if state.get("back_online_at"):  # an older appliance does not say
            out.print(f"  back online at {state['back_online_at']} if the cloud keeps answering")
        if state.get("site_warning"):
            out.print(f"  warning: {state['site_warning']}", highlight=False)
        for error in state["last_errors"]:
            out.print(f"  error at {error['at']}: {error['event']}")
        for alarm in state.get("alarms", []):  # an older appliance has none
            out.print(_fitted(_alarm_line(alarm)), highlight=False)
        if state.get("companion"):  # a board with a companion microcontroller
            out.print(_fitted(_companion_line(state["companion"])), highlight=False)
        if line := _load_line(state.get("sip_load")):  # an older appliance has none
            out.print(_fitted(line), highlight=False)

    if watch:
        run(lambda: _watch(appliance, "status", show))
    else:
        show(run(lambda: _get(appliance, "status")))


def _alarm_line(alarm: dict[str, Any]) -> str:
    """One alarm of vaxelctl status; an auth-held phone names its address, MAC, user and the hold, a
    companion its device and fault; another kind (a newer appliance's) its fields, key: value."""
    if alarm.get("kind") == "companion":
        return f"  alarm: companion on {alarm['device']} since {alarm['since']}: {alarm['fault']}"
    if alarm.get("kind") != "auth-held":
        fields = ", ".join(f"{key}: {value}" for key, value in alarm.items() if key != "kind")
        return f"  alarm: {alarm.get('kind', 'unknown')}: {fields}"
    mac = f" (MAC {alarm['mac']})" if alarm.get("mac") else ""
    return (
        f"  alarm: phone {alarm['phone']}{mac} of user {alarm['user']} held until {alarm['until']}:"
        f" the cloud refused its password too often ({alarm['suppressed']} attempts answered here)"
    )


def _fitted(line: str) -> str:
    """`line` (indented by two) wrapped at the terminal's width, continued four spaces in; a word
    longer than a line (a device path) is never broken."""
    return textwrap.fill(
        line.strip(), width=max(out.width, 40), initial_indent="  ", subsequent_indent="    ",
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip


def _load_line(load: dict[str, Any] | None) -> str | None:
    """Overload control's state, only once it has refused something, e.g. "  SIP overloaded now:
    1520 new requests refused with 503 since start (2 episodes); 840 of 26214 transactions"."""
    if not load or not (load["refused_overload"] or load["refused_full"] or load["overloaded"]):
        return None
    now = "overloaded now" if load["overloaded"] else "not overloaded now"
    refused = load["refused_overload"] + load["refused_full"]
    full = f", {load['refused_full']} at the ceiling" if load["refused_full"] else ""
    return (
        f"  SIP {now}: {refused} new requests refused with 503 since start "
        f"({load['overload_episodes']} episodes{full}); "
        f"{load['transactions']} of {load['transaction_ceiling']} transactions"
    )


def _companion_line(companion: dict[str, Any]) -> str:
    """The companion microcontroller's state and telemetry (vaxelbox.hw.companion's status), e.g.
    "  companion ok: supply 4.99 V, 27.6 °C, 0 board resets, 0 bad frames"."""
    telemetry = companion.get("telemetry")
    if telemetry is None:
        return f"  companion {companion['state']}: no telemetry yet"
    resets = telemetry["board_resets"]
    last = f" (last: {telemetry['last_reset_reason']})" if resets else ""
    bad = telemetry["frames_corrupt"] + telemetry["frames_unknown"]
    safe = "; safe state: it resets the board no more" if telemetry["safe_state"] else ""
    return (
        f"  companion {companion['state']}: supply {telemetry['supply_v']:.2f} V, "
        f"{telemetry['temperature_c']:.1f} °C, {resets} board reset{'s' * (resets != 1)}{last}, "
        f"{bad} bad frame{'s' * (bad != 1)}{safe}"
    )


def _snapshot_command(path: str) -> Callable[..., None]:
    def command(appliance: ApplianceOption = None, watch: bool = False, as_json: JsonOption = False) -> None:
        def show(state: Any) -> None:
            if as_json:
                print(json.dumps(state), flush=True)
            elif isinstance(state, list) and not state:
                out.print(f"{path}: none")
            elif path == "journal":
                _show_journal(state)
            elif isinstance(state, list):
                table(state, list(state[0]), f"{path} ({len(state)})")
            elif not state.get("available", True):
                out.print(f"{path}: not available yet ({state['reason']})")
            elif path == "calls":
                _show_calls(state)
            elif path == "presence":
                _show_presence(state)
            else:
                out.print(state)

        if watch:
            run(lambda: _watch(appliance, path, show))
        else:
            show(run(lambda: _get(appliance, path)))

    command.__name__ = path
    return command


def _show_journal(entries: list[dict[str, Any]]) -> None:
    """Star codes users dialled while local, and what the cloud answered at the replay."""
    columns = ["id", "user", "code", "at", "state", "answer"]
    rows = [{**e, "at": datetime.fromtimestamp(e["at"]).strftime("%Y-%m-%d %H:%M:%S")} for e in entries]
    table(rows, columns, f"Journal ({len(entries)})")


def _show_calls(state: dict[str, Any]) -> None:
    calls = state["calls"]
    if not calls:
        out.print(f"calls: none (mode {state['mode']})")
        return
    columns = ["caller", "callee", "state", "mode", "route", "started"]
    table(
        [{c: call[c] for c in columns} for call in calls],
        columns,
        f"Calls ({len(calls)}), mode {state['mode']}",
    )


def _show_presence(state: dict[str, Any]) -> None:
    """What the busy lamps show for each user, and their activity (hänvisning) until when."""
    rows = state["presence"]
    if not rows:
        out.print(f"presence: no users (mode {state['mode']})")
        return
    columns = ["user", "extension", "line", "activity", "until", "watchers", "cloud"]
    table(rows, columns, f"Presence ({len(rows)} users), mode {state['mode']}")


def log(
    appliance: ApplianceOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events")] = False,
    as_json: JsonOption = False,
) -> None:
    """Recent events on the appliance (secrets redacted)."""
    seen = 0

    def show(records: list[dict[str, Any]]) -> None:
        nonlocal seen
        for record in records:
            if record["n"] <= seen:
                continue
            seen = record["n"]
            if as_json:
                print(json.dumps(record), flush=True)
                continue
            extra = " ".join(
                f"{k}={v}"
                for k, v in record.items()
                if k not in ("n", "event", "level", "logger", "timestamp")
            )
            when, level, event = record.get("timestamp", ""), record.get("level", ""), record.get("event", "")
            out.print(f"{when} {level:7} {event} {extra}", highlight=False)

    if follow:
        run(lambda: _watch(appliance, "log", show))
    else:
        show(run(lambda: _get(appliance, "log")))


def mode(
    new_mode: Annotated[str | None, typer.Argument(metavar="[auto|local]", help="Set the mode")] = None,
    appliance: ApplianceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the operating mode, or force local mode for a drill (`local`) and return (`auto`)."""
    if new_mode not in (None, "auto", "local"):
        raise typer.BadParameter("auto or local", param_hint="MODE")

    async def work() -> Any:
        async with Connection(choose(appliance)) as connection:
            if new_mode is None:
                return await connection.call(Code.GET, "mode")
            return await connection.call(Code.PUT, "mode", {"mode": new_mode})

    def show(s: dict[str, Any]) -> None:
        # Forced, the reason would only say so again ("forced local by an installer").
        why = "forced by an installer (`vaxelctl mode auto` ends it)" if s["forced"] else s["reason"]
        out.print(f"mode {s['mode']} since {s['since']}: {why}; cloud {s['cloud']}")
        if failback := s.get("failback"):
            f = failback
            out.print(
                f"last failback: {f['state']}, {f['registered']} of {f['phones']} phones registered with "
                f"the cloud in {f['seconds']} s (at most {f['peak_rate']}/s), {f['failures']} failed"
            )

    emit(run(work), as_json, show)


# --- site ------------------------------------------------------------------------------------


def site_pull(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write here, readable by you only (mode 0600: the site holds SIP passwords); "
            "default: stdout",
        ),
    ] = None,
    appliance: ApplianceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch the active site; the first line records its version, so push can detect conflicts.
    The site holds the phones' SIP passwords: -o writes it with mode 0600 (a shell redirect would not),
    and --json then says where it went (version, etag, path, mode), never what it holds."""
    site = run(lambda: _get(appliance, "site"))
    text = site_mark(site) + SITE_MARK.sub("", site["source"])
    if output is None:
        emit({**site, "source": text}, as_json, lambda _: print(text, end=""))  # the site is the output
        return
    files.write(output, text, "", files.PRIVATE)
    about = {k: v for k, v in site.items() if k != "source"}
    written = {**about, "etag": site["digest"][:16], "path": str(output), "mode": f"{files.PRIVATE:04o}"}
    emit(
        written,
        as_json,
        lambda w: err.print(
            f"site version {w['version']} written to {w['path']} (mode {w['mode']}: it holds SIP passwords)",
            highlight=False,
        ),
    )


def site_mark(version: dict[str, Any]) -> str:
    """The first line of a pulled site: the version it came from, for push's If-Match."""
    return mark_line(version["version"], version["digest"])


def site_push(
    file: Path,
    force: Annotated[bool, typer.Option(help="Replace the site even if it changed since your pull")] = False,
    appliance: ApplianceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate FILE on the appliance and make it the active site (refused if someone else's edit
    landed since your pull, unless --force)."""
    text = files.read_text(file, "site file")
    mark = SITE_MARK.search(text)
    if mark is None and not force:
        raise typer.BadParameter(
            "no '# vaxelbox-site:' line from vaxelctl site pull; use --force to push anyway"
        )
    source = SITE_MARK.sub("", text)

    async def work() -> Any:
        async with Connection(choose(appliance)) as connection:
            message = Message(
                code=Code.PUT,
                uri=connection.uri("site"),
                payload=source.encode(),
                content_format=ContentFormat.TEXT,
                accept=ContentFormat.CBOR,
            )
            if mark and not force:
                message.opt.if_match = [bytes.fromhex(mark.group(2))[:8]]
            return decode(await connection.request(message))

    result = run(work)
    stale = _update_mark(file, source, result, int(mark.group(1))) if mark else None
    emit({**result, "file_updated": mark is not None and stale is None}, as_json, _show_pushed)
    if stale:
        err.print(f"vaxelctl: {stale}", highlight=False)


def _update_mark(file: Path, source: str, pushed: dict[str, Any], pulled: int) -> str | None:
    """Rewrite FILE (0600) with a first line naming the pushed version, so the next push builds on
    it; what the installer must know if that failed (the push stands either way), else None."""
    try:
        files.write(file, site_mark(pushed) + source, "", files.PRIVATE)
    except files.FileProblem as exc:
        return (
            f"site version {pushed['version']} is active, but {file} could not be updated ({exc.why}): its "
            f"first line still names version {pulled}, so pull it again before you edit it further"
        )
    return None


def _show_pushed(result: dict[str, Any]) -> None:
    out.print(f"site version {result['version']} active ({result['origin']}).", highlight=False)


def site_diff(file: Path, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """What pushing FILE would change on the appliance: exit 0 if nothing, 1 if anything (as diff)."""
    ours = SITE_MARK.sub("", files.read_text(file, "site file")).splitlines(keepends=True)
    site = run(lambda: _get(appliance, "site"))
    theirs = site["source"].splitlines(keepends=True)
    diff = list(difflib.unified_diff(theirs, ours, f"appliance (version {site['version']})", str(file)))
    result = {"version": site["version"], "file": str(file), "changed": bool(diff), "diff": "".join(diff)}
    emit(result, as_json, lambda r: sys.stdout.write(r["diff"]))
    if diff:
        raise typer.Exit(1)


def site_versions(appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """The kept site versions, newest first."""
    rows = run(lambda: _get(appliance, "site/versions"))
    emit(rows, as_json, lambda r: table(r, ["version", "active", "created", "origin"], "Site versions"))


def site_rollback(version: int, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Make an earlier version's text active again (as a new version)."""

    async def work() -> Any:
        async with Connection(choose(appliance)) as connection:
            return await connection.call(Code.POST, "site/rollback", {"version": version})

    result = run(work)
    emit(result, as_json, lambda r: out.print(f"site version {r['version']} active ({r['origin']})."))


# --- phones and enrolment ------------------------------------------------------------------


def phones(ctx: typer.Context, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Every device the appliance has seen, assigned or not."""
    if ctx.invoked_subcommand is not None:
        pass_down(ctx)
        return
    rows = run(lambda: _get(appliance, "phones"))
    columns = ["mac", "vendor", "model", "firmware", "ip", "assigned", "enrolled", "last_seen"]

    def human(r: list[dict[str, Any]]) -> None:
        table(r, columns, f"Devices seen ({len(r)})")
        _unknown_vendors(r)

    emit(rows, as_json, human)


def _unknown_vendors(rows: list[dict[str, Any]]) -> None:
    """Devices no evidence names the vendor of: they get no file until the installer names it."""
    unknown = [row for row in rows if row.get("vendor") is None]
    if not unknown:
        return
    out.print(
        f"Vendor unknown ({len(unknown)}), these get no file; name it with: "
        "vaxelctl phones assign MAC USER --vendor VENDOR"
    )
    for row in unknown:
        out.print(f"  {row['mac']}  User-Agent: {row.get('user_agent') or '(none)'}")


def _change(appliance: str | None, path: str, data: dict[str, Any]) -> Any:
    async def work() -> Any:
        async with Connection(choose(appliance)) as connection:
            return await connection.call(Code.POST, path, data)

    return run(work)


def phones_assign(
    mac: str,
    users: Annotated[list[str], typer.Argument(help="User ids on line 1, 2, ... (DECT: handset 1, 2, ...)")],
    dect: Annotated[bool, typer.Option(help="A DECT base: the users are its handsets")] = False,
    vendor: Annotated[
        str | None,
        typer.Option(
            help="The device's vendor, when provisioning could not tell it (see vaxelctl phones); "
            "the appliance names the choices"
        ),
    ] = None,
    appliance: ApplianceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Assign a device to users (a new site version, validated on the appliance)."""
    request: dict[str, Any] = {"assign": _typed_mac(mac), "users": users, "dect": dect}
    if vendor is not None:  # the appliance checks the name: a laptop's list may be older than its own
        request["vendor"] = vendor
    result = _change(appliance, "phones", request)

    def human(r: dict[str, Any]) -> None:
        done = "is already assigned" if r.get("changed") is False else "assigned"  # False: nothing new
        out.print(f"{r['mac']} {done} to {', '.join(users)} (site version {r['site_version']}).")
        for line in _assigned_outlook(r):
            out.print(line)

    emit(result, as_json, human)


def _typed_mac(mac: str) -> str:
    """`mac` as typed, once it is one: a usage error (2, nothing sent) as from `vaxelbox phones`."""
    try:
        installer_mac(mac)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    return mac


def _assigned_outlook(row: dict[str, Any]) -> list[str]:
    """What the assigned device gets next, from the agent's reply (`vendor`, `vendor_unknown`: seen
    without a vendor, `vendors`, `enrolled`, `enrolment_until`)."""
    return assigned_outlook(
        vendor_known=row.get("vendor") is not None,
        seen=bool(row.get("vendor_unknown")),
        enrolled=bool(row["enrolled"]),
        until=row.get("enrolment_until"),
        vendors=row.get("vendors") or [],
        tool="vaxelctl",
    )


def phones_unassign(mac: str, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Remove a device from the site; it gets only the bootstrap from now on."""
    result = _change(appliance, "phones", {"unassign": _typed_mac(mac)})
    emit(result, as_json, lambda r: out.print(f"{r['mac']} unassigned (site version {r['site_version']})."))


def _show_enrolment(window: dict[str, Any]) -> None:
    if not window["open"]:
        out.print("Enrolment closed.")
        return
    until = datetime.fromtimestamp(window["until"]).isoformat(timespec="seconds")
    out.print(f"Enrolment open until {until} for {', '.join(window['macs'] or ['every assigned phone'])}.")
    if window.get("widened"):
        kept = ", ".join(window["widened"]["macs"] or ["every assigned phone"])
        out.print(f"It widened the window that was open for {kept}: nothing closes early.")


def enrol_open(
    minutes: Annotated[float, typer.Option(min=1, max=24 * 60, help="How long the window stays open")] = 30,
    mac: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MAC",
            help="Only this assigned device (repeatable); re-enrols it, e.g. after a factory reset",
        ),
    ] = None,
    appliance: ApplianceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let assigned phones fetch their configuration (with their SIP passwords) for a while.
    Opening while a window is open widens it (both windows' phones, until the later end);
    nothing that was open closes early."""
    macs = [_typed_mac(m) for m in mac or []]
    emit(_change(appliance, "enrol", {"open": minutes, "macs": macs}), as_json, _show_enrolment)


def enrol_close(appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Close the enrolment window now."""
    emit(_change(appliance, "enrol", {"close": True}), as_json, _show_enrolment)


def enrol_status(appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Whether the window is open, until when, for whom."""
    emit(run(lambda: _get(appliance, "enrol")), as_json, _show_enrolment)


# --- firmware --------------------------------------------------------------------------------

# Per request over TCP (BERT: Block1 with size exponent 7, counted in 1 KiB). OSCORE's AES-CCM
# with a 13-byte nonce encrypts at most 64 KiB - 1 per message, options included.
BERT_BLOCK = 62 * 1024


def fw_upload(
    bundle: Annotated[Path, typer.Argument(help="A signed bundle (vaxelctl fw pack)")],
    appliance: ApplianceOption = None,
    restart: Annotated[bool, typer.Option(help="Start over instead of resuming")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stream a signed firmware bundle to the appliance (CoAP over TCP, BERT blocks). An interrupted
    upload of the same bundle resumes where the appliance's copy ends; any other starts afresh."""
    files.readable(bundle, "bundle")  # a mistyped name is said before the appliance is asked
    result = run(lambda: _upload(appliance, bundle, restart, quiet=as_json))
    emit(fw_named(result), as_json, _show_fw)


async def _upload(appliance: str | None, bundle: Path, restart: bool, quiet: bool) -> Any:
    header = _header_of(bundle)
    size = bundle.stat().st_size
    async with Connection(choose(appliance)) as connection:
        # Also completes the CSM exchange (RFC 8323): aiocoap holds back a large first message.
        state = await connection.call(Code.GET, "fw", tcp=True)
        offset = 0 if restart else _resume_at(state, header, size)
        started = time.monotonic()
        with (
            files.reading(bundle, "bundle") as file,
            Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err,
                disable=quiet,
            ) as progress,
        ):
            task = progress.add_task("uploading" if offset == 0 else "resuming", total=size, completed=offset)
            file.seek(offset)
            try:
                while True:
                    chunk = file.read(BERT_BLOCK)
                    more = offset + len(chunk) < size
                    message = Message(
                        code=Code.PUT,
                        uri=connection.uri("fw", tcp=True),
                        payload=chunk,
                        block1=(offset // 1024, more, 7),
                        accept=ContentFormat.CBOR,
                    )
                    if header is not None:  # which bundle this is: the appliance refuses a splice
                        message.opt.if_match = [bytes.fromhex(header.sha256)[:8]]
                    response = await connection.request(message, blockwise=False)
                    offset += len(chunk)
                    progress.update(task, completed=offset)
                    if not more:
                        break
            except BaseException as exc:  # the error's own line says it all; no half bar above it
                progress.remove_task(task)
                if isinstance(exc, asyncio.CancelledError):  # Ctrl-C: the appliance keeps its copy
                    err.print(
                        f"vaxelctl: upload interrupted at {_size(offset)} of {_size(size)}; "
                        f"run the same command to resume",
                        highlight=False,
                    )
                raise
        result = decode(response)
        result["seconds"] = round(time.monotonic() - started, 3)
        return result


def _header_of(bundle: Path) -> Header | None:
    """The bundle's header as it names itself, unverified; None if unreadable (then it is sent
    from the start, and the appliance, which has the key, says what is wrong with it)."""
    try:
        with bundle.open("rb") as file:
            return read_header(file)
    except BundleError:
        return None
    except OSError as exc:
        raise files.unreadable(bundle, "bundle", files.reason(exc, bundle)) from None


def _resume_at(state: dict[str, Any], header: Header | None, size: int) -> int:
    """Where to continue: after the appliance's partial copy if it is of this very bundle, else 0."""
    received = state["received"] if state["state"] == 1 else 0
    if not received:
        return 0
    if header is None or state.get("sha256") != header.sha256 or received > size:
        version = f"version {state['version']}" if state.get("version") else "its header incomplete"
        err.print(
            f"the appliance holds {_size(received)} of another bundle ({version}): starting afresh",
            highlight=False,
        )
        return 0
    return received - received % 1024  # BERT block numbers count kibibytes


def _size(count: int) -> str:
    """Bytes as the progress bar shows them (decimal units)."""
    if count >= 1_000_000:
        return f"{count / 1e6:.1f} MB"
    return f"{count / 1e3:.1f} kB" if count >= 1000 else f"{count} bytes"


def fw_status(appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """The firmware update state (LwM2M Object 5 semantics)."""
    emit(fw_named(run(lambda: _get(appliance, "fw"))), as_json, _show_fw)


def fw_apply(
    appliance: ApplianceOption = None,
    force: Annotated[bool, typer.Option("--force", help="Install an older or the same version")] = False,
    as_json: JsonOption = False,
) -> None:
    """Install the staged bundle into the inactive slot and restart into it; it commits itself
    once healthy, or the appliance rolls back (see vaxelctl fw status)."""

    async def work() -> Any:
        try:
            async with Connection(choose(appliance)) as connection:
                return await connection.call(Code.POST, "fw/update", {"force": force})
        except ClientError as exc:  # the appliance's refusal in an installer's words (JSON: as sent)
            refused = f"{Code.SERVICE_UNAVAILABLE}: "
            if as_json or not str(exc).startswith(refused):
                raise
            raise ClientError(
                f"not applied: {_refusal(str(exc).removeprefix(refused))}", exc.exit_code
            ) from None

    emit(fw_named(run(work)), as_json, _show_fw)


def fw_named(state: dict[str, Any]) -> dict[str, Any]:
    """The firmware state with the names of its LwM2M numbers beside them (state_name, result_name)."""
    return {
        **state,
        "state_name": FW_STATES.get(state["state"], "unknown"),
        "result_name": FW_RESULTS.get(state["result"], "unknown"),
    }


def _show_fw(state: dict[str, Any]) -> None:
    summary = f"firmware: {fw_summary(state)}"  # wrapped between words, the rest indented
    out.print(textwrap.fill(summary, width=max(out.width, 40), subsequent_indent="  "), highlight=False)
    for name, slot in (state.get("slots") or {}).items():
        out.print(f"slot {name}: {slot['version'] or '-'} ({slot['state']})", highlight=False)


# The appliance's reasons (vaxelbox.update.slots), read back into an installer's words.
_ROLLED_BACK = re.compile(
    r"(?P<new>\S+) rolled back \((?P<kind>\w+)\): (?P<detail>.*); back on slot (?P<slot>\w+)"
)
_COMMITTED = re.compile(r"(?P<new>\S+) committed in slot (?P<slot>\w+)")
_ON_TRIAL = re.compile(r"(?P<new>\S+) on trial in slot (?P<slot>\w+)")
_OLDER = re.compile(
    r"(?P<new>\S+) is (?P<what>a downgrade|the same version) of the running (?P<running>\S+): .*"
)
_OTHER_BOARD = re.compile(r"the bundle is for (?P<boards>.+), this appliance is (?P<board>\S+)")
_INTERRUPTED = "the board was reset or lost power during the trial"


def fw_summary(state: dict[str, Any]) -> str:
    """One sentence for the LwM2M state: what is on the appliance and what happened last."""
    version = f"version {state['version']}" if state.get("version") else "a bundle"
    total = state.get("total")
    took = f" in {state['seconds']:.1f} s" if state.get("seconds") is not None else ""
    phase, result, reason = state["state"], state["result"], state.get("reason") or ""
    if phase == 1:
        of = f" of {_size(total)}" if total else ""
        return f"receiving {version}: {_size(state['received'])}{of} so far (vaxelctl fw upload resumes it)"
    if phase == 2:
        staged = f"{version} verified and staged ({_size(state['received'])}{took})"
        if result:
            return f"{staged}; not applied: {_refusal(reason)}"
        return f"{staged}; vaxelctl fw apply installs it"
    if phase == 3:
        if trial := _ON_TRIAL.fullmatch(reason):
            return (
                f"updating to {trial['new']}: on trial in slot {trial['slot']}, kept once it reports "
                "healthy, rolled back otherwise"
            )
        return f"updating to {version}: {reason}"
    if result == 0:
        return "idle, nothing staged"
    if result == 1:
        done = _COMMITTED.fullmatch(reason)
        if done:
            return f"updated to {done['new']}: it reported healthy and is kept (slot {done['slot']})"
        return f"the last update succeeded: {reason}" if reason else "the last update succeeded"
    if back := _ROLLED_BACK.fullmatch(reason):
        return _rolled_back(back, state.get("slots") or {})
    why = f": {reason}" if reason else ""
    if result == 8:
        return f"idle; the last update failed{why}"
    return f"idle; the last upload failed ({FW_RESULTS.get(result, result)}){why}"


def _rolled_back(back: re.Match[str], slots: dict[str, Any]) -> str:
    """`rolled back to 1.2.0: 1.3.0 ...` from the appliance's reason and its slots' versions."""
    new, kind, detail = back["new"], back["kind"], back["detail"]
    old = (slots.get(back["slot"]) or {}).get("version") or f"slot {back['slot']}"
    why = {
        "crash": f"{new} stopped while starting ({detail})",
        "hang": f"{new} hung and the watchdog restarted the board",
        "health": f"{new} failed its health check ({detail})",
        "deadline": (
            f"{new} reported healthy only after the board's deadline"
            if detail.startswith("it reported healthy after")
            else f"{new} did not report healthy within the board's deadline"
        ),
        "interrupted": (
            f"the board restarted or lost power while {new} was on trial"
            if detail == _INTERRUPTED
            else f"{new} did not start: {detail}"
        ),
    }.get(kind, f"{new} failed on trial ({kind}: {detail})")
    return f"rolled back to {old}: {why}"


def _refusal(reason: str) -> str:
    """Why the appliance would not apply the staged bundle, and what would."""
    if older := _OLDER.fullmatch(reason):
        if older["what"] == "a downgrade":
            return (
                f"{older['new']} is older than the running {older['running']}; "
                "vaxelctl fw apply --force installs it anyway"
            )
        return f"{older['new']} is already running; vaxelctl fw apply --force installs it again"
    if other := _OTHER_BOARD.fullmatch(reason):
        return f"{reason}; upload a bundle built for {other['board']}"
    return reason


def fw_pack(
    image: Annotated[Path, typer.Argument(help="The image to ship")],
    key: Annotated[Path, typer.Option(help="Ed25519 private key (PEM), from vaxelctl fw keygen")],
    version: Annotated[str, typer.Option(help="The image's version, dotted numbers (e.g. 1.4.2)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle to write")],
    board: Annotated[
        list[str], typer.Option(help="A board it is for, as named in boards/*.yaml (e.g. rpi-4b); repeat")
    ],
    as_json: JsonOption = False,
) -> None:
    """Sign IMAGE into a bundle appliances with the matching public key accept. A bundle `fw apply`
    would refuse everywhere (no known board, a version that is not dotted numbers) is not made."""
    _check_packable(version, board)
    private = _signing_key(key)
    with files.reading(image, "image") as source, files.writing(output, "bundle", files.PUBLIC) as target:
        header = pack(source, target, version, private, tuple(board))
    with output.open("rb") as written:  # what was written is what the installer uploads
        digest = hashlib.file_digest(written, "sha256").hexdigest()
    packed = {
        "bundle": str(output),
        "version": header.version,
        "boards": list(header.boards),
        "size": output.stat().st_size,
        "sha256": digest,
        "image": {"size": header.size, "sha256": header.sha256},
    }
    emit(
        packed,
        as_json,
        lambda p: out.print(
            f"{output}: version {p['version']} for {', '.join(p['boards'])}, "
            f"{p['size']} bytes, sha256 {p['sha256'][:16]}..."
        ),
    )


def _check_packable(version: str, boards: list[str]) -> None:
    """Raises typer.BadParameter (usage, exit 2) for a version `slots.apply` cannot compare or a
    board no board file in this tree names: appliances would refuse such a bundle only after upload."""
    try:
        slots.version_key(version)
    except slots.Refused as exc:
        raise typer.BadParameter(str(exc), param_hint="--version") from None
    known = _shipped_boards()
    if not known:
        raise ClientError(f"no board files in {BOARDS}: fw pack runs in a Vaxelbox source tree", EXIT_FAILED)
    unknown = [name for name in boards if name not in known]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise typer.BadParameter(
            f"unknown board {names}; the known boards are {', '.join(known)} (in {BOARDS})",
            param_hint="--board",
        )


def _shipped_boards() -> list[str]:
    """The board names (each file's `name`, as an appliance knows itself) in boards/*.yaml, sorted."""
    return sorted(load_board(path).name for path in BOARDS.glob("*.yaml"))


def _signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM, no password). Raises ClientError (2, usage)."""
    try:
        key = load_pem_private_key(files.read_bytes(path, "key"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # not PEM, encrypted, or of no known kind
        raise ClientError(
            f"{path} is not a private key in PEM without a password (vaxelctl fw keygen makes one)",
            EXIT_USAGE,
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ClientError(f"{path} is not an Ed25519 private key (vaxelctl fw keygen makes one)", EXIT_USAGE)
    return key


def fw_keygen(
    private: Annotated[Path, typer.Argument(help="Where to write the private key (keep it offline)")],
    public: Annotated[Path, typer.Argument(help="Where to write the public key (for the appliances)")],
    force: Annotated[
        bool, typer.Option(help="Replace existing key files (bundles signed with the old key stop verifying)")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make an Ed25519 signing key pair for firmware bundles. An existing key file is never replaced
    without --force: appliances holding the old public key would refuse every bundle signed anew."""
    replaced = [path for path in (private, public) if path.exists()]
    if replaced and not force:
        fail(_kept_key(replaced[0], replaced[0] == private), EXIT_FAILED)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with (  # both or neither: a failure writing either leaves both files as they were
        files.writing(private, "private key", files.PRIVATE) as secret,
        files.writing(public, "public key", files.PUBLIC) as shared,
    ):
        secret.write(pem)
        shared.write(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    emit(
        {"private_key": str(private), "public_key": str(public), "replaced": bool(replaced)},
        as_json,
        lambda _: out.print(
            f"private key {private} (0600), public key {public}: install it as <data>/firmware-signing.pub"
        ),
    )


def _kept_key(path: Path, is_private: bool) -> str:
    """Why keygen replaces nothing: what the existing key file is for."""
    why = (
        "appliances holding its public key accept only bundles it signs"
        if is_private
        else "appliances may hold it, and would refuse bundles signed with a new key"
    )
    return f"{path} already exists: {why}; nothing replaced (--force replaces it)"


# --- installers ------------------------------------------------------------------------------


def installers(ctx: typer.Context, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """The installers paired with the appliance."""
    if ctx.invoked_subcommand is not None:
        pass_down(ctx)
        return
    rows = run(lambda: _get(appliance, "installers"))
    emit(rows, as_json, lambda r: table(r, ["id", "name", "created", "you"], "Installers"))


def installers_revoke(installer: str, appliance: ApplianceOption = None, as_json: JsonOption = False) -> None:
    """Revoke an installer's pairing: its laptop can no longer manage the appliance. Revoking your
    own also removes this laptop's context for the appliance (pair again to manage it)."""
    installer = installer.lower()

    async def work() -> Paired:
        paired = choose(appliance)
        async with Connection(paired) as connection:
            await connection.call(Code.POST, "installers", {"revoke": installer})
        return paired

    paired = run(work)
    yourself = paired.installer == installer
    if yourself:  # the appliance forgot this laptop: its keys here are useless now
        shutil.rmtree(paired.directory)
    result = {"revoked": installer, "yourself": yourself, "appliance": paired.serial}

    def human(r: dict[str, Any]) -> None:
        if not r["yourself"]:
            out.print(f"installer {r['revoked']} revoked.", highlight=False)
            return
        out.print(
            f"installer {r['revoked']} revoked: that was you. This laptop's context for {r['appliance']} "
            f"is removed; to manage it again: vaxelctl pair {paired.address}",
            highlight=False,
        )

    emit(result, as_json, human)
