"""The site CA and the provisioning server's certificate, created on the appliance.

RSA 2048, because older phone firmware cannot verify ECDSA. Validity starts
in 2020: a phone's clock is often wrong until NTP has answered, and a
certificate "not yet valid" would stop it from ever reaching NTP settings.
Keys are written 0600; nothing here ever leaves the appliance but the CA
certificate (served at /ca.pem) and the server certificate.

Checking the files at each start needs only Python's ssl. Making them needs
cryptography (phoneprov.certificates), which costs a process ~8 MiB of RSS
for life, so it runs in a child process and the agent never loads it (issue 12).
"""

import ipaddress
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerIdentity:
    certificate: Path  # server certificate followed by the CA certificate (the chain phones need)
    key: Path
    ca_certificate: Path


class PkiError(RuntimeError):
    """The certificates could not be made; the message has the reason (the child's last line)."""


def ensure_site_pki(directory: Path, lan_host: str) -> ServerIdentity:
    """The CA (created once) and a server certificate for `lan_host` (re-issued if the address
    changed), in `directory` (0700). Raises PkiError if they had to be made and could not be."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = ServerIdentity(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    ca = identity.ca_certificate, directory / "ca.key"
    server = identity.certificate, identity.key
    if not (_pair_loads(*ca) and _covers(identity.certificate, lan_host) and _pair_loads(*server)):
        _make_in_child(directory, lan_host)  # first boot, the LAN address moved, or a file broke
    return identity


def _make_in_child(directory: Path, lan_host: str) -> None:
    """phoneprov.certificates.make(directory, lan_host) in a child Python, which imports
    cryptography, and the modules of this process (its sys.path)."""
    done = subprocess.run(
        [sys.executable, "-m", "phoneprov.certificates", str(directory), lan_host],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:  # its last line says why: its own message, or a traceback's exception
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise PkiError(f"cannot make the site certificates in {directory}: {why}")


def _covers(certificate: Path, lan_host: str) -> bool:
    """Whether the server certificate (the file's first) names `lan_host` in its subject alternative
    names, read with CPython's ssl (OpenSSL's decoder, the one getpeercert uses). False when the
    file is missing or this ssl cannot read it: phoneprov.certificates then checks, in the child."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None or not certificate.exists():
        return False
    try:
        names = decode(str(certificate)).get("subjectAltName", ())
    except ssl.SSLError:
        return False  # unreadable here: the child looks with cryptography and issues one if it is none
    return _alt_name(lan_host) in {_alt_name(value, kind) for kind, value in names}


def _pair_loads(certificate: Path, key: Path) -> bool:
    """Whether OpenSSL takes the certificate with its key, as TLS will load them: False for a file
    that is missing or unreadable or a key that is another certificate's (the child re-issues a
    server pair, and refuses a site CA with a CaError naming the file)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certificate, key)
    except OSError:  # ssl.SSLError is one
        return False
    return True


def _alt_name(host: str, kind: str | None = None) -> tuple[str, object]:
    """A subject alternative name as ssl reports it, (kind, value), comparable by value: addresses
    as ipaddress objects (OpenSSL writes 2001:DB8:0:0:0:0:0:1 for 2001:db8::1), names as written.
    `kind` None: `host` as phoneprov.certificates names it (an address if it parses as one)."""
    if kind in (None, "IP Address"):
        try:
            return "IP Address", ipaddress.ip_address(host.partition("%")[0])  # no zone: as certified
        except ValueError:
            if kind is not None:
                return kind, host  # OpenSSL's "<invalid>"
    return kind or "DNS", host
