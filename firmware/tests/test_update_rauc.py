"""RAUC on the real boards, checked by the real `rauc` (Debian's 1.8): the shipped system.conf files,
the bundles `make image` builds, and the agent's RAUC back-end driving a RAUC service through
install, commit and the ways back (rauc_lab: what runs for real and what is played)."""

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from rauc_lab import RAUC_DIR, REAL_BOARDS, REPO, RaucLab, moved_conf, tool
from typer.testing import CliRunner
from vaxelbox import __version__
from vaxelbox.bundle import BundleVerifier, image_offset, load_public_key
from vaxelbox.cli import app
from vaxelbox.hw.board import load_board
from vaxelbox.mgmt.firmware import FirmwareUpdate, UpdateRefused
from vaxelbox.update import image, slots
from vaxelbox.update.lwm2m import Result, State
from vaxelbox.update.rauc import RaucError, RaucSlots, parse_status
from vaxelbox.update.trial import watch_deadline

VERSION = "0.9.1"  # newer than any running agent here


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`make image` for two boards (the project's wheel only: the dependencies' download is
    `make image`'s, not the tests')."""
    tool("rauc", "rauc")
    tool("mksquashfs", "squashfs-tools")
    root = tmp_path_factory.mktemp("image")
    boards = [REPO / "boards" / f"{name}.yaml" for name in ("rpi-4b", "nanopi-r5s")]
    result = image.build(boards, VERSION, root / "out", root / "keys", REPO, deps=False)
    return result, image.dev_keys(root / "keys")


@pytest.fixture
def lab(tmp_path, built):
    _, keys = built
    lab = RaucLab(tmp_path / "board", keys.rauc_ca)
    yield lab
    lab.close()


def _bundle(built, board: str, kind: str) -> Path:
    result, _ = built
    return Path(result["bundles"][board][kind])


def _store(lab: RaucLab, tmp_path: Path, clock=time.time) -> RaucSlots:
    """The agent's back-end on the lab's RAUC; its reboot is recorded (the lab reboots)."""
    record = tmp_path / "reboots"
    return RaucSlots(
        tmp_path / "data" / "firmware" / "rauc-slots.json",
        deadline_s=120,
        env=lab.env,
        boot_id=lab.boot_id,
        reboot=("sh", "-c", f"echo reboot >> {record}"),
        clock=clock,
    )


def test_every_real_board_ships_a_system_conf_rauc_reads(built, tmp_path):
    """Each real board file points at its system.conf; RAUC loads it (a bundle verified under it)
    with the board's name as compatible, A/B rootfs slots and the uboot backend; a broken copy is
    refused by RAUC, so the check can fail."""
    _, keys = built
    bundle = _bundle(built, "rpi-4b", "rauc")
    for name in REAL_BOARDS:
        board = load_board(REPO / "boards" / f"{name}.yaml")
        assert board.update is not None
        assert board.update.kind == "rauc"
        assert (REPO / "boards" / board.update.system_conf).resolve() == RAUC_DIR / name / "system.conf"
        conf = moved_conf(name, tmp_path, keys.rauc_ca)
        shown = subprocess.run(
            ["rauc", f"--conf={conf}", "info", "--output-format=json", str(bundle)],
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr
        text = conf.read_text()
        assert f"\ncompatible={name}\n" in text
        assert "\nbootloader=uboot\n" in text
        assert "bootname=A" in text
        assert "bootname=B" in text
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("bootloader=uboot", "bootloader=u-boot"))
    refused = subprocess.run(
        ["rauc", f"--conf={broken}", "info", str(bundle)], capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "Unsupported bootloader 'u-boot'" in refused.stderr


def test_make_image_builds_bundles_rauc_and_the_appliance_verify(built, tmp_path):
    """The RAUC bundle names the board as compatible and the version, verifies under the dev CA
    (and not under another CA); its ext4 image holds the wheel set and the manifest; our bundle
    around it is signed for that board only and carries the RAUC bundle byte for byte."""
    result, keys = built
    raucb = _bundle(built, "rpi-4b", "rauc")
    conf = moved_conf("rpi-4b", tmp_path, keys.rauc_ca)  # its check-purpose=codesign, as on the board
    info = subprocess.run(
        ["rauc", f"--conf={conf}", "info", "--output-format=json", str(raucb)],
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert (shown["compatible"], shown["version"]) == ("rpi-4b", VERSION)
    assert [next(iter(i)) for i in shown["images"]] == ["rootfs"]
    stranger = image.dev_keys(tmp_path / "other-keys")
    refused = subprocess.run(
        ["rauc", f"--conf={conf}", f"--keyring={stranger.rauc_ca}", "info", str(raucb)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "signature verification failed" in refused.stderr

    wheel = f"vaxelbox-{VERSION}-py3-none-any.whl"
    assert result["version"] == VERSION
    assert result["boards"] == ["rpi-4b", "nanopi-r5s"]
    assert [w["file"] for w in result["wheels"]] == [wheel]
    rootfs = raucb.parent / "rpi-4b" / "rootfs.ext4"
    listed = subprocess.run(
        ["debugfs", "-R", "ls -l /opt/vaxelbox/wheels", str(rootfs)], capture_output=True, text=True
    )
    assert wheel in listed.stdout
    inside = subprocess.run(
        ["debugfs", "-R", "cat /opt/vaxelbox/manifest.json", str(rootfs)], capture_output=True, text=True
    )
    assert json.loads(inside.stdout)["wheels"] == result["wheels"]

    vxb = _bundle(built, "rpi-4b", "vxb")
    data = vxb.read_bytes()
    verifier = BundleVerifier(load_public_key(keys.signing_pub))
    verifier.feed(data)
    header = verifier.finish()
    assert (header.version, header.boards) == (VERSION, ("rpi-4b",))
    with vxb.open("rb") as file:
        assert data[image_offset(file) :] == raucb.read_bytes()


def test_the_agent_installs_through_rauc_and_commits_once_healthy(lab, built, tmp_path):
    """Upload and apply as the agent does: RAUC writes the other slot and makes it primary with one
    try, the board reboots into it, the agent starts its trial, reports healthy, and RAUC marks it
    good (3 attempts). /fw says so at each step."""
    _, keys = built
    store = _store(lab, tmp_path)
    assert store.load().versions == {"A": __version__, "B": None}
    restarts: list[str] = []
    firmware = FirmwareUpdate(
        tmp_path / "data" / "firmware", keys.signing_pub, store, "rpi-4b", restarts.append
    )
    firmware.write(0, _bundle(built, "rpi-4b", "vxb").read_bytes(), last=True)
    status = firmware.update()
    assert status.state == State.UPDATING
    assert status.reason == "installed in slot B; restarting into it"
    assert restarts == [f"trying {VERSION} in slot B"]
    assert lab.uboot() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"}
    assert lab.slots["B"].read_bytes()[1024 + 56 : 1024 + 58] == b"\x53\xef"  # ext4's magic: written

    assert lab.reboot() == "B"
    firmware = FirmwareUpdate(tmp_path / "data" / "firmware", keys.signing_pub, store, "rpi-4b")
    assert firmware.status.reason == f"{VERSION} on trial in slot B"
    assert firmware.slot_view() == {
        "A": {"version": __version__, "state": "standby"},
        "B": {"version": VERSION, "state": "trial"},
    }
    firmware.healthy()
    assert (firmware.status.result, firmware.status.reason) == (
        Result.SUCCESS,
        f"{VERSION} committed in slot B",
    )
    assert lab.uboot()["BOOT_B_LEFT"] == "3"
    assert lab.uboot()["BOOT_ORDER"] == "B A"
    assert firmware.slot_view()["B"] == {"version": VERSION, "state": "running"}
    assert lab.reboot() == "B"  # committed: it stays


def test_a_healthy_start_gives_the_running_slot_its_boot_attempts_back(lab, tmp_path):
    """U-Boot spends an attempt at every boot: without the agent's mark-good at each healthy start
    the third reboot would leave slot A without attempts and boot the empty slot B."""
    store = _store(lab, tmp_path)
    for _ in range(4):
        assert lab.reboot() == "A"
        store.change(lambda s: slots.healthy(s, time.time()))  # what the agent does once ready
        assert lab.uboot()["BOOT_A_LEFT"] == "3"


async def test_in_the_agent_rauc_installs_in_the_background_and_the_reboot_follows(lab, built, tmp_path):
    """Inside the agent's event loop apply answers at once ("installing"), RAUC writes the slot in a
    worker thread while the loop runs on, and the reboot is asked for on the loop once it is done."""
    _, keys = built
    restarts: list[str] = []
    firmware = FirmwareUpdate(
        tmp_path / "fw", keys.signing_pub, _store(lab, tmp_path), "rpi-4b", restarts.append
    )
    firmware.write(0, _bundle(built, "rpi-4b", "vxb").read_bytes(), last=True)
    ticks = 0
    status = firmware.update()
    assert (status.state, status.reason) == (State.UPDATING, "installing into slot B")
    while not restarts:
        ticks += 1
        assert ticks < 1000, "no reboot asked for within 10 s"
        await asyncio.sleep(0.01)
    assert ticks > 1  # the loop ran while RAUC installed
    assert restarts == [f"trying {VERSION} in slot B"]
    assert firmware.status.reason == "installed in slot B; restarting into it"
    assert lab.uboot()["BOOT_ORDER"] == "B A"


def test_a_crashing_trial_is_marked_bad_and_the_board_goes_back(lab, built, tmp_path):
    """The new agent fails on trial: RAUC marks its slot bad (out of BOOT_ORDER), the slot it came
    from good, the board reboots into that one, and the outcome names the crash."""
    store = _store(lab, tmp_path)
    _install(store, built)
    assert lab.reboot() == "B"
    store.load()  # the agent starts on trial
    step = store.change(lambda s: slots.failed(s, slots.Failure.CRASH, "the agent exited with status 3"))
    assert any(isinstance(a, slots.Restart) for a in step.actions)
    assert (tmp_path / "reboots").exists()  # our reboot command ran (in 1 s inside the agent)
    assert lab.uboot() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert lab.reboot() == "A"
    state = store.load()
    assert state.outcome is not None
    assert state.outcome.result == Result.UPDATE_FAILED
    assert state.outcome.reason == (
        f"{VERSION} rolled back (crash): the agent exited with status 3; back on slot A"
    )
    assert (state.booted, state.primary, state.bad) == ("A", "A", ("B",))


def test_a_power_cut_during_the_trial_comes_back_on_the_previous_slot(lab, built, tmp_path):
    """The try is spent at boot: a power cut during the trial boots the previous slot (the
    bootloader's doing), and the agent there records the trial as interrupted and marks it bad."""
    store = _store(lab, tmp_path)
    _install(store, built)
    assert lab.reboot() == "B"
    assert store.load().trial.started  # type: ignore[union-attr]
    assert lab.reboot() == "A"  # power cut: BOOT_B_LEFT was 0
    state = store.load()
    assert state.trial is None
    assert state.outcome is not None
    assert (
        "rolled back (interrupted): the board was reset or lost power during the trial"
        in state.outcome.reason
    )
    assert lab.uboot()["BOOT_ORDER"] == "A"
    assert (
        parse_status(lab.rauc("status", "--detailed", "--output-format=json").stdout).slots["B"].boot_status
        == "bad"
    )


def test_a_trial_past_its_deadline_is_marked_bad_when_the_agent_next_looks(lab, built, tmp_path):
    """A new agent that never got healthy (systemd restarts it after a crash): at its next start
    past the deadline the trial ends (deadline), RAUC marks B bad and A good, and the board reboots."""
    now = [1000.0]
    store = _store(lab, tmp_path, clock=lambda: now[0])  # the board's clock, moved on by the test
    _install(store, built)
    assert lab.reboot() == "B"
    trial = store.load().trial
    assert trial is not None
    assert trial.deadline == 1120.0  # the board file's 120 s from the boot
    now[0] = 1121.0
    state = store.load()
    assert state.outcome is not None
    assert state.outcome.reason == (
        f"{VERSION} rolled back (deadline): no healthy report within the deadline; back on slot A"
    )
    assert (tmp_path / "reboots").read_text() == "reboot\n"
    assert lab.uboot() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert lab.reboot() == "A"


def _rpi_4b_board(tmp_path: Path) -> Path:
    """rpi-4b's board file with its data directory in tmp_path (where _store keeps the trial)."""
    board = yaml.safe_load((REPO / "boards" / "rpi-4b.yaml").read_text())
    board["storage"] = {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "log")}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(board))
    return path


def _trial_failed(lab: RaucLab, tmp_path: Path, monkeypatch):
    """`vaxelbox fw trial-failed --board FILE` as OnFailure= runs it after a crash loop, on the
    back-end the board file names (the lab's bus, boot id and recorded reboot stand in for the
    board's: the command's own rauc calls go to the lab's real RAUC service)."""
    opened: list[Path] = []

    def open_slots(update, directory: Path) -> RaucSlots:
        assert update.kind == "rauc"
        opened.append(directory)
        return _store(lab, tmp_path)

    monkeypatch.setattr("vaxelbox.update.open_slots", open_slots)
    env = {
        "MONITOR_SERVICE_RESULT": "start-limit-hit",
        "MONITOR_EXIT_CODE": "exited",
        "MONITOR_EXIT_STATUS": "1",
    }
    result = CliRunner().invoke(
        app, ["fw", "trial-failed", "--board", str(_rpi_4b_board(tmp_path))], env={"COLUMNS": "200", **env}
    )
    assert opened == [tmp_path / "data" / "firmware"]  # where the agent keeps its trial
    return result


def test_trial_failed_on_trial_marks_it_bad_and_reboots_into_the_previous_slot(
    lab, built, tmp_path, monkeypatch
):
    """The new agent crashed at every start, before it ever looked at its slots (an import error),
    until systemd gave up: OnFailure's command starts and ends its trial in this boot, marks B bad
    and A good in RAUC, asks for the reboot, and the board comes back on A with the reason."""
    store = _store(lab, tmp_path)
    _install(store, built)
    assert lab.reboot() == "B"
    result = _trial_failed(lab, tmp_path, monkeypatch)
    reason = (
        f"{VERSION} rolled back (crash): the agent failed at each start until systemd gave up (it exited "
        "with status 1); back on slot A"
    )
    assert (result.exit_code, result.output) == (0, f"trial-failed: {reason}\n")
    assert (tmp_path / "reboots").read_text() == "reboot\n"
    assert lab.uboot() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert lab.reboot() == "A"
    state = store.load()
    assert (state.trial, state.booted, state.bad) == (None, "A", ("B",))
    assert state.outcome == slots.Outcome(Result.UPDATE_FAILED, reason)


def test_trial_failed_outside_a_trial_neither_marks_nor_reboots(lab, tmp_path, monkeypatch):
    """The committed slot's agent crash-loops: one line, exit 0, no reboot and RAUC untouched, so
    the board does not reboot in a loop (not even a mark-good: A keeps the attempt this boot spent)."""
    assert lab.reboot() == "A"
    _store(lab, tmp_path).load()
    before = lab.uboot()
    assert before["BOOT_A_LEFT"] == "2"
    result = _trial_failed(lab, tmp_path, monkeypatch)
    assert (result.exit_code, result.output) == (
        0,
        "trial-failed: no update on trial; slot A stays (no reboot)\n",
    )
    assert not (tmp_path / "reboots").exists()
    assert lab.uboot() == before


async def test_a_stuck_agent_on_trial_rolls_itself_back_at_the_deadline(lab, built, tmp_path):
    """The new agent runs but never reports healthy: its deadline check (every 20 ms here) leaves
    the trial alone before the deadline, then RAUC marks B bad and A good and the board reboots,
    without waiting for the agent's next start."""
    now = [1000.0]
    store = _store(lab, tmp_path, clock=lambda: now[0])
    _install(store, built)
    assert lab.reboot() == "B"
    assert store.load().trial.deadline == 1120.0  # type: ignore[union-attr]
    restarts: list[str] = []
    watch = asyncio.create_task(watch_deadline(store, restarts.append, interval=0.02, clock=lambda: now[0]))
    await asyncio.sleep(0.3)
    assert not watch.done()
    assert not (tmp_path / "reboots").exists()
    now[0] = 1121.0
    await asyncio.wait_for(watch, 10)
    assert (tmp_path / "reboots").read_text() == "reboot\n"
    assert restarts == []  # RAUC's back-end reboots the board itself
    assert lab.uboot() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert lab.reboot() == "A"
    outcome = store.load().outcome
    assert outcome is not None
    assert outcome.reason == (
        f"{VERSION} rolled back (deadline): no healthy report within the deadline; back on slot A"
    )


def test_a_slot_the_bootloader_gave_up_on_before_the_agent_ran_is_rolled_back(lab, built, tmp_path):
    """The new slot's one boot attempt went without the agent ever starting (a kernel that does not
    come up, reset by the watchdog): U-Boot boots A, and the agent there says so."""
    store = _store(lab, tmp_path)
    _install(store, built)
    assert lab.reboot() == "B"  # ... and the kernel never gets to the agent
    assert lab.reboot() == "A"
    state = store.load()
    assert state.outcome is not None
    assert state.outcome.reason == (
        f"{VERSION} rolled back (interrupted): the board did not start it (the bootloader went back to "
        "slot A); back on slot A"
    )
    assert state.bad == ("B",)
    assert not (tmp_path / "reboots").exists()  # already on the slot it goes back to


def test_a_bundle_for_another_board_is_refused_by_rauc_in_its_words(lab, built, tmp_path):
    """RAUC refuses the compatible before it writes: the error is RAUC's own message, slot B and
    the boot order are untouched."""
    store = _store(lab, tmp_path)
    before = lab.uboot()
    with pytest.raises(RaucError) as refused, _bundle(built, "nanopi-r5s", "rauc").open("rb") as file:
        store.install("B", file)
    assert (
        str(refused.value)
        == "Installation error: Compatible mismatch: Expected 'rpi-4b' but bundle manifest has 'nanopi-r5s'"
    )
    assert lab.uboot() == before
    assert not any(lab.slots["B"].read_bytes()[: 1 << 16])  # still the blank sparse file


def test_our_signed_header_refuses_another_board_before_rauc_is_asked(lab, built, tmp_path):
    """The appliance refuses a bundle packed for another board from its signed header, before
    RAUC or the slot is touched; the reason names both boards."""
    _, keys = built
    store = _store(lab, tmp_path)
    firmware = FirmwareUpdate(tmp_path / "fw", keys.signing_pub, store, "rpi-4b", lambda _: None)
    firmware.write(0, _bundle(built, "nanopi-r5s", "vxb").read_bytes(), last=True)
    with pytest.raises(UpdateRefused, match="the bundle is for nanopi-r5s, this appliance is rpi-4b"):
        firmware.update()
    assert lab.uboot() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    assert not any(lab.slots["B"].read_bytes()[: 1 << 16])


def test_a_bundle_rauc_will_not_install_is_refused_with_rauc_s_reason_and_stays_staged(built, tmp_path):
    """A board whose keyring is another CA: the appliance takes our bundle (our signature is good),
    RAUC refuses its X.509 signature; apply says so in RAUC's words (LwM2M: update failed), the
    bundle stays staged and the boot order is untouched."""
    _, keys = built
    lab = RaucLab(tmp_path / "board", image.dev_keys(tmp_path / "other-ca").rauc_ca)
    try:
        firmware = FirmwareUpdate(tmp_path / "fw", keys.signing_pub, _store(lab, tmp_path), "rpi-4b", print)
        firmware.write(0, _bundle(built, "rpi-4b", "vxb").read_bytes(), last=True)
        with pytest.raises(UpdateRefused) as refused:
            firmware.update()
        assert str(refused.value).startswith("installing into slot B: signature verification failed: ")
        assert (firmware.status.state, firmware.status.result) == (State.DOWNLOADED, Result.UPDATE_FAILED)
        assert lab.uboot() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    finally:
        lab.close()


def test_parse_status_reads_what_rauc_prints(lab, built, tmp_path):
    """`rauc status --detailed --output-format=json` from the real service, before and after an
    install: slots by bootname, booted, primary, versions, boot status; garbage is RaucError."""
    fresh = parse_status(lab.rauc("status", "--detailed", "--output-format=json").stdout)
    assert (fresh.compatible, fresh.booted, fresh.primary) == ("rpi-4b", "A", "A")
    assert {n: (s.name, s.state, s.boot_status, s.version) for n, s in fresh.slots.items()} == {
        "A": ("rootfs.0", "booted", "good", None),
        "B": ("rootfs.1", "inactive", "good", None),
    }
    _install(_store(lab, tmp_path), built)
    after = parse_status(lab.rauc("status", "--detailed", "--output-format=json").stdout)
    assert (after.booted, after.primary, after.slots["B"].version) == ("A", "B", VERSION)
    with pytest.raises(RaucError, match="cannot read rauc status output"):
        parse_status('{"slots": [{"rootfs.0": {}}]}')


def _install(store: RaucSlots, built) -> None:
    step = slots.apply(store.load(), slots.Bundle(VERSION, ("rpi-4b",)), "rpi-4b", __version__)
    with _bundle(built, "rpi-4b", "rauc").open("rb") as file:
        store.install("B", file)
    store.save(step.state)


def test_rauc_missing_fails_loudly(monkeypatch, tmp_path, built):
    """Without rauc the back-end says which package to install; the agent still starts and answers
    /fw (the log says why the slots are missing); the lab fails, never skips."""
    store = RaucSlots(tmp_path / "s.json", 60, rauc=("rauc-not-installed-here",))
    with pytest.raises(RaucError, match="rauc-not-installed-here is not installed"):
        store.load()
    firmware = FirmwareUpdate(tmp_path / "fw", built[1].signing_pub, store, "rpi-4b")
    firmware.healthy()
    assert firmware.slot_view() is None
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AssertionError, match="rauc is missing"):
        tool("rauc", "rauc")


def test_board_file_update_section_errors_are_located(tmp_path):
    """A wrong `update` section is refused with its field, like the rest of the board file."""
    from vaxelbox.hw.board import BoardError

    data = yaml.safe_load((REPO / "boards" / "rpi-4b.yaml").read_text())
    data["update"] = {"kind": "rauc", "system_conf": "rauc/rpi-4b/system.txt", "health_deadline": 2}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(BoardError) as error:
        load_board(path)
    said = str(error.value)
    assert f"{path}: update.rauc.system_conf: String should match pattern" in said
    assert f"{path}: update.rauc.health_deadline: Input should be greater than or equal to 5" in said
