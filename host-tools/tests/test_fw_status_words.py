"""`vaxelctl fw status` / `fw apply` say what happened to an update in an installer's words: a roll-back
names the version it went back to and why, a refused downgrade says how to force it; --json stays the
appliance's LwM2M numbers and reasons. The reasons come from the real state machine and the real
agent (on a board file whose A/B slots are directories in the test's folder), the CLI at 80 columns."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_management import Appliance, ok, paired
from vaxelbox import __version__
from vaxelbox.bundle import pack
from vaxelbox.mgmt.firmware import FirmwareUpdate
from vaxelbox.update import slots
from vaxelbox.update.directories import DirectorySlots, build_image, install_tree
from vaxelctl.remote import fw_summary

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "firmware" / "vaxelbox"
NEW = "9.0.0"
OLD = "0.0.1"
SLOTS_AFTER = {"A": {"version": __version__, "state": "running"}, "B": {"version": NEW, "state": "bad"}}


def _rolled_back(kind: slots.Failure | None) -> str:
    """The reason the real state machine gives when a trial of NEW in slot B ends by `kind`
    (None: a second boot during the trial, as after a power cut)."""
    state = slots.Slots(versions={"A": __version__, "B": None})
    state = slots.apply(state, slots.Bundle(NEW, ("simboard",)), "simboard", __version__).state
    state = slots.boot(state, now=0.0, deadline_s=30).state
    if kind is None:
        state = slots.boot(state, now=1.0, deadline_s=30).state
    elif kind == slots.Failure.DEADLINE:
        state = slots.tick(state, now=31.0).state
    else:
        state = slots.failed(
            state, kind, {"crash": "the agent exited with status 3"}.get(kind, "no answer")
        ).state
    assert state.outcome is not None
    return state.outcome.reason


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        (slots.Failure.CRASH, f"{NEW} stopped while starting (the agent exited with status 3)"),
        (slots.Failure.HANG, f"{NEW} hung and the watchdog restarted the board"),
        (slots.Failure.HEALTH, f"{NEW} failed its health check (no answer)"),
        (slots.Failure.DEADLINE, f"{NEW} did not report healthy within the board's deadline"),
        (None, f"the board restarted or lost power while {NEW} was on trial"),
    ],
)
def test_every_roll_back_names_the_version_it_went_back_to_and_why(kind, said):
    state = {"state": 0, "result": 8, "reason": _rolled_back(kind), "slots": SLOTS_AFTER}
    assert fw_summary(state) == f"rolled back to {__version__}: {said}"


def test_a_commit_and_a_trial_in_words():
    committed = {"state": 0, "result": 1, "reason": f"{NEW} committed in slot B"}
    assert fw_summary(committed) == f"updated to {NEW}: it reported healthy and is kept (slot B)"
    trial = {"state": 3, "result": 0, "version": NEW, "reason": f"{NEW} on trial in slot B"}
    assert fw_summary(trial) == (
        f"updating to {NEW}: on trial in slot B, kept once it reports healthy, rolled back otherwise"
    )


def _board(tmp_path: Path) -> Path:
    """The simulated board's file on loopback, its slots in the test's folder."""
    board = yaml.safe_load((REPO / "boards" / "simboard.yaml").read_text())
    board["interfaces"] = {"lan": "lo", "wan": "lo"}
    for part in ("watchdog", "companion"):
        board.pop(part, None)
    board["leds"]["sysfs"] = str(tmp_path / "leds")
    board["storage"] = {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "log")}
    board["update"] = {**board["update"], "root": str(tmp_path / "slots")}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(board))
    return path


def _bundle(key: Ed25519PrivateKey, version: str) -> bytes:
    image, bundle = io.BytesIO(), io.BytesIO()
    build_image(PACKAGE, version, image)
    image.seek(0)
    pack(image, bundle, version, key, ("simboard",))
    return bundle.getvalue()


def _vaxelctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"},
    )


def test_the_real_agent_after_a_crashed_trial_and_a_refused_downgrade(tmp_path):
    """As the simulated board's init leaves it after a new agent crashed on trial: the appliance's
    /fw read by vaxelctl. Then an older bundle is refused with the way to force it."""
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "signing.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    store = DirectorySlots(tmp_path / "slots")
    install_tree(PACKAGE, __version__, store.slot_dir("A"))
    firmware = FirmwareUpdate(tmp_path / "data" / "firmware", public, store, "simboard", lambda _: None)
    firmware.write(0, _bundle(key, NEW), last=True)
    firmware.update()  # installed into B; the agent would restart into it now
    store.change(lambda s: slots.boot(s, now=0.0, deadline_s=30))  # the init boots the trial
    store.change(lambda s: slots.failed(s, slots.Failure.CRASH, "the agent exited with status 3"))

    appliance = Appliance(tmp_path, "--board", str(_board(tmp_path)), "--fw-key", str(public))
    try:
        laptop = paired(tmp_path / "laptop", appliance)
        assert ok(_vaxelctl(laptop, "fw", "status")) == (
            f"firmware: rolled back to {__version__}: {NEW} stopped while starting (the agent exited\n"
            "  with status 3)\n"
            f"slot A: {__version__} (running)\n"
            f"slot B: {NEW} (bad)\n"
        )
        raw = json.loads(ok(_vaxelctl(laptop, "fw", "status", "--json")))
        assert (raw["state"], raw["result"], raw["result_name"]) == (0, 8, "update failed")
        assert raw["reason"] == f"{NEW} rolled back (crash): the agent exited with status 3; back on slot A"

        older = tmp_path / "older.vxb"
        older.write_bytes(_bundle(key, OLD))
        ok(_vaxelctl(laptop, "fw", "upload", str(older)))
        refused = _vaxelctl(laptop, "fw", "apply")
        assert refused.returncode == 1
        assert refused.stderr == (
            f"vaxelctl: not applied: {OLD} is older than the running {__version__}; "
            "vaxelctl fw apply --force installs it anyway\n"
        )
        status = ok(_vaxelctl(laptop, "fw", "status")).splitlines()
        assert status[0].startswith(f"firmware: version {OLD} verified and staged (")
        assert all(len(line) <= 80 for line in status)
        assert " ".join(line.strip() for line in status[:-2]).endswith(
            f"not applied: {OLD} is older than the running {__version__}; vaxelctl fw apply --force "
            "installs it anyway"
        )
        as_json = _vaxelctl(laptop, "fw", "apply", "--json")
        assert json.loads(as_json.stdout)["error"] == (
            f"5.03 Service Unavailable: {OLD} is a downgrade of the running {__version__}: "
            "apply with --force to install"
        )
    finally:
        appliance.stop()
