"""The site CA and server certificate: verified by openssl itself, private keys private, stable."""

import ssl
import subprocess
import time

import pytest
from cryptography import x509
from phoneprov.pki import PkiError, ensure_site_pki


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


def test_an_unreadable_server_certificate_is_issued_again_under_the_same_ca(tmp_path):
    """A server.pem that cannot be read (cut, overwritten) or names no address: no phone can use it,
    so it is issued again under the CA phones trust; it stopped the agent with a traceback."""
    first = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    ca = first.ca_certificate.read_bytes()
    for broken in (b"garbage\n", first.certificate.read_bytes()[:300], ca):  # ca: a PEM with no SAN
        first.certificate.write_bytes(broken)
        again = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
        assert again.ca_certificate.read_bytes() == ca
        cert = x509.load_pem_x509_certificate(again.certificate.read_bytes())
        assert "192.0.2.1" in str(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_an_unusable_ca_is_refused_in_one_line_that_names_it(tmp_path):
    """The CA cannot be replaced silently (phones trust it): the error names the file and what to do,
    in one line, not the child's traceback (source lines, carets), and quotes nothing of the key."""
    first = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    ca_key = tmp_path / "pki" / "ca.key"
    ca_key.write_text("-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PkiError) as refused:
        ensure_site_pki(tmp_path / "pki", "192.0.2.77")  # the address moved: a certificate must be made
    reason = str(refused.value)
    assert len(reason.splitlines()) == 1, reason
    assert str(ca_key) in reason, reason
    assert "^" not in reason, reason  # no source line of the child's traceback
    assert "Traceback" not in reason, reason
    assert "U0VDUkVU" not in reason, reason
    assert first.certificate.exists()


def test_a_server_key_that_is_missing_or_not_the_certificates_is_issued_again(tmp_path):
    """server.pem names the address but server.key is gone or another certificate's: TLS cannot load
    the pair (the agent stopped in a KEY_VALUES_MISMATCH traceback at every start), so both are
    issued again under the same CA; a matching pair is kept byte for byte."""
    other = ensure_site_pki(tmp_path / "other", "192.0.2.1")
    first = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    ca = first.ca_certificate.read_bytes()
    for breakage in (lambda: first.key.write_bytes(other.key.read_bytes()), first.key.unlink):
        breakage()
        again = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(again.certificate, again.key)
        assert again.ca_certificate.read_bytes() == ca
    kept = again.certificate.read_bytes(), again.key.read_bytes()
    ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    assert (again.certificate.read_bytes(), again.key.read_bytes()) == kept


def test_a_scoped_ipv6_lan_address_keeps_its_certificate(tmp_path):
    """fe80::1%lo (a link-local LAN address, as --lan [fe80::1%lo]:5060 takes it): a certificate
    cannot hold the zone, so it names fe80::1; it was issued again at every start, as the zone made
    the address compare unequal (a phone pinning the certificate lost it at each restart)."""
    first = ensure_site_pki(tmp_path / "pki", "fe80::1%lo").certificate.read_bytes()
    assert ensure_site_pki(tmp_path / "pki", "fe80::1%lo").certificate.read_bytes() == first
    cert = x509.load_pem_x509_certificate(first)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["fe80::1"]


@pytest.mark.parametrize("broken", ["ca.key", "ca.pem", "ca.key of another site"])
def test_an_unusable_ca_is_refused_even_when_the_server_certificate_is_fine(tmp_path, broken):
    """ca.key or ca.pem overwritten (or another site's key) while server.pem and server.key still
    load: the agent started anyway, served the garbage as /ca.pem (the phones' trust anchor) and
    would have signed the next server certificate with a key phones do not trust."""
    ensure_site_pki(tmp_path / "other", "192.0.2.1")
    first = ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    name = broken.split()[0]
    other_key = (tmp_path / "other" / "ca.key").read_bytes()
    (tmp_path / "pki" / name).write_bytes(other_key if "another" in broken else b"garbage\n")
    server = first.certificate.read_bytes()
    with pytest.raises(PkiError) as refused:
        ensure_site_pki(tmp_path / "pki", "192.0.2.1")
    assert str(tmp_path / "pki" / name) in str(refused.value), refused.value
    assert len(str(refused.value).splitlines()) == 1, refused.value
    assert first.certificate.read_bytes() == server  # nothing was re-issued under a broken CA


@pytest.mark.parametrize("lost", ["ca.key", "ca.pem"])
def test_half_a_ca_is_refused_not_replaced(tmp_path, lost):
    """Only one of the CA's files lost: a new CA was made in silence, replacing the ca.pem every phone
    trusts. Refused like an unusable CA (restore it, or delete both), and nothing is rewritten."""
    ensure_site_pki(tmp_path, "192.0.2.1")
    kept = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name != lost}
    (tmp_path / lost).unlink()
    with pytest.raises(PkiError) as refused:
        ensure_site_pki(tmp_path, "192.0.2.1")
    assert f"{tmp_path / lost} cannot be used (missing)" in str(refused.value), refused.value
    assert len(str(refused.value).splitlines()) == 1, refused.value
    assert not (tmp_path / lost).exists()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == kept
