"""Real SIP peers for the tests: Kamailio as the cloud PBX, sipp as the phones.

Both come from Debian (`kamailio`, `sip-tester`); `make test` installs them.
A test that needs one fails loudly when it is missing, never skips.
"""

import asyncio
import datetime
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEERS = Path(__file__).with_name("peers")
SCENARIOS = PEERS / "sipp"
DBTEXT_SCHEMAS = Path("/usr/share/kamailio/dbtext/kamailio")  # empty tables, from Debian's kamailio
DOMAIN = "demo.vaxel.example.net"
USERS = {"101": "pw-101-secret", "102": "pw-102-secret", "103": "pw-103-secret"}


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    assert path, f"{name} is missing: `make test` installs it (Debian packages sip-tester, kamailio)"
    return path


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on `host` right now, below the kernel's ephemeral range: a
    port handed out for bind(0) or connect() (a process's own client socket) could be taken again
    by one before the test binds it, and was ("held by another program" at an agent's start)."""
    floor = _ephemeral_floor()
    for _ in range(1000):
        port = random.randrange(FREE_PORTS_FROM, floor)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            try:
                tcp.bind((host, port))
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} between {FREE_PORTS_FROM} and {floor}")


FREE_PORTS_FROM = 10000  # above the well-known ports tests use by default (5060, 5683, 8080...)


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out on its own (Linux: ip_local_port_range, 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def options_ping(address: tuple[str, int], timeout: float = 0.3) -> bytes | None:
    """Send one OPTIONS over UDP and return the reply, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ping{time.monotonic_ns()}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=ping\r\nTo: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: ping-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(request, address)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


@dataclass
class Kamailio:
    """A Kamailio process playing the cloud PBX on a loopback address."""

    address: str
    port: int
    workdir: Path
    process: subprocess.Popen | None = None
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    tls_port: int | None = None  # also listen for TLS there, with a certificate made for the test
    netns: str | None = None  # run inside this network namespace (the HIL suite's "cloud")
    presence: bool = False  # also a presence server for Event: dialog, fed by the calls it proxies
    challenge_invites: bool = False  # answer every new INVITE 407 first (proxy digest, as the bench's cloud)
    shm_mb: int = 64  # shared memory, MiB (-m): transactions live there; the bench's cloud needs more

    def start(self) -> "Kamailio":
        self.workdir.mkdir(parents=True, exist_ok=True)
        users = "\n".join(f'    $sht(passwd=>{u}) = "{p}";' for u, p in self.users.items())
        config = (PEERS / "kamailio.cfg").read_text()
        tls, tls_module = self._tls()
        presence = self._presence()
        for key, value in {"@ADDRESS@": self.address, "@PORT@": str(self.port), "@DOMAIN@": DOMAIN,
                           "@USERS@": users, "@RUNDIR@": str(self.workdir), "@TLS@": tls,
                           "@TLSMODULE@": tls_module, "@PRESENCE@": presence + self._invite_auth()}.items():  # fmt: skip
            config = config.replace(key, value)
        (self.workdir / "kamailio.cfg").write_text(config)
        self.log = (self.workdir / "kamailio.log").open("w")
        wrap = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.process = subprocess.Popen(
            [*wrap, tool("kamailio"), "-DD", "-E", "-f", str(self.workdir / "kamailio.cfg"), "-Y", str(self.workdir),
             "-m", str(self.shm_mb), "-M", "8"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited: {self.output()}")
            # Ready when the control socket is up and OPTIONS is answered (by this process:
            # the port was free when we chose it, and a second bind would have failed).
            if (self.workdir / "kamailio_ctl").exists() and (
                self.netns or options_ping((self.address, self.port))
            ):
                return self  # in a namespace the control socket alone says ready: listeners bind first
            time.sleep(0.1)
        raise RuntimeError(f"kamailio did not answer OPTIONS: {self.output()}")

    def _tls(self) -> tuple[str, str]:
        """Core and module lines for TLS: off, or a listener with a fresh self-signed certificate."""
        if self.tls_port is None:
            return "enable_tls=no", ""
        self.certificate = make_certificate(self.workdir, self.address)
        (self.workdir / "tls.cfg").write_text(
            f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"private_key = {self.workdir / 'key.pem'}\ncertificate = {self.certificate}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        )
        core = f"enable_tls=yes\nlisten=tls:{self.address}:{self.tls_port}"
        module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{self.workdir / "tls.cfg"}")'
        return core, module

    def _invite_auth(self) -> str:
        """The preprocessor line that has every new INVITE authenticate as its From user, or ""."""
        return "\n#!define WITH_INVITE_AUTH" if self.challenge_invites else ""

    def _presence(self) -> str:
        """The preprocessor line that turns presence on, with db_text's tables in the run directory."""
        if not self.presence:
            return ""
        tables = self.workdir / "dbtext"
        tables.mkdir(exist_ok=True)
        for table in ("version", "presentity", "active_watchers", "watchers", "pua", "xcap"):
            shutil.copyfile(DBTEXT_SCHEMAS / table, tables / table)
        return "#!define WITH_PRESENCE"

    def rpc(self, *command: str) -> str:
        """Run one RPC command over the control socket (kamcmd); returns its text output.

        Raises subprocess.CalledProcessError when kamcmd fails (e.g. an unknown command)."""
        return subprocess.run(
            [tool("kamcmd"), "-s", f"unix:{self.workdir}/kamailio_ctl", *command],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip

    def subscriptions(self, resource: str | None = None, event: str = "dialog") -> int:
        """Active subscriptions (watcher dialogs) to `resource` (a user, "102", or a SIP URI; None:
        every resource) for `event`, as Kamailio's presence server holds them now: its
        active_watchers table (written through to db_text), less the ones whose expiry has passed.

        Needs presence=True; raises RuntimeError when Kamailio cannot answer the query."""
        uri = resource if resource is None or resource.startswith("sip:") else f"sip:{resource}@{DOMAIN}"
        output = self.rpc("db_text.query", "select presentity_uri,event,expires from active_watchers")
        if "returned 0 rows" in output:
            return 0
        if not output.startswith("presentity_uri("):
            raise RuntimeError(f"kamcmd db_text.query: {output.strip()}")
        total = re.search(r"total rows (\d+) /", output)
        rows = [re.split(r"(?<!\\):", line.strip()) for line in output.splitlines()[1:] if line.strip()]
        rows = [[f.replace("\\:", ":") for f in row] for row in rows if len(row) == 3]
        if not total or len(rows) != int(total.group(1)):  # a reply cut short by the control socket
            raise RuntimeError(f"kamcmd db_text.query: {len(rows)} rows read of {output[-200:]!r}")
        now = time.time()
        return sum(1 for p, e, expires in rows if uri in (None, p) and e == event and int(expires) > now)

    def subscribes_received(self) -> int:
        """SUBSCRIBE requests Kamailio received since it started: new ones, their digest retries,
        refreshes and unsubscribes (the config counts each in the htable `presence`).

        Needs presence=True; raises RuntimeError when Kamailio has no such counter."""
        output = self.rpc("htable.get", "presence", "subscribes")
        match = re.search(r"value:\s*(\d+)", output)
        if not match:
            raise RuntimeError(f"kamcmd htable.get: {output.strip()}")
        return int(match.group(1))

    def stop(self) -> None:
        """End Kamailio's process group; also safe when start() never ran (a test's finally)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if log := getattr(self, "log", None):  # start() opens it
            log.close()

    def output(self) -> str:
        return (self.workdir / "kamailio.log").read_text()


@dataclass
class Phone:
    """One sipp phone running a scenario as user `user`; `finish()` waits and returns its verdict."""

    user: str
    process: asyncio.subprocess.Process
    workdir: Path

    async def finish(self, timeout: float = 40) -> None:
        output, _ = await asyncio.wait_for(self.process.communicate(), timeout)
        if self.process.returncode != 0:
            logs = "\n".join(
                p.read_text(errors="replace")[-3000:] for p in self.workdir.glob("*_messages.log")
            )
            raise AssertionError(
                f"phone {self.user}: sipp exit {self.process.returncode}\n{output.decode()[-1500:]}\n{logs}"
            )


async def phone(
    scenario: str,
    target: tuple[str, int],
    user: str,
    workdir: Path,
    *,
    callee: str = "",
    expires: int = 300,
    transport: str = "u1",
    timeout: float = 30,
    answers: str | None = None,
    hold: float = 5,
    port: int | None = None,
    local: str = "127.0.0.1",
    netns: str | None = None,
    password: str | None = None,
    keys: dict[str, str] | None = None,
) -> Phone:
    """Start one sipp phone on `local` (in `netns`, if given) registering `user` through `target`,
    running `scenario`.

    `answers` names the scenario for calls that reach the phone (sipp's
    out-of-call scenario), while `register_wait.xml` keeps it registered and
    reachable for `hold` seconds. `keys` are more sipp -key values (e.g. `states` for watch.xml).
    """
    workdir = workdir / f"phone-{user}-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    command = [
        *(["ip", "netns", "exec", netns] if netns else []),
        tool("sipp"), f"{target[0]}:{target[1]}", "-sf", str(SCENARIOS / scenario), "-i", local,
        "-t", transport, "-m", "1", "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
        "-trace_err", "-trace_msg", "-s", user, "-au", user, "-ap", password or USERS[user],
        "-key", "expires", str(expires), "-key", "callee", callee or "0", "-d", str(int(hold * 1000)),
    ]  # fmt: skip
    for key, value in (keys or {}).items():
        command += ["-key", key, value]
    if answers:
        command += ["-oocsf", str(SCENARIOS / answers)]
    if port:
        command += ["-p", str(port)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    return Phone(user, process, workdir)


def make_certificate(directory: Path, name: str) -> Path:
    """A self-signed certificate for `name` (and its key, key.pem) in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([_alt_name(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path = directory / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
