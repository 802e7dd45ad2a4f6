"""Suite 9, firmware update (issue 16): a newer bundle is applied and commits itself, keeping the
site and a phone's binding; a bundle whose agent cannot start is rolled back by the board within
the board file's health deadline; a power cut during a trial brings the board back on the slot it
came from, with a working agent.

Bundles are built here from this tree (vaxelbox.update.directories.build_image), signed with a
key made for the run, packed with `vaxelctl fw pack` and sent with `vaxelctl fw upload` / `apply`
from the LAN. Simulated board only for now: a real board's RAUC slots are not wired yet.
"""

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DOMAIN, phone
from vaxelbox import __version__
from vaxelbox.update.directories import build_image

PACKAGE = Path(__file__).resolve().parents[1] / "firmware" / "vaxelbox"
WITHIN = 60.0  # s for a trial to end either way
PHONE = "101"  # registers through the board before the update; its binding must outlive it

pytestmark = pytest.mark.lab_needs("HIL_CLOUD")


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


def _upload_and_apply(lab, installer: Path, bundle: Path) -> None:
    for command in (("fw", "upload", str(bundle)), ("fw", "apply")):
        result = lab.vaxelctl(installer, *command)
        assert result.returncode == 0, result.stdout + result.stderr


def _outcome(lab, installer: Path, within: float = WITHIN) -> dict:
    """The /fw state once a trial has ended (committed or rolled back) and the agent answers."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            state = _status(lab, installer)
        except (AssertionError, ValueError):  # the agent is restarting
            continue
        if state["state"] == 0 and state["result"] in (1, 8):
            return state
    raise AssertionError(f"the trial did not end within {within:.0f} s")


def _apply_and_wait(lab, installer: Path, bundle: Path) -> tuple[dict, float]:
    """Upload and apply `bundle`; the /fw state once the trial ended, and the seconds it took."""
    started = time.monotonic()
    _upload_and_apply(lab, installer, bundle)
    return _outcome(lab, installer), time.monotonic() - started


@pytest.fixture(scope="module")
def signing(board, tmp_path_factory) -> Path:
    """A signing key made for this run (its private PEM file); the board trusts its public half."""
    key = Ed25519PrivateKey.generate()
    private = tmp_path_factory.mktemp("signing") / "signing.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (board.storage.data_dir / "firmware-signing.pub").write_bytes(public)  # the simboard's data dir
    return private


def _binding(lab, installer: Path, user: str) -> dict | None:
    """The board's mirrored binding for `user` (a row of vaxelctl registrations --json), or None."""
    result = lab.vaxelctl(installer, "registrations", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [row for row in json.loads(result.stdout) if row["aor"] == f"sip:{user}@{DOMAIN}"]
    return rows[0] if rows else None


def _register(lab, tmp: Path) -> None:
    """A sipp phone on the LAN registers PHONE through the board (to the cloud) for an hour."""
    assert lab.cloud is not None, "this lab has no cloud PBX: set HIL_CLOUD"

    async def register() -> None:
        registered = await phone(
            "register.xml", (lab.board_lan, 5060), PHONE, tmp, expires=3600,
            local=lab.phone_addresses[2], netns=lab.lan_namespace,
        )  # fmt: skip
        await registered.finish()

    asyncio.run(register())


def test_a_newer_bundle_commits_and_a_broken_one_rolls_back(lab, installer, signing, tmp_path, measure):
    site_before = json.loads(lab.vaxelctl(installer, "status", "--json").stdout)["site_version"]
    _register(lab, tmp_path)
    binding = _binding(lab, installer, PHONE)
    assert binding is not None, "the phone's registration is not mirrored before the update"

    newer = f"{__version__}.1"
    state, took = _apply_and_wait(lab, installer, _bundle(lab, tmp_path, signing, newer, PACKAGE))
    measure("upload to committed", f"{took:.1f} s")
    assert state["result"] == 1, state
    assert state["slots"]["B"] == {"version": newer, "state": "running"}, state
    status = json.loads(lab.vaxelctl(installer, "status", "--json").stdout)
    assert status["site_version"] == site_before  # the site stayed
    kept = _binding(lab, installer, PHONE)
    assert kept is not None, "the phone's binding did not survive the update"
    assert kept["contact"] == binding["contact"], (binding, kept)

    broken = tmp_path / "broken" / "vaxelbox"
    shutil.copytree(PACKAGE, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "__main__.py").write_text("raise SystemExit(3)  # a build whose agent cannot start\n")
    state, took = _apply_and_wait(lab, installer, _bundle(lab, tmp_path, signing, f"{newer}.1", broken))
    measure("broken bundle: upload to rolled back", f"{took:.1f} s")
    assert state["result"] == 8, state
    assert "(crash): the agent exited with status 3" in state["reason"], state
    assert state["slots"]["B"]["state"] == "running", state
    assert state["slots"]["A"]["state"] == "bad", state


def _wait_for_trial(board, within: float = 20.0) -> str:
    """Once the board's init has booted the slot on trial (its selector says so): that slot.
    The simulated board's selector is read directly; a real board's slots are not wired yet."""
    assert board.update is not None, "this board file has no update section"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = json.loads((board.update.root / "selector.json").read_text())
        except (OSError, ValueError):  # being replaced this very moment
            state = {}
        trial = state.get("trial")
        if trial and trial["started"] and state.get("booted") == trial["slot"]:
            return trial["slot"]
        time.sleep(0.1)
    raise AssertionError(f"the board did not boot the trial within {within:.0f} s")


def test_a_power_cut_mid_trial_comes_back_on_the_previous_slot(
    lab, installer, running, board, signing, tmp_path, measure
):
    before = _status(lab, installer)
    previous = next(name for name, slot in before["slots"].items() if slot["state"] == "running")
    version = f"{__version__}.2"  # newer than anything the test above installed
    _upload_and_apply(lab, installer, _bundle(lab, tmp_path, signing, version, PACKAGE))
    on_trial = _wait_for_trial(board)
    running.transition("off")  # the lab's power switch, while the new agent starts
    cut = time.monotonic()
    running.transition("agent")
    state = _outcome(lab, installer)
    measure("power cut mid-trial to rolled back, agent answering", f"{time.monotonic() - cut:.1f} s")
    assert state["result"] == 8, state
    assert "(interrupted): the board was reset or lost power during the trial" in state["reason"], state
    assert state["slots"][previous] == before["slots"][previous], state
    assert state["slots"][on_trial] == {"version": version, "state": "bad"}, state
    status = lab.vaxelctl(installer, "status", "--json")  # a working agent: management answers
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["site_version"] >= 1
