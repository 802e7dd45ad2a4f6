"""The installer's day (issue 19), on the appliance's side without sockets: a resumed upload
continues only its own bundle, the signing key is read when needed, pairing codes name the
stray character, an installer can revoke itself, enrolment windows widen, and assigning a
phone again changes nothing."""

import io
import secrets
import time

import pytest
import typer
from aiocoap import oscore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from phoneprov.book import Enrolled
from vaxelbox.bundle import BundleError, pack, read_header
from vaxelbox.cli_help import plain_flags
from vaxelbox.inventory import already_assigned, not_in_site
from vaxelbox.mgmt.firmware import BundleMismatch, FirmwareUpdate, State, UpdateRefused
from vaxelbox.mgmt.security import Installers, PairingError, normalise_code
from vaxelbox.site import demo_site_text
from vaxelbox.store import Store

KEY = Ed25519PrivateKey.generate()


def bundle(size: int = 50_000, version: str = "1.0") -> bytes:
    out = io.BytesIO()
    pack(io.BytesIO(secrets.token_bytes(size)), out, version, KEY)
    return out.getvalue()


def digest(data: bytes) -> str:
    return read_header(io.BytesIO(data)).sha256


def test_a_block_of_another_bundle_is_refused_and_the_copy_on_the_appliance_stays(tmp_path):
    first, other, block = bundle(version="1.0"), bundle(version="2.0"), 4096
    update = FirmwareUpdate(tmp_path, KEY.public_key())
    update.write(0, first[:block], last=False, bundle=digest(first)[:16])
    assert update.status.sha256 == digest(first)
    with pytest.raises(BundleMismatch, match=r"holds 4096 bytes of another bundle \(version 1.0\)"):
        update.write(block, other[block : 2 * block], last=False, bundle=digest(other)[:16])
    assert (update.status.state, update.status.received) == (State.DOWNLOADING, block)
    assert (tmp_path / "bundle.part").read_bytes() == first[:block]
    update.write(block, first[block:], last=True, bundle=digest(first)[:16])  # its own sender resumes
    assert (tmp_path / "bundle").read_bytes() == first


def test_the_bundle_identity_survives_a_restart_even_when_the_header_came_in_small_blocks(tmp_path):
    data, block = bundle(), 64  # the header (about 180 bytes) arrives in the third block
    update = FirmwareUpdate(tmp_path, KEY.public_key())
    for offset in range(0, 5 * block, block):
        update.write(offset, data[offset : offset + block], last=False)
    restarted = FirmwareUpdate(tmp_path, KEY.public_key())  # power cut
    assert (restarted.status.sha256, restarted.status.version) == (digest(data), "1.0")
    assert restarted.status.total == len(data)
    with pytest.raises(BundleMismatch):
        restarted.write(5 * block, data[5 * block :], last=True, bundle="00" * 8)


def test_a_sender_whose_header_names_another_bundle_is_refused_when_the_header_arrives(tmp_path):
    data = bundle()
    update = FirmwareUpdate(tmp_path, KEY.public_key())
    with pytest.raises(BundleMismatch):
        update.write(0, data[:4096], last=False, bundle="ab" * 8)
    assert update.status.state == State.IDLE
    assert not (tmp_path / "bundle.part").exists()


def test_the_signing_key_is_read_from_its_file_when_a_download_starts(tmp_path):
    key_file, data = tmp_path / "firmware-signing.pub", bundle()
    update = FirmwareUpdate(tmp_path / "fw", key_file)
    with pytest.raises(UpdateRefused) as missing:
        update.write(0, data, last=True)
    assert str(missing.value) == (
        f"no firmware signing key on this appliance: install the public key from `vaxelctl fw keygen` "
        f"as {key_file}"
    )
    key_file.write_text("not a key")
    with pytest.raises(UpdateRefused, match="cannot be used"):
        update.write(0, data, last=True)
    key_file.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert update.write(0, data, last=True).state == State.DOWNLOADED  # no restart needed
    with pytest.raises(UpdateRefused, match="start the agent with --fw-key FILE"):
        FirmwareUpdate(tmp_path / "other", None).write(0, data, last=True)


def test_read_header_names_a_bundle_without_its_key():
    data = bundle(size=1234, version="7.1")
    header = read_header(io.BytesIO(data))
    assert (header.version, header.size) == ("7.1", 1234)
    with pytest.raises(BundleError, match="wrong magic"):
        read_header(io.BytesIO(b"PK\x03\x04 a zip file"))


def test_a_pairing_code_with_a_character_no_code_has_names_it():
    with pytest.raises(
        PairingError, match="'9' is not in any pairing code: it has letters A-Z and digits 2-7"
    ):
        normalise_code("ABCDE-FGHIJ-KLMNO-PQRS9")
    with pytest.raises(PairingError, match="'Ö' is not in any pairing code"):
        normalise_code("ÖBCDE-FGHIJ-KLMNO-PQRST")
    with pytest.raises(PairingError, match=r"20 letters and digits \(4 groups of 5\); this has 19"):
        normalise_code("ABCDE-FGHIJ-KLMNO-PQRS")
    assert normalise_code(" abcde fghij_klmno.pqrst ") == "ABCDEFGHIJKLMNOPQRST"


def test_an_installer_revoking_itself_still_answers_from_memory_and_leaves_nothing(tmp_path):
    installers = Installers(tmp_path / "installers")
    created = installers.create("Lisa")
    kid = bytes.fromhex(created["installer"])
    context = installers.get_oscore_context_for({oscore.COSE_KID: kid})
    assert context is not None
    assert installers.revoke(created["installer"])  # while its context protects this request
    assert context.sender_key  # the answer can still be protected
    context.sender_sequence_number = context.sequence_number_persisted + 1  # past what is on disk
    context.post_seqnoincrease()  # would write into the deleted directory; must not
    assert installers.get_oscore_context_for({oscore.COSE_KID: kid}) is None
    assert list((tmp_path / "installers").iterdir()) == []
    context.__del__()  # the collector later: nothing to write, nothing raised


def test_a_revocation_a_power_cut_interrupted_is_finished_at_start(tmp_path):
    installers = Installers(tmp_path / "installers")
    created = installers.create("Lisa")
    half = tmp_path / "installers" / f".revoked-{created['installer']}"
    (tmp_path / "installers" / created["installer"]).rename(half)
    assert installers.all() == []
    Installers(tmp_path / "installers")
    assert not half.exists()


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path)
    opened.sites.apply(demo_site_text(), "demo site")
    yield opened
    opened.close()


RECEPTION, SNOM = "0015654aa937", "000413922d24"


def test_an_open_enrolment_window_widens_and_never_closes_early(store):
    first = store.devices.open_enrolment(20, [RECEPTION])
    second = store.devices.open_enrolment(5, [SNOM])
    assert (second.until, second.macs) == (first.until, frozenset({RECEPTION, SNOM}))
    everyone = store.devices.open_enrolment(1)
    assert (everyone.until, everyone.macs) == (first.until, None)
    assert store.devices.open_enrolment(30, [SNOM]).macs is None  # still every assigned phone
    store.devices.close_enrolment()
    assert store.devices.open_enrolment(5, [SNOM]).macs == frozenset({SNOM})  # nothing open: its own


def test_naming_a_phone_in_a_widened_window_still_re_enrols_it(store):
    store.devices.enrol(SNOM, Enrolled("cred", 1.0, "192.0.2.50"))
    store.devices.open_enrolment(10)
    store.devices.open_enrolment(10, [SNOM])
    assert store.devices.enrolled(SNOM) is None


def test_an_expired_window_is_not_widened(store, monkeypatch):
    store.devices.open_enrolment(1, [RECEPTION])
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert store.devices.open_enrolment(5, [SNOM]).macs == frozenset({SNOM})


def test_which_phones_are_assigned_and_to_whom(store):
    assert not_in_site(store, [RECEPTION, "02005e100099"]) == ["02005e100099"]
    assert already_assigned(store, RECEPTION, ["anna"]) is not None
    assert already_assigned(store, RECEPTION, ["bjorn"]) is None
    assert already_assigned(store, RECEPTION, ["anna"], dect=True) is None
    assert already_assigned(store, "7c2f80e0d605", ["elin", "fredrik"], dect=True) is not None
    assert already_assigned(store, "02005e100099", ["anna"]) is None


def test_plain_flags_is_idempotent_and_leaves_value_options_alone():
    plain_flags()
    plain_flags()
    app = typer.Typer()

    @app.command()
    def command(name: str = "x", loud: bool = False) -> None:
        pass

    from typer.testing import CliRunner

    help_text = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["--help"]).output
    assert "<str>" in help_text
    assert "<bool>" not in help_text
