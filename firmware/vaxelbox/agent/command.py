"""`vaxelbox run`: what it does with its flags, apart from the command line that parses them.

The `vaxelbox` command line (vaxelbox.cli) is typer's; the agent would keep typer, click and every
other command's module, about 1.5 MiB, for its whole life (issue 12) only to read a dozen flags
once. So `vaxelbox run ...` as systemd, the bench and the tests start it reads its flags here
(`plain_run`) when every word is one of run's flags with a value read exactly as typer reads it,
and goes on without importing typer; anything else (another command, --help, a flag or a value
this does not read, a mistake) goes to typer, which parses and answers as it always did.
"""

import asyncio
import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import UnionType
from typing import get_args

from vaxelbox.agent.app import Agent, StartupError
from vaxelbox.agent.logs import LogFormat, LogRing, Redactor, configure_logging, get_logger
from vaxelbox.agent.options import OptionsError, RunOptions
from vaxelbox.agent.runtime import DataDirUnavailable, registered, sole_agent
from vaxelbox.hw.board import BoardError

EXIT_USAGE = 2  # the agent cannot start with these flags or files
LOG_FORMATS = ("auto", "human", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # Python's levels, in any case
PORT_FLAGS = frozenset({"lan_tls_port", "http_port", "https_port", "coap_port"})  # None: the default
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


@dataclass(frozen=True)
class RunFlags:
    """`vaxelbox run`'s flags as typer hands them over (vaxelbox.cli.run): each field is the flag
    `--field-name`, with typer's default."""

    site: Path | None = None
    data: Path | None = None
    board: Path | None = None
    lan: str | None = None
    lan_tls_port: int | None = None
    cloud: str | None = None
    wan: str | None = None
    sip_rate_limit: float = 200.0
    http_port: int | None = None
    https_port: int | None = None
    https_cert: Path | None = None
    https_key: Path | None = None
    coap_port: int = 5683
    fw_key: Path | None = None
    log_level: str = "INFO"
    log_format: str = "auto"


def plain_run(argv: list[str]) -> RunFlags | None:
    """`argv` (the words after the program) read as `run --flag value ...`, or None for typer to
    read: another command, a word that is not one of run's flags, `--flag=value`, a flag given
    twice, or a value typer might read otherwise or refuse (a number other than plain digits, an
    empty value, one that starts with '-', or one `refusal` refuses: typer says so)."""
    if not argv or argv[0] != "run" or len(argv) % 2 == 0:
        return None
    known = {f"--{f.name.replace('_', '-')}": f for f in fields(RunFlags)}
    values: dict[str, object] = {}
    for flag, text in zip(argv[1::2], argv[2::2], strict=True):
        field = known.get(flag)
        if field is None or field.name in values or not text or text.startswith("-"):
            return None
        value = _value(field, text)
        if value is None or refusal(field.name, value) is not None:
            return None
        values[field.name] = value
    return RunFlags(**values)  # type: ignore[arg-type]


def refusal(name: str, value: object) -> str | None:
    """Why `run` cannot start with `value` for the RunFlags field `name` (typer's "Invalid value
    for --flag: ..." says it), None when it can. Typer has checked the value's type. No port flag
    has a "0 = any or off" (`--lan HOST:0` is refused too); `--sip-rate-limit 0` is "no limit"."""
    if name in PORT_FLAGS and isinstance(value, int) and not 0 < value < 65536:
        return f"{value} is not a port (1-65535)"
    if name == "sip_rate_limit" and isinstance(value, float) and not (math.isfinite(value) and value >= 0):
        return f"{value} is not a rate >= 0 (0 = no limit)"
    if name == "log_level" and str(value).upper() not in LOG_LEVELS:
        return f"{value} is not a level (DEBUG to CRITICAL)"  # fits an 80-column box
    if name == "log_format" and value not in LOG_FORMATS:
        return "auto, human or json"
    return None


def refusals(flags: RunFlags) -> Iterator[tuple[str, str]]:
    """(`--flag`, why) for each of `flags` that `refusal` refuses, in the order of run's flags."""
    for field in fields(flags):
        if (why := refusal(field.name, getattr(flags, field.name))) is not None:
            yield f"--{field.name.replace('_', '-')}", why


def _value(field: dataclasses.Field[object], text: str) -> object | None:
    """`text` as the field's type, read as typer reads it; None where it might read it otherwise."""
    kinds = set(get_args(field.type)) if isinstance(field.type, UnionType) else {field.type}
    if int in kinds:
        return int(text) if _DIGITS.fullmatch(text) else None
    if float in kinds:
        return float(text) if _DECIMAL.fullmatch(text) else None
    return Path(text) if Path in kinds else text


def run_agent(flags: RunFlags) -> int:
    """Run the agent until it stops; 0, or EXIT_USAGE when it cannot start with these flags or
    files (logged as one `cannot start` event). `flags` must have no `refusals`."""
    redactor = Redactor()
    log_format: LogFormat = flags.log_format  # type: ignore[assignment]  # checked by the caller
    log_ring = configure_logging(redactor, flags.log_level, log_format)
    log = get_logger("vaxelbox")
    try:
        options = _options(flags)
        with sole_agent(options.data_dir), registered(options.data_dir) as unregistered:
            if unregistered:  # the record is how `vaxelbox phones` finds this agent's data
                log.warning(
                    "local commands will not find this agent's data without --data", reason=unregistered
                )
            _serve(options, redactor, log_ring)
    except (OptionsError, BoardError, StartupError, DataDirUnavailable) as exc:
        log.error("cannot start", reason="; ".join(str(exc).splitlines()))  # one event, however long
        return EXIT_USAGE
    return 0


def _options(flags: RunFlags) -> RunOptions:
    """Every address and path resolved. Raises OptionsError or BoardError."""
    if (flags.https_cert is None) != (flags.https_key is None):
        raise OptionsError("--https-cert and --https-key go together")
    options = RunOptions.resolve(flags.site, flags.data, flags.board, flags.lan, flags.cloud, flags.wan)
    return replace(
        options,
        rate_limit=flags.sip_rate_limit,
        http_port=flags.http_port or options.http_port,
        https_port=flags.https_port or options.https_port,
        https_certificate=flags.https_cert,
        https_key=flags.https_key,
        coap_port=flags.coap_port,
        lan_tls_port=flags.lan_tls_port,
        firmware_key=flags.fw_key or _installed_firmware_key(options),
    )


def _serve(options: RunOptions, redactor: Redactor, log_ring: LogRing) -> None:
    """Run the agent until it stops; after a factory reset (it wiped its state and stopped), start
    it again in this process as on a fresh box: its --site is applied to the empty store."""
    while True:
        agent = Agent(options, redactor, log_ring=log_ring)
        asyncio.run(agent.run())
        if not agent.factory_reset_done:
            return
        log_ring.forget()  # a fresh box: /log and status's last_errors start empty
        get_logger("vaxelbox").warning("agent starting again after the factory reset")


def _installed_firmware_key(options: RunOptions) -> Path | None:
    """A board's firmware key lives beside its data: <data>/firmware-signing.pub."""
    path = options.data_dir / "firmware-signing.pub"
    return path if path.exists() else None
