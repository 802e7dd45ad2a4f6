"""Applying a staged bundle to directory slots: install, trial, commit / roll back, refusals."""

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from vaxelbox import __version__
from vaxelbox.bundle import pack
from vaxelbox.mgmt.firmware import FirmwareUpdate, Result, State, UpdateRefused
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots, build_image, install_tree

KEY = Ed25519PrivateKey.generate()
PACKAGE = Path(__file__).resolve().parents[1] / "vaxelbox"


def staged(tmp_path: Path, version: str, boards: tuple[str, ...]) -> tuple[FirmwareUpdate, list[str]]:
    """A FirmwareUpdate on slots in tmp_path/slots (A = this tree) with a bundle staged."""
    store = DirectorySlots(tmp_path / "slots")
    install_tree(PACKAGE, __version__, store.slot_dir("A"))
    image, bundle = io.BytesIO(), io.BytesIO()
    build_image(PACKAGE, version, image)
    image.seek(0)
    pack(image, bundle, version, KEY, boards)
    restarts: list[str] = []
    update = FirmwareUpdate(tmp_path / "fw", KEY.public_key(), store, "simboard", restarts.append)
    update.write(0, bundle.getvalue(), last=True)
    return update, restarts


def test_apply_installs_the_image_into_slot_b_and_restarts(tmp_path: Path) -> None:
    update, restarts = staged(tmp_path, "9.0.0", ("simboard",))
    status = update.update()
    assert status.state == State.UPDATING
    assert restarts == ["trying 9.0.0 in slot B"]
    slot_b = tmp_path / "slots" / "B"
    assert (slot_b / "vaxelbox" / "__main__.py").exists()
    assert (slot_b / "vaxelbox-9.0.0.dist-info" / "METADATA").exists()
    assert update.slot_view() == {
        "A": {"version": __version__, "state": "standby"},
        "B": {"version": "9.0.0", "state": "trial"},
    }


def test_the_new_agent_commits_itself_once_healthy(tmp_path: Path) -> None:
    update, _ = staged(tmp_path, "9.0.0", ("simboard",))
    update.update()
    store = update.slot_store
    assert store is not None
    store.change(lambda s: slots.boot(s, now=0.0, deadline_s=1e12))  # the init boots B
    restarted = FirmwareUpdate(tmp_path / "fw", KEY.public_key(), store, "simboard")
    restarted.healthy()
    assert (restarted.status.state, restarted.status.result) == (State.IDLE, Result.SUCCESS)
    assert restarted.slot_view()["B"] == {"version": "9.0.0", "state": "running"}  # type: ignore[index]


def test_a_rolled_back_trial_shows_update_failed_with_the_reason(tmp_path: Path) -> None:
    update, _ = staged(tmp_path, "9.0.0", ("simboard",))
    update.update()
    store = update.slot_store
    assert store is not None
    store.change(lambda s: slots.boot(s, now=0.0, deadline_s=30))
    store.change(lambda s: slots.failed(s, slots.Failure.CRASH, "the agent exited with status 1"))
    back = FirmwareUpdate(tmp_path / "fw", KEY.public_key(), store, "simboard")
    assert (back.status.state, back.status.result) == (State.IDLE, Result.UPDATE_FAILED)
    assert "(crash): the agent exited with status 1; back on slot A" in back.status.reason


@pytest.mark.parametrize(
    ("version", "boards", "why"),
    [
        ("9.0.0", ("rpi-4b",), "the bundle is for rpi-4b, this appliance is simboard"),
        ("0.0.1", ("simboard",), "is a downgrade"),
    ],
)
def test_a_refused_bundle_writes_no_slot(
    tmp_path: Path, version: str, boards: tuple[str, ...], why: str
) -> None:
    update, restarts = staged(tmp_path, version, boards)
    with pytest.raises(UpdateRefused, match=why):
        update.update()
    assert not (tmp_path / "slots" / "B").exists()
    assert restarts == []
    assert (update.status.state, update.status.result) == (State.DOWNLOADED, Result.UNSUPPORTED_PACKAGE)
