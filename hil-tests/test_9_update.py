"""Suite 9, firmware update (issue 16): a newer bundle is applied and commits itself; a bundle
whose agent cannot start is rolled back by the board within the board file's health deadline.

Bundles are built here from this tree (vaxelbox.update.directories.build_image), signed with a
key made for the run, packed with `vaxelctl fw pack` and sent with `vaxelctl fw upload` / `apply`
from the LAN. Simulated board only for now: a real board's RAUC slots are not wired yet.
"""

import json
import shutil
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from vaxelbox import __version__
from vaxelbox.update.directories import build_image

PACKAGE = Path(__file__).resolve().parents[1] / "firmware" / "vaxelbox"
WITHIN = 60.0  # s for a trial to end either way


def _bundle(lab, tmp: Path, key: Path, version: str, package: Path) -> Path:
    image, bundle = tmp / f"agent-{version}.tar.gz", tmp / f"agent-{version}.vxb"
    with image.open("wb") as out:
        build_image(package, version, out)
    packed = lab.vaxelctl(
        tmp, "fw", "pack", str(image), "--key", str(key), "--version", version, "-o", str(bundle),
        "--board", "simboard",
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    return bundle


def _status(lab, installer: Path) -> dict:
    result = lab.vaxelctl(installer, "fw", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _apply_and_wait(lab, installer: Path, bundle: Path) -> tuple[dict, float]:
    """Upload and apply `bundle`; the /fw state once the trial ended, and the seconds it took."""
    started = time.monotonic()
    for command in (("fw", "upload", str(bundle)), ("fw", "apply")):
        result = lab.vaxelctl(installer, *command)
        assert result.returncode == 0, result.stdout + result.stderr
    deadline = started + WITHIN
    while time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            state = _status(lab, installer)
        except (AssertionError, ValueError):  # the agent is restarting
            continue
        if state["state"] == 0 and state["result"] in (1, 8):
            return state, time.monotonic() - started
    raise AssertionError(f"the trial did not end within {WITHIN:.0f} s")


def test_a_newer_bundle_commits_and_a_broken_one_rolls_back(lab, board, installer, tmp_path, measure):
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "signing.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (board.storage.data_dir / "firmware-signing.pub").write_bytes(public)  # the simboard's data dir
    site_before = json.loads(lab.vaxelctl(installer, "status", "--json").stdout)["site_version"]

    newer = f"{__version__}.1"
    state, took = _apply_and_wait(lab, installer, _bundle(lab, tmp_path, private, newer, PACKAGE))
    measure("upload to committed", f"{took:.1f} s")
    assert state["result"] == 1, state
    assert state["slots"]["B"] == {"version": newer, "state": "running"}, state
    status = json.loads(lab.vaxelctl(installer, "status", "--json").stdout)
    assert status["site_version"] == site_before  # the site stayed

    broken = tmp_path / "broken" / "vaxelbox"
    shutil.copytree(PACKAGE, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "__main__.py").write_text("raise SystemExit(3)  # a build whose agent cannot start\n")
    state, took = _apply_and_wait(lab, installer, _bundle(lab, tmp_path, private, f"{newer}.1", broken))
    measure("broken bundle: upload to rolled back", f"{took:.1f} s")
    assert state["result"] == 8, state
    assert "(crash): the agent exited with status 3" in state["reason"], state
    assert state["slots"]["B"]["state"] == "running", state
    assert state["slots"]["A"]["state"] == "bad", state
