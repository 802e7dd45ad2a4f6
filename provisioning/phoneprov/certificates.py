"""Making the site CA and the provisioning server's certificate (see phoneprov.pki).

This module imports cryptography (~8 MiB of RSS, which a process keeps for
life), so phoneprov.pki runs it in a child process, `python -m
phoneprov.certificates DIRECTORY LAN_HOST`, when a certificate has to be made
(first boot, or the LAN address moved): the running agent never loads it
(issue 12: the agent's RSS).
"""

import datetime
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
CA_YEARS = 30
SERVER_YEARS = 20  # phones cannot renew anything; the CA outlives the boards


def make(directory: Path, lan_host: str) -> None:
    """Create the CA in `directory` if it has neither of its files, and a server certificate for
    `lan_host` (an IP address or a DNS name) unless the one there names it already with its key
    beside it (one that cannot be read, or whose key is missing or another's, is made again: no
    phone can use it). Keys 0600, files whole or absent. Raises CaError when the CA is there but
    cannot be used or only one of its files is, OSError when a file cannot be read or written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key_path, ca_cert_path = directory / "ca.key", directory / "ca.pem"
    missing = [path for path in (ca_key_path, ca_cert_path) if not path.exists()]
    if len(missing) == 1:  # half a CA: a new one would silently replace the ca.pem phones trust
        raise _ca_error(missing[0], "missing")
    if missing:
        key, certificate = new_ca()
        _write(ca_key_path, key)
        _write(ca_cert_path, certificate)
    _check_ca(ca_key_path, ca_cert_path)  # even with a usable server pair: phones fetch ca.pem
    server_key_path, server_cert_path = directory / "server.key", directory / "server.pem"
    if not server_cert_path.exists() or not _server_usable(server_cert_path, server_key_path, lan_host):
        key, certificate = new_server(ca_key_path.read_bytes(), ca_cert_path.read_bytes(), lan_host)
        _write(server_key_path, key)
        _write(server_cert_path, certificate + ca_cert_path.read_bytes())  # the chain phones need


def new_ca() -> tuple[bytes, bytes]:
    """A new site CA: (its private key, its certificate), both PEM."""
    key = _new_key()
    return _key_pem(key), _ca_certificate(key).public_bytes(serialization.Encoding.PEM)


def new_server(ca_key_pem: bytes, ca_cert_pem: bytes, lan_host: str) -> tuple[bytes, bytes]:
    """A new server key and its certificate for `lan_host` (an IP address or a DNS name), signed by
    the CA: (key, certificate), both PEM."""
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = _new_key()
    server = _server_certificate(key, ca_key, ca_cert, lan_host)
    return _key_pem(key), server.public_bytes(serialization.Encoding.PEM)


def covers(certificate_pem: bytes, lan_host: str) -> bool:
    """Whether the (first) certificate names `lan_host` among its subject alternative names; False
    for one that is no certificate (cut, overwritten) or names nothing."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return _alt_names(lan_host)[0] in names


def _server_usable(cert_path: Path, key_path: Path, lan_host: str) -> bool:
    """Whether the server certificate names `lan_host` and `key_path` holds its private key (False
    when the key is missing, unreadable or another's: TLS could not load the pair)."""
    certificate_pem = cert_path.read_bytes()
    if not covers(certificate_pem, lan_host):
        return False
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError):
        return False
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    certified = x509.load_pem_x509_certificate(certificate_pem).public_key()
    return key.public_key().public_bytes(*public) == certified.public_bytes(*public)


class CaError(ValueError):
    """The site CA's files are there but cannot be used; the message names the file and what to do."""


def _check_ca(key_path: Path, cert_path: Path) -> None:
    """Raise CaError unless both CA files load and ca.key is ca.pem's key. The CA is never replaced
    here: phones trust it."""
    loaders = ((key_path, lambda data: serialization.load_pem_private_key(data, None)),
               (cert_path, x509.load_pem_x509_certificate))  # fmt: skip
    loaded: list[Any] = []  # the private key, then the certificate
    for path, load in loaders:
        try:
            loaded.append(load(path.read_bytes()))
        except ValueError as exc:
            reason = str(exc).split(". ")[0]  # cryptography's first sentence; it quotes no key bytes
            raise _ca_error(path, reason) from None
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    key, certificate = loaded
    if key.public_key().public_bytes(*public) != certificate.public_key().public_bytes(*public):
        raise _ca_error(key_path, "not the key of ca.pem")  # it would sign what phones reject


def _ca_error(path: Path, reason: str) -> CaError:
    return CaError(
        f"the site CA file {path} cannot be used ({reason}); phones trust this CA, so it is not"
        " replaced: restore ca.key and ca.pem, or delete both to make a new CA (then every"
        " phone needs the new /ca.pem)"
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ca_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vaxelbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Vaxelbox site CA {os.urandom(4).hex()}"),
        ]
    )
    return (
        _builder(name, name, key.public_key(), CA_YEARS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: rsa.RSAPrivateKey, ca_key: rsa.RSAPrivateKey, ca: x509.Certificate, lan_host: str
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, lan_host)])
    return (
        _builder(subject, ca.subject, key.public_key(), SERVER_YEARS)
        .add_extension(x509.SubjectAlternativeName(_alt_names(lan_host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, years: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365 * years))
    )


def _alt_names(lan_host: str) -> list[x509.GeneralName]:
    try:  # without an IPv6 zone (fe80::1%eth0): a certificate names the address only
        return [x509.IPAddress(ipaddress.ip_address(lan_host.partition("%")[0]))]
    except ValueError:
        return [x509.DNSName(lan_host)]


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all (power loss), and private from the first byte."""
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    """`python -m phoneprov.certificates DIRECTORY LAN_HOST`: 0, or 1 with one line on stderr saying
    why (phoneprov.pki puts it in its PkiError)."""
    try:
        make(Path(argv[0]), argv[1])
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # phoneprov.pki runs this in a child process
    sys.exit(main(sys.argv[1:]))
