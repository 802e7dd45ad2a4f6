"""The site CA and server certificate: verified by openssl itself, private keys private, stable."""

import subprocess
import time

from cryptography import x509
from phoneprov.pki import ensure_site_pki


def test_server_certificate_verifies_against_site_ca_for_the_lan_address(tmp_path):
    identity = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            identity.ca_certificate,
            "-verify_ip",
            "192.0.2.1",
            identity.certificate,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wrong = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            identity.ca_certificate,
            "-verify_ip",
            "192.0.2.2",
            identity.certificate,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    for key in (tmp_path / "pki" / "ca.key", identity.key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700


def test_ca_is_kept_and_server_certificate_follows_the_address(tmp_path):
    first = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    ca, server = first.ca_certificate.read_bytes(), first.certificate.read_bytes()
    assert ensure_site_pki(tmp_path / "pki", "192.0.2.1").certificate.read_bytes() == server
    moved = ensure_site_pki(tmp_path / "pki", "192.0.2.77")
    assert moved.ca_certificate.read_bytes() == ca  # phones that trust the CA keep trusting
    cert = x509.load_pem_x509_certificate(moved.certificate.read_bytes())
    assert "192.0.2.77" in str(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    assert cert.not_valid_before_utc.year == 2020  # phones with unset clocks still accept it
    assert cert.not_valid_after_utc.year > time.gmtime().tm_year + 10
