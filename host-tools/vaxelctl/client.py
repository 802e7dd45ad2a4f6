"""Talking to an appliance: the paired appliances on this laptop, and CoAP requests under OSCORE.

Each paired appliance is a directory in the user's config dir holding its
address and serial (appliance.json) and the installer's OSCORE file context
(secret.json 0600; sequence numbers persist, so replay protection survives
restarts of either side). Every failure becomes a ClientError with one line
an installer can act on.
"""

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import platformdirs
from aiocoap import Code, Message
from aiocoap.numbers import ContentFormat
from aiocoap.oscore import FilesystemSecurityContext, NotAProtectedMessage
from vaxelbox.mgmt.security import PairingError, pairing_context, release, write_private

COAP_PORT = 5683
TIMEOUT = 15.0

EXIT_FAILED = 1  # the appliance refused (bad input, conflict, nothing staged, ...)
EXIT_UNREACHABLE = 3  # no answer, or no such appliance
EXIT_NOT_PAIRED = 4  # pair first (or pairing was revoked)


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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'coap+tcp' if tcp else 'coap'}://{host}:{self.port}/{path.lstrip('/')}"


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
        raise ClientError(f"paired with several appliances ({names}): choose one with --appliance")
    host, port = split_host_port(appliance)
    for p in paired:
        if appliance == p.serial or (p.host == host and (port is None or port == p.port)):
            return p
    raise ClientError(f"not paired with {appliance}: run vaxelctl pair {appliance}", EXIT_NOT_PAIRED)


def split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


class Connection:
    """An aiocoap client context with this laptop's OSCORE context for one appliance."""

    def __init__(self, paired: Paired | None) -> None:
        self.paired = paired
        self._context: aiocoap.Context | None = None
        self._security: FilesystemSecurityContext | None = None

    async def __aenter__(self) -> "Connection":
        self._context = await aiocoap.Context.create_client_context(
            transports=["oscore", "udp6", "tcpclient"]
        )
        if self.paired is not None:
            try:
                self._security = FilesystemSecurityContext(str(self.paired.directory / "oscore"))
            except Exception as exc:  # the lock: another vaxelctl is using this context right now
                raise ClientError(f"cannot use the pairing with {self.paired.serial}: {exc}") from None
            for scheme in ("coap", "coap+tcp"):
                host = f"[{self.paired.host}]" if ":" in self.paired.host else self.paired.host
                self._context.client_credentials[f"{scheme}://{host}:{self.paired.port}/*"] = self._security
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._context is not None:
            await self._context.shutdown()
        if self._security is not None:
            release(self._security)

    @property
    def context(self) -> aiocoap.Context:
        assert self._context is not None
        return self._context

    async def request(self, message: Message, timeout: float = TIMEOUT, blockwise: bool = True) -> Message:
        """One request; `blockwise=False` when the caller sends its own Block1 blocks."""
        try:
            request = self.context.request(message, handle_blockwise=blockwise)
            response = await asyncio.wait_for(request.response, timeout)
        except TimeoutError:
            where = message.get_request_uri()
            raise ClientError(f"no answer from {where} within {timeout:.0f} s", EXIT_UNREACHABLE) from None
        except aiocoap.error.NetworkError as exc:
            raise ClientError(f"cannot reach the appliance: {exc}", EXIT_UNREACHABLE) from None
        except NotAProtectedMessage:  # it answered in the clear: it has no context for us
            raise ClientError(
                "the appliance does not know this laptop (pairing revoked, or appliance reset): "
                "run vaxelctl pair",
                EXIT_NOT_PAIRED,
            ) from None
        except aiocoap.error.Error as exc:
            raise ClientError(f"the request failed: {exc}") from None
        check(response)
        return response

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
        request = self.context.request(Message(code=Code.GET, uri=self.uri(path), observe=0))
        first = await asyncio.wait_for(request.response, TIMEOUT)
        check(first)
        yield decode(first)
        async for notification in request.observation:
            check(notification)
            yield decode(notification)


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
    raise ClientError(f"{response.code}: {reason}" if reason else str(response.code))


def decode(response: Message) -> Any:
    if not response.payload:
        return None
    if response.opt.content_format == ContentFormat.CBOR:
        return cbor2.loads(response.payload)
    if response.opt.content_format == ContentFormat.JSON:
        return json.loads(response.payload)
    return response.payload.decode("utf-8", "replace")


async def pair(host: str, port: int, code: str, name: str) -> Paired:
    """Create this laptop's installer context on the appliance, with its pairing code."""
    try:
        bootstrap = pairing_context(code, secrets.token_bytes(8), appliance=False)
    except PairingError as exc:
        raise ClientError(str(exc)) from None
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
        try:
            response = await asyncio.wait_for(connection.context.request(message).response, TIMEOUT)
        except TimeoutError:
            message_ = f"no answer from {host}:{port}: is it the appliance?"
            raise ClientError(message_, EXIT_UNREACHABLE) from None
        except aiocoap.error.Error as exc:
            message_ = f"{host}:{port} refused the pairing code ({exc}): check it"
            raise ClientError(message_, EXIT_NOT_PAIRED) from None
        check(response)
        created = decode(response)
    return _store_pairing(host, port, created)


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
