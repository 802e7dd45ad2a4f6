"""Talking to an appliance: the paired appliances on this laptop, and CoAP requests under OSCORE.

Each paired appliance is a directory in the user's config dir holding its
address and serial (appliance.json) and the installer's OSCORE file context
(secret.json 0600; sequence numbers persist, so replay protection survives
restarts of either side). Every failure becomes a ClientError with one line
an installer can act on, and its exit code tells the kinds apart (the README's
scheme): the appliance refused the request, a pairing code included (1); the
command was given wrongly, e.g. a malformed code or address (2); the network
failed (3, with the address); the appliance does not know this laptop (4).
"""

import asyncio
import errno
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import filelock
import platformdirs
from aiocoap import Code, Message
from aiocoap.numbers import ContentFormat
from aiocoap.oscore import FilesystemSecurityContext, NotAProtectedMessage
from vaxelbox.mgmt.security import PairingError, pairing_context, release, write_private

COAP_PORT = 5683
TIMEOUT = 15.0
# One vaxelctl at a time per pairing: two would send the same OSCORE sequence numbers, and the
# appliance would refuse the second as a replay. Another command waits this long (s) for it.
HOLD_WAIT = 5.0
HOLDER = "in-use.json"  # in the pairing's directory while a vaxelctl holds it: {"pid", "command"}

EXIT_FAILED = 1  # the appliance refused (bad input, conflict, nothing staged, a wrong pairing code, ...)
EXIT_USAGE = 2  # the command was given wrongly (as click's usage errors): nothing was sent
EXIT_UNREACHABLE = 3  # no answer, or no such appliance
EXIT_NOT_PAIRED = 4  # pair first (or pairing was revoked)

# Library warnings (aiocoap's late responses and errors while a context shuts down, asyncio's
# "Task was destroyed" after Ctrl-C) would reach stderr through logging's last-resort handler;
# every failure that matters to the installer becomes a ClientError and its one line instead.
logging.getLogger().addHandler(logging.NullHandler())


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def config_dir() -> Path:
    return Path(os.environ.get("VAXELCTL_CONFIG") or platformdirs.user_config_dir("vaxelctl"))


@dataclass(frozen=True)
class Paired:
    serial: str
    host: str
    port: int
    directory: Path

    def uri(self, path: str, tcp: bool = False) -> str:
        return f"{'coap+tcp' if tcp else 'coap'}://{self.address}/{path.lstrip('/')}"

    @property
    def address(self) -> str:
        """HOST:PORT as an installer types it ([v6]:PORT)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def installer(self) -> str | None:
        """This laptop's installer ID on the appliance (None for a pairing in progress)."""
        try:
            return str(json.loads((self.directory / "appliance.json").read_text())["installer"])
        except (OSError, ValueError, KeyError):
            return None


def paired_appliances() -> list[Paired]:
    found = []
    for path in sorted((config_dir() / "appliances").glob("*/appliance.json")):
        info = json.loads(path.read_text())
        found.append(Paired(info["serial"], info["host"], int(info["port"]), path.parent))
    return found


def choose(appliance: str | None) -> Paired:
    """The paired appliance `--appliance` names (host, host:port or serial), or the only one."""
    paired = paired_appliances()
    if appliance is None:
        if len(paired) == 1:
            return paired[0]
        if not paired:
            raise ClientError("not paired with any appliance: run vaxelctl pair HOST", EXIT_NOT_PAIRED)
        names = ", ".join(f"{p.serial} ({p.host})" for p in paired)
        raise ClientError(
            f"paired with several appliances ({names}): choose one with --appliance (by its serial), "
            "and vaxelctl forget SERIAL one that is gone",
            EXIT_USAGE,
        )
    if by_serial := [p for p in paired if p.serial == appliance]:
        return by_serial[0]
    host, port = split_host_port(appliance)
    found = [p for p in paired if p.host == host and (port is None or port == p.port)]
    if len(found) > 1:  # e.g. a box reset (a new serial) at the address of the one paired before
        names = ", ".join(p.serial for p in found)
        raise ClientError(
            f"paired with several appliances at {appliance} ({names}): name one by its serial, and "
            "vaxelctl forget SERIAL the one that is no longer there",
            EXIT_USAGE,
        )
    if found:
        return found[0]
    raise ClientError(f"not paired with {appliance}: run vaxelctl pair {appliance}", EXIT_NOT_PAIRED)


def paired_before_at(paired: Paired) -> list[Paired]:
    """The other appliances this laptop was paired with at `paired`'s address, where `paired`
    answers now: reset to a new serial, or replaced (their pairings are likely dead)."""
    return [
        p
        for p in paired_appliances()
        if (p.host, p.port) == (paired.host, paired.port) and p.serial != paired.serial
    ]


def split_host_port(text: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT -> (host, port or None). Raises ClientError (2)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        return text, None
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"{text!r}: the port after ':' is a number (HOST:PORT, [IPv6]:PORT)", EXIT_USAGE)
    return host, int(port)


class Connection:
    """An aiocoap client context with this laptop's OSCORE context for one appliance."""

    def __init__(self, paired: Paired | None) -> None:
        self.paired = paired
        self._context: aiocoap.Context | None = None
        self._security: FilesystemSecurityContext | None = None
        self._closing = False

    async def __aenter__(self) -> "Connection":
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        self._context = await aiocoap.Context.create_client_context(
            transports=["oscore", "udp6", "tcpclient"]
        )
        if self.paired is not None:
            try:
                self._security = await _held(self.paired)
            except Exception as exc:
                await self._context.shutdown()
                raise _unusable(self.paired, exc) from None
            for scheme in ("coap", "coap+tcp"):
                self._context.client_credentials[f"{scheme}://{self.paired.address}/*"] = self._security
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        try:
            if self._context is not None:
                await self._context.shutdown()
        finally:
            if self._security is not None:
                release(self._security)  # also after Ctrl-C: the next command may use the pairing
                assert self.paired is not None
                (self.paired.directory / HOLDER).unlink(missing_ok=True)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """While aiocoap shuts down with requests in flight (Ctrl-C, or a ClientError in the
        middle of an upload) its transports fail in callbacks; that is noise, not news."""
        if not self._closing:
            loop.default_exception_handler(context)

    @property
    def context(self) -> aiocoap.Context:
        assert self._context is not None
        return self._context

    async def request(self, message: Message, timeout: float = TIMEOUT, blockwise: bool = True) -> Message:
        """One request; `blockwise=False` when the caller sends its own Block1 blocks."""
        with translated(self.where, timeout):
            request = self.context.request(message, handle_blockwise=blockwise)
            response = await asyncio.wait_for(request.response, timeout)
        check(response)
        return response

    @property
    def where(self) -> str:
        """The appliance as error messages name it."""
        assert self.paired is not None
        return f"{self.paired.serial} at {self.paired.address}"

    def uri(self, path: str, tcp: bool = False) -> str:
        assert self.paired is not None, "a connection made for pairing has no appliance yet"
        return self.paired.uri(path, tcp)

    async def call(self, code: Code, path: str, data: Any = None, tcp: bool = False, **options: Any) -> Any:
        """A request with a CBOR body (if any); the decoded CBOR answer."""
        message = Message(code=code, uri=self.uri(path, tcp), accept=ContentFormat.CBOR, **options)
        if data is not None:
            message.payload, message.opt.content_format = cbor2.dumps(data), ContentFormat.CBOR
        return decode(await self.request(message))

    async def observe(self, path: str) -> AsyncIterator[Any]:
        """The resource's state, then each change (until the appliance ends the observation)."""
        with translated(self.where, TIMEOUT):
            request = self.context.request(Message(code=Code.GET, uri=self.uri(path), observe=0))
            first = await asyncio.wait_for(request.response, TIMEOUT)
        check(first)
        yield decode(first)
        notifications = aiter(request.observation)
        while True:
            with translated(self.where, TIMEOUT):
                try:
                    notification = await anext(notifications)
                except StopAsyncIteration:
                    return
            check(notification)
            yield decode(notification)


async def _held(paired: Paired) -> FilesystemSecurityContext:
    """The pairing's OSCORE context, held by this process (see HOLD_WAIT). Raises filelock.Timeout
    when another vaxelctl still holds it after HOLD_WAIT s, or what aiocoap raises for a bad one."""
    deadline = time.monotonic() + HOLD_WAIT
    while True:
        try:
            security = FilesystemSecurityContext(str(paired.directory / "oscore"))
            break
        except filelock.Timeout:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)
    command = " ".join(["vaxelctl", *_command_words(sys.argv[1:])])
    with suppress(OSError):  # only for the message another vaxelctl may give
        (paired.directory / HOLDER).write_text(json.dumps({"pid": os.getpid(), "command": command}))
    return security


def _command_words(argv: list[str]) -> list[str]:
    """The command as typed, a pairing code (`--code`'s value) left out: `enrol -a HOST status`."""
    words = []
    for word, before in zip(argv, ["", *argv], strict=False):
        if before == "--code" or word.startswith("--code="):
            word = "--code=..." if word.startswith("--code=") else "..."
        words.append(word)
    return words


def _holder(paired: Paired) -> str:
    """Who holds the pairing, as ` (pid N: vaxelctl WORDS)`; "" when its record is gone or unreadable."""
    try:
        record = json.loads((paired.directory / HOLDER).read_text())
        return f" (pid {int(record['pid'])}: {record['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _unusable(paired: Paired, exc: Exception) -> ClientError:
    if isinstance(exc, filelock.Timeout):
        return ClientError(
            f"another vaxelctl{_holder(paired)} is using the pairing with {paired.serial}: one command "
            "at a time per pairing, and a --watch holds it until it ends (Ctrl-C in its terminal)"
        )
    return ClientError(f"cannot use the pairing with {paired.serial} ({exc}): run vaxelctl pair again")


@contextmanager
def translated(where: str, timeout: float, pairing: bool = False) -> Iterator[None]:
    """aiocoap's exceptions -> one ClientError line each: unreachable (3) when the network failed,
    not paired (4) when the appliance answered in the clear (it has no context for us), refused
    (1) when it did so to a pairing request (the code is wrong) or refused otherwise."""
    try:
        yield
    except TimeoutError:
        raise ClientError(f"no answer from {where} within {timeout:.0f} s", EXIT_UNREACHABLE) from None
    except aiocoap.error.NetworkError as exc:
        raise ClientError(f"cannot reach {where}: {network_reason(exc)}", EXIT_UNREACHABLE) from None
    except NotAProtectedMessage as exc:
        raise _in_the_clear(where, exc.plain_message, pairing) from None
    except aiocoap.error.Error as exc:
        raise ClientError(f"the request to {where} failed: {exc}") from None


def network_reason(exc: aiocoap.error.NetworkError) -> str:
    """What went wrong on the network, in words an installer can act on."""
    if isinstance(exc, aiocoap.error.ResolutionError):
        return "no such host"
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
        return "nothing answers there (connection refused): is the agent running, and is this its address?"
    if isinstance(cause, OSError) and cause.errno is not None:
        return os.strerror(cause.errno).lower()
    return str(exc) or type(exc).__name__


def _in_the_clear(where: str, answer: Message, pairing: bool) -> ClientError:
    if answer.code not in (Code.BAD_REQUEST, Code.UNAUTHORIZED):
        return ClientError(f"{where} answered {answer.code} without OSCORE: is it a Vaxelbox appliance?")
    if pairing:
        return ClientError(
            f"{where} refused the pairing code: check it against the label "
            "(on a development host: vaxelbox pairing-code)"
        )
    return ClientError(
        f"{where} does not know this laptop (pairing revoked, or appliance reset): run vaxelctl pair",
        EXIT_NOT_PAIRED,
    )


def check(response: Message) -> None:
    """Turn an error response into the one line that explains it."""
    if response.code.is_successful():
        return
    reason = response.payload.decode("utf-8", "replace").strip() if response.payload else ""
    if response.code == Code.UNAUTHORIZED:
        hint = reason if "pair" in reason else "not paired with this appliance (or revoked): vaxelctl pair"
        raise ClientError(hint, EXIT_NOT_PAIRED)
    if response.code == Code.PRECONDITION_FAILED:
        raise ClientError(reason or "the site changed on the appliance meanwhile: pull it again")
    if response.code == Code.BAD_REQUEST and reason:
        raise ClientError(reason)  # the appliance's words say it all; "4.00 Bad Request" adds nothing
    raise ClientError(f"{response.code}: {reason}" if reason else str(response.code))


def decode(response: Message) -> Any:
    if not response.payload:
        return None
    if response.opt.content_format == ContentFormat.CBOR:
        return cbor2.loads(response.payload)
    if response.opt.content_format == ContentFormat.JSON:
        return json.loads(response.payload)
    return response.payload.decode("utf-8", "replace")


@dataclass(frozen=True)
class Replaced:
    """This laptop's installer from an earlier pairing with the same appliance, which pairing
    again revokes: `revoked` False if the appliance no longer listed it; `error` (then it is still
    listed) if revoking it failed."""

    installer: str
    revoked: bool
    error: str | None = None


@dataclass(frozen=True)
class Pairing:
    paired: Paired
    installer: str  # this laptop's installer ID on the appliance
    replaced: Replaced | None  # None: this laptop was not paired with the appliance before


async def pair(host: str, port: int, code: str, name: str) -> Pairing:
    """Create this laptop's installer context on the appliance, with its pairing code. If this
    laptop was paired with the same appliance before, its earlier installer is revoked (with the
    new context) once the new one works: an installer expects one entry per laptop, not orphans."""
    try:
        bootstrap = pairing_context(code, secrets.token_bytes(8), appliance=False)
    except PairingError as exc:
        raise ClientError(str(exc), EXIT_USAGE) from None
    target = Paired("", host, port, Path())
    async with Connection(None) as connection:
        connection.context.client_credentials[target.uri("*")] = bootstrap
        message = Message(
            code=Code.POST,
            uri=target.uri("pair"),
            payload=cbor2.dumps({"name": name}),
            content_format=ContentFormat.CBOR,
            accept=ContentFormat.CBOR,
        )
        with translated(target.address, TIMEOUT, pairing=True):
            response = await asyncio.wait_for(connection.context.request(message).response, TIMEOUT)
        check(response)
        created = decode(response)
    earlier = _paired_installer(created["device"]["serial"])
    paired = _store_pairing(host, port, created)
    replaced = None if earlier is None else await _revoke_earlier(paired, earlier)
    return Pairing(paired, created["installer"], replaced)


def _paired_installer(serial: str) -> str | None:
    """This laptop's installer ID with the appliance `serial`, if it is paired with it."""
    return Paired(serial, "", 0, config_dir() / "appliances" / serial).installer


async def _revoke_earlier(paired: Paired, installer: str) -> Replaced:
    """Revoke this laptop's earlier installer on the appliance, with the new pairing's context."""
    try:
        async with Connection(paired) as connection:
            listed = {row["id"] for row in await connection.call(Code.GET, "installers")}
            if installer not in listed:
                return Replaced(installer, revoked=False)
            await connection.call(Code.POST, "installers", {"revoke": installer})
    except ClientError as exc:
        return Replaced(installer, revoked=False, error=str(exc))
    return Replaced(installer, revoked=True)


def _store_pairing(host: str, port: int, created: dict[str, Any]) -> Paired:
    serial = created["device"]["serial"]
    directory = config_dir() / "appliances" / serial
    if directory.exists():  # paired again: the old context is dead on our side
        shutil.rmtree(directory)
    (directory / "oscore").mkdir(mode=0o700, parents=True)
    directory.chmod(0o700)
    secret = {"secret_hex": created["secret"], "salt_hex": created["salt"]}
    settings = {"sender-id_hex": created["sender_id"], "recipient-id_hex": created["recipient_id"]}
    about = {"serial": serial, "host": host, "port": port, "installer": created["installer"]}
    write_private(directory / "oscore" / "secret.json", json.dumps(secret))
    write_private(directory / "oscore" / "settings.json", json.dumps(settings))
    write_private(directory / "appliance.json", json.dumps({**about, "device": created["device"]}))
    return Paired(serial, host, port, directory)
