"""What `vaxelbox run` was asked to do, with every address and path resolved.

Precedence: a command-line flag, then the board file, then a default for a
development host (loopback, the user's state directory).
"""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import ifaddr  # zeroconf's, loaded by the agent anyway: psutil would cost it ~0.9 MiB more

from vaxelbox.hw.board import Board, load_board
from vaxelbox.site.fields import check_proxy_uri

SIP_PORT = 5060
# The cloud reaches us on another port than the phones do, so a one-armed board
# (one interface for both) still tells the two sides apart.
WAN_PORT_OFFSET = 2


class OptionsError(ValueError):
    """A flag or board setting the agent cannot run with; the message says which."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RunOptions:
    site_file: Path | None
    data_dir: Path
    board: Board | None
    lan: HostPort
    wan: HostPort
    cloud_override: str | None
    rate_limit: float = 200.0  # SIP messages per second per phone address; 0 = none
    http_port: int = 8080  # provisioning; a board uses 80 and 443 (the ports phones assume)
    https_port: int = 8443
    https_certificate: Path | None = None  # the installer's own (chain, then key); default: the site CA's
    https_key: Path | None = None
    coap_port: int = 5683  # management (CoAP over UDP and TCP, OSCORE)
    lan_tls_port: int | None = None  # SIP over TLS for phones; None: the LAN port + 1 (5061 beside 5060)
    firmware_key: Path | None = None  # Ed25519 public key (PEM) firmware bundles must be signed with

    @property
    def lan_tls(self) -> HostPort:
        """Where phones reach us over TLS: the LAN host, on 5061 by default (RFC 3261 §26.2.2)."""
        return HostPort(self.lan.host, self.lan_tls_port or self.lan.port + 1)

    @classmethod
    def resolve(
        cls,
        site_file: Path | None = None,
        data_dir: Path | None = None,
        board_file: Path | None = None,
        lan: str | None = None,
        cloud: str | None = None,
        wan: str | None = None,
    ) -> "RunOptions":
        board = load_board(board_file) if board_file else None
        if data_dir is None:
            data_dir = board.storage.data_dir if board else default_data_dir()
        lan_address = parse_host_port(lan, flag="--lan") if lan else _board_address(board, "lan")
        if wan:
            wan_address = parse_host_port(wan, flag="--wan")
        elif board is not None:
            wan_address = _board_address(board, "wan")
        else:
            wan_address = HostPort(lan_address.host, lan_address.port + WAN_PORT_OFFSET)
        return cls(
            site_file=site_file,
            data_dir=data_dir,
            board=board,
            lan=lan_address,
            wan=wan_address,
            cloud_override=_cloud_uri(cloud) if cloud else None,
            http_port=80 if board else 8080,
            https_port=443 if board else 8443,
        )


def parse_host_port(text: str, default_port: int = SIP_PORT, flag: str = "--lan") -> HostPort:
    """`192.0.2.1:5060`, `[2001:db8::1]:5060`, or a bare address with the default port."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(text, rest.removeprefix(":"), flag)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(text, port_text, flag)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise OptionsError(f"{flag} {text!r}: {host!r} is not an IP address") from None
    return HostPort(host, port)


def _port(text: str, port_text: str, flag: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise OptionsError(f"{flag} {text!r}: port must be 1-65535")
    return int(port_text)


def _board_address(board: Board | None, side: str) -> HostPort:
    """The IPv4 address of the board's LAN or WAN interface, on the SIP port for that side."""
    port = SIP_PORT if side == "lan" else SIP_PORT + WAN_PORT_OFFSET
    if board is None:
        return HostPort("127.0.0.1", port)
    name = board.interfaces.lan if side == "lan" else board.wan_interface
    adapters = {a.name: a for a in ifaddr.get_adapters(include_unconfigured=True)}  # getifaddrs(3)
    if name not in adapters:
        raise OptionsError(f"board {board.name}: {side.upper()} interface {name!r} does not exist here")
    ipv4 = [ip.ip for ip in adapters[name].ips if isinstance(ip.ip, str)]  # an IPv6 one is a tuple
    if not ipv4:
        raise OptionsError(f"board {board.name}: {side.upper()} interface {name!r} has no IPv4 address yet")
    return HostPort(ipv4[0], port)


def default_data_dir() -> Path:
    """The agent's data directory on a development host when nothing else says: the user's state
    directory."""
    import platformdirs  # a development host's default only: a board's data lives where it says

    return Path(platformdirs.user_state_dir("vaxelbox"))


def _cloud_uri(text: str) -> str:
    try:
        return check_proxy_uri(text)
    except ValueError as exc:
        raise OptionsError(f"--cloud: {exc}") from None
