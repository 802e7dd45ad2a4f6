"""What the agent tells the person who started it: a summary once it is ready (where it listens,
the pairing code on a development host, what to type next), and, when a port is taken, which one
and the flag that moves it.

Commands are printed as they can be typed in another terminal in the same directory: bare when
that very program is on PATH, else by its path (`.venv/bin/vaxelctl` after `make run`).
"""

import errno
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from vaxelbox.agent.options import WAN_PORT_OFFSET, RunOptions, default_data_dir
from vaxelbox.site import demo_site

DEFAULT_COAP_PORT = 5683  # vaxelctl's default: `vaxelctl pair HOST` needs no port then


@dataclass(frozen=True)
class Port:
    """A port the agent binds: what for, where, over which transports, and the flag that moves it."""

    purpose: str
    host: str
    port: int
    transports: tuple[str, ...]
    flag: str  # "--lan" and "--wan" take HOST:PORT; the others a port number

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def moved_to(self, port: int) -> str:
        """The flag and value that put this service on `port`, e.g. `--lan 127.0.0.1:5070`."""
        if self.flag in ("--lan", "--wan"):
            return f"{self.flag} {Port(self.purpose, self.host, port, self.transports, self.flag)}"
        return f"{self.flag} {port}"


def sip_ports(options: RunOptions) -> list[Port]:
    return [
        Port("SIP for phones (LAN)", options.lan.host, options.lan.port, ("udp", "tcp"), "--lan"),
        Port("SIP over TLS for phones", options.lan.host, options.lan_tls.port, ("tcp",), "--lan-tls-port"),
        Port("SIP for the cloud (WAN)", options.wan.host, options.wan.port, ("udp", "tcp"), "--wan"),
    ]


def provisioning_ports(options: RunOptions) -> list[Port]:
    host = options.lan.host
    return [
        Port("provisioning HTTP", host, options.http_port, ("tcp",), "--http-port"),
        Port("provisioning HTTPS", host, options.https_port, ("tcp",), "--https-port"),
    ]


def management_ports(options: RunOptions) -> list[Port]:
    return [Port("management (CoAP)", options.lan.host, options.coap_port, ("udp", "tcp"), "--coap-port")]


def cannot_listen(
    service: str, ports: list[Port], exc: OSError, options: RunOptions, later: list[Port] | None = None
) -> str:
    """The StartupError text for a service whose sockets would not bind: which ports are taken
    (found by trying each again: the error often does not say), first the service whose port is
    held, then those of services not started yet (`later`), so one retry with the suggested flags
    can succeed. Two lines when ports are held: what holds which, then the flags that move them."""
    where = " and ".join(str(p) for p in ports)
    if exc.errno == errno.EACCES:
        flags = " or ".join(p.flag for p in ports)
        return (
            f"cannot listen for {service} on {where}: permission denied; ports below 1024 need root "
            f"(or CAP_NET_BIND_SERVICE), or choose others with {flags}"
        )
    if not any(in_use(p) for p in ports):
        return f"cannot listen for {service} on {where}: {exc.strerror or exc}"
    first, *others = [p for p in [*ports, *(later or [])] if in_use(p)]
    held = f"{_named(first)} is held by another program (another make run or vaxelbox run?)"
    if others:
        held += f"; so {'is' if len(others) == 1 else 'are'} {', '.join(_named(p) for p in others)}"
    busy = [first, *others]
    flags = " ".join(_moved(p, options) for p in busy if not _follows_lan(p, busy, options))
    return f'{held}\nchoose others: make run ARGS="{flags}", or vaxelbox run {flags}'


def _named(port: Port) -> str:
    """e.g. `provisioning HTTP 127.0.0.1:8080 (tcp)`: the transports another program holds."""
    return f"{port.purpose} {port} ({'+'.join(held(port) or port.transports)})"


def _wan_follows_lan(options: RunOptions) -> bool:
    """On a development host the WAN side defaults to the LAN's address at +2: --lan moves both."""
    wan, lan = options.wan, options.lan
    return options.board is None and (wan.host, wan.port) == (lan.host, lan.port + WAN_PORT_OFFSET)


def _follows_lan(port: Port, busy: list[Port], options: RunOptions) -> bool:
    return port.flag == "--wan" and _wan_follows_lan(options) and any(p.flag == "--lan" for p in busy)


def _moved(port: Port, options: RunOptions) -> str:
    """The flag that moves `port` to the first free port 10, 20, ... above it."""
    offsets = (0, WAN_PORT_OFFSET) if port.flag == "--lan" and _wan_follows_lan(options) else (0,)
    choice = next(
        (
            candidate
            for candidate in range(port.port + 10, min(port.port + 500, 65536 - WAN_PORT_OFFSET), 10)
            if not any(in_use(Port("", port.host, candidate + o, port.transports, "")) for o in offsets)
        ),
        port.port + 10,
    )
    return port.moved_to(choice)


def in_use(port: Port) -> bool:
    """Whether another program holds `port` on one of its transports (binding it now fails)."""
    return bool(held(port))


def held(port: Port) -> tuple[str, ...]:
    """The transports of `port` another program holds (binding them now fails), e.g. ("udp",)."""
    family = socket.AF_INET6 if ":" in port.host else socket.AF_INET
    taken = []
    for transport in port.transports:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                probe.bind((port.host, port.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    taken.append(transport)
    return tuple(taken)


@dataclass(frozen=True)
class Ready:
    """What the summary reports, gathered by the agent when it is ready."""

    version: str
    site: str
    site_version: int
    options: RunOptions
    cloud: list[str]  # the proxy URIs in use, first tried first
    cloud_state: str  # up, degraded, down, or probing (no answer nor failure yet)
    pairing_code: str | None  # on a development host only (a board's is on its label)


def ready_summary(ready: Ready) -> str:
    """A few lines for a person at a terminal, at most 80 columns where addresses are short."""
    options = ready.options
    lan, tls, wan = sip_ports(options)
    http, https = provisioning_ports(options)
    (coap,) = management_ports(options)
    first, *more = ready.cloud
    cloud = f"{first} (+{len(more)} more)" if more else first
    lines = [
        f"Vaxelbox {ready.version} is ready: site {ready.site!r} version {ready.site_version}.",
        f"  phones (SIP)      {lan} udp+tcp, {tls.port} tls",
        f"  cloud side (SIP)  {wan} udp+tcp",
        f"  provisioning      http://{http}  https://{https}",
        f"  management        coap://{coap} udp+tcp (vaxelctl)",
    ]
    if ready.cloud == _demo_cloud():
        lines.append(f"  cloud PBX         {cloud}")
        lines.append(f"                    {ready.cloud_state}; the demo's is made up: --cloud URI for yours")
    else:
        lines.append(f"  cloud PBX         {cloud} ({ready.cloud_state})")
    if ready.pairing_code:
        lines.append(f"  pairing code      {ready.pairing_code}")
    lines.append(f"  data              {_shown(options.data_dir)}")
    lines += ["Next, in another terminal here:", *(f"  {step}" for step in next_steps(ready))]
    if not on_path("vaxelctl") and (_bin_dir() / "activate").exists():
        lines.append(f"  (or `. {_shown(_bin_dir() / 'activate')}` first, then plain vaxelctl and vaxelbox)")
    lines.append("Ctrl-C stops the agent.")
    return "\n".join(lines) + "\n"


def _demo_cloud() -> list[str]:
    return list(demo_site().cloud.proxies)


def next_steps(ready: Ready) -> list[str]:
    """Pair this laptop, look at the appliance, list the phones provisioning has seen."""
    options = ready.options
    host = options.lan.host
    address = host if options.coap_port == DEFAULT_COAP_PORT else str(management_ports(options)[0])
    code = ready.pairing_code or "CODE-FROM-THE-LABEL"
    data = [] if options.data_dir == default_data_dir() else ["--data", _shown(options.data_dir)]
    return [
        shlex.join([command("vaxelctl"), "pair", address, "--code", code]),
        shlex.join([command("vaxelctl"), "status"]),
        shlex.join([command("vaxelbox"), "phones", *data]),
    ]


def command(name: str) -> str:
    """`name` as it can be typed: bare if this installation's copy is what PATH finds, else its path."""
    beside = _bin_dir() / name
    if on_path(name) or not beside.exists():
        return name
    shown = _shown(beside)
    return shown if "/" in shown else f"./{shown}"  # a bare name would be looked up on PATH


def on_path(name: str) -> bool:
    found = shutil.which(name)
    beside = _bin_dir() / name
    return found is not None and beside.exists() and Path(found).resolve() == beside.resolve()


def _bin_dir() -> Path:
    """The directory of this Python's scripts (a virtual environment's bin/); not resolved, since a
    venv's python is a symlink to the system's."""
    return Path(sys.executable).parent


def _shown(path: Path) -> str:
    """`path` relative to the working directory when inside it (shorter to read and to type)."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
