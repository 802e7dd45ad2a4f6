"""The site CA and the provisioning server's certificate, created on the appliance.

RSA 2048, because older phone firmware cannot verify ECDSA. Validity starts
in 2020: a phone's clock is often wrong until NTP has answered, and a
certificate "not yet valid" would stop it from ever reaching NTP settings.
Keys are written 0600; nothing here ever leaves the appliance but the CA
certificate (served at /ca.pem) and the server certificate.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
CA_YEARS = 30
SERVER_YEARS = 20  # phones cannot renew anything; the CA outlives the boards


@dataclass(frozen=True)
class ServerIdentity:
    certificate: Path  # server certificate followed by the CA certificate (the chain phones need)
    key: Path
    ca_certificate: Path


def ensure_site_pki(directory: Path, lan_host: str) -> ServerIdentity:
    """The CA (created once) and a server certificate for `lan_host` (re-issued if the address changed)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key_path, ca_cert_path = directory / "ca.key", directory / "ca.pem"
    if not ca_cert_path.exists() or not ca_key_path.exists():
        key = _new_key()
        _write(ca_key_path, _key_pem(key))
        _write(ca_cert_path, _ca_certificate(key).public_bytes(serialization.Encoding.PEM))
    identity = ServerIdentity(directory / "server.pem", directory / "server.key", ca_cert_path)
    if not _covers(identity.certificate, lan_host):
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        key = _new_key()
        server = _server_certificate(key, ca_key, ca_cert, lan_host)
        _write(identity.key, _key_pem(key))
        _write(
            identity.certificate, server.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes()
        )
    return identity


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
    try:
        return [x509.IPAddress(ipaddress.ip_address(lan_host))]
    except ValueError:
        return [x509.DNSName(lan_host)]


def _covers(certificate: Path, lan_host: str) -> bool:
    if not certificate.exists():
        return False
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return _alt_names(lan_host)[0] in names


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
