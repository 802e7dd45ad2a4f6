"""Management's pure parts, without sockets: bundles, the firmware update state, pairing secrets."""

import io
import os
import secrets

import pytest
from aiocoap import oscore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from vaxelbox.bundle import BundleError, BundleVerifier, pack
from vaxelbox.mgmt.firmware import FirmwareUpdate, Result, State, UpdateRefused
from vaxelbox.mgmt.security import (
    CLIENT_PAIRING_ID,
    Installers,
    PairingError,
    PairingSecret,
    normalise_code,
)

KEY = Ed25519PrivateKey.generate()
IMAGE = os.urandom(300_000)


def bundle(image: bytes = IMAGE, key: Ed25519PrivateKey = KEY) -> bytes:
    out = io.BytesIO()
    pack(io.BytesIO(image), out, "1.2.3", key)
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 70_000), min_size=1, max_size=30))
def test_any_split_of_a_good_bundle_verifies(cuts):
    data, verifier, offset = bundle(), BundleVerifier(KEY.public_key()), 0
    for size in cuts:
        verifier.feed(data[offset : offset + size])
        offset += size
    verifier.feed(data[offset:])
    header = verifier.finish()
    assert (header.version, header.size) == ("1.2.3", len(IMAGE))


def test_a_forged_header_is_refused_in_the_first_block():
    data = bytearray(bundle())
    data[25] ^= 1
    with pytest.raises(BundleError, match="signature"):
        BundleVerifier(KEY.public_key()).feed(bytes(data[:1024]))


def test_another_key_and_a_foreign_file_are_refused():
    with pytest.raises(BundleError, match="signature"):
        BundleVerifier(KEY.public_key()).feed(bundle(key=Ed25519PrivateKey.generate())[:1024])
    with pytest.raises(BundleError, match="magic") as refused:
        BundleVerifier(KEY.public_key()).feed(b"\x7fELF" + bytes(100))
    assert refused.value.unsupported


def test_a_tampered_or_short_image_is_refused_at_the_end():
    data = bytearray(bundle())
    data[-10] ^= 1
    verifier = BundleVerifier(KEY.public_key())
    verifier.feed(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        verifier.finish()
    short = BundleVerifier(KEY.public_key())
    short.feed(bundle()[:-1])
    with pytest.raises(BundleError, match="bytes"):
        short.finish()


def test_firmware_update_follows_lwm2m_states_and_resumes_after_a_restart(tmp_path):
    data, block = bundle(), 1024 * 62
    update = FirmwareUpdate(tmp_path, KEY.public_key())
    assert update.status.state == State.IDLE
    update.write(0, data[:block], last=False)
    update.write(block, data[block : 2 * block], last=False)
    assert update.status.state == State.DOWNLOADING
    with pytest.raises(UpdateRefused) as out_of_order:
        update.write(5 * block, data[5 * block : 6 * block], last=False)
    assert out_of_order.value.resume_at == 2 * block
    restarted = FirmwareUpdate(tmp_path, KEY.public_key())  # power cut: the file is the truth
    assert (restarted.status.state, restarted.status.received) == (State.DOWNLOADING, 2 * block)
    for offset in range(2 * block, len(data), block):
        restarted.write(offset, data[offset : offset + block], last=offset + block >= len(data))
    assert restarted.status.state == State.DOWNLOADED
    assert (tmp_path / "bundle").read_bytes() == data
    with pytest.raises(UpdateRefused, match="has no update slots"):
        restarted.update()


def test_a_failed_download_returns_to_idle_with_the_result(tmp_path):
    update = FirmwareUpdate(tmp_path, KEY.public_key())
    data = bytearray(bundle())
    data[-5] ^= 1
    with pytest.raises(BundleError):
        update.write(0, bytes(data), last=True)
    assert (update.status.state, update.status.result) == (State.IDLE, Result.INTEGRITY_FAILURE)
    assert not (tmp_path / "bundle.part").exists()
    no_key = FirmwareUpdate(tmp_path / "other", None)
    with pytest.raises(UpdateRefused, match="no firmware signing key"):
        no_key.write(0, bytes(data), last=True)


def test_pairing_codes_as_typed_from_a_label():
    assert normalise_code("abcde-fghij klmno pqrs7") == "ABCDEFGHIJKLMNOPQRS7"
    assert normalise_code("0BCDE-1GHIJ-KLMN8-PQRST") == "OBCDEIGHIJKLMNBPQRST"  # look-alikes
    with pytest.raises(PairingError, match="20 letters"):
        normalise_code("ABCDE-FGHIJ")


def test_a_pairing_attempt_is_spent_for_good(tmp_path):
    secret = PairingSecret(tmp_path)
    assert (tmp_path / "pairing-code").stat().st_mode & 0o777 == 0o600
    attempt = {oscore.COSE_KID: CLIENT_PAIRING_ID, oscore.COSE_KID_CONTEXT: secrets.token_bytes(8)}
    assert secret.context_for(attempt) is not None
    secret.spend(attempt[oscore.COSE_KID_CONTEXT])
    assert secret.context_for(attempt) is None
    assert PairingSecret(tmp_path).context_for(attempt) is None  # also after a restart
    assert secret.context_for({**attempt, oscore.COSE_KID: b"other"}) is None


def test_installers_are_created_listed_and_revoked(tmp_path):
    installers = Installers(tmp_path / "installers")
    created = installers.create("Lisa")
    kid = bytes.fromhex(created["installer"])
    assert installers.get_oscore_context_for({oscore.COSE_KID: kid}) is not None
    assert [i.name for i in installers.all()] == ["Lisa"]
    assert installers.revoke(created["installer"])
    assert installers.get_oscore_context_for({oscore.COSE_KID: kid}) is None
    assert not installers.revoke("../etc")


def test_security_names_contexts_by_the_cose_labels_aiocoap_uses():
    """mgmt.security looks contexts up without importing aiocoap.oscore (issue 12), by its own copy
    of the two COSE header labels; a copy that drifted would find no context for any request."""
    from vaxelbox.mgmt import security

    assert (security.COSE_KID, security.COSE_KID_CONTEXT) == (oscore.COSE_KID, oscore.COSE_KID_CONTEXT)
