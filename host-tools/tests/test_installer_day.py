"""The installer's day (issue 19): nothing an installer does is lost, and every command tells the
truth. Each test is a fault an installer met, reproduced with vaxelctl (and `vaxelbox` on the
appliance) against the real agent on loopback, or in network namespaces for mDNS."""

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiocoap
import pytest
import typer
from agent_process import AgentProcess
from aiocoap import Code, Message
from aiocoap.oscore import FilesystemSecurityContext
from netns import lan_pair
from peers import free_port
from test_management import (
    AT_A_TERMINAL,
    BLOCK,
    Appliance,
    keygen,
    listed_serial,
    ok,
    packed_bundle,
    paired,
    vaxelctl,
)
from typer.testing import CliRunner
from vaxelbox.mgmt.security import REFUSALS_TOLD_EVERY, release
from vaxelbox.site import demo_site_text

RECEPTION = "00:15:65:4a:a9:37"  # the demo site's phones (anna; bjorn)
SNOM = "00:04:13:92:2d:24"
STRANGER = "02:00:5e:10:00:99"  # in no site


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def appliance(tmp_path):
    running = Appliance(tmp_path)
    yield running
    if running.agent.process.poll() is None:  # a test may have stopped it
        running.stop()


@pytest.fixture
def laptop(appliance, tmp_path):
    return paired(tmp_path / "laptop", appliance, "Lisa")


# --- 2: discover without --interface --------------------------------------------------------


VAXELCTL = [sys.executable, "-c", "from vaxelctl.cli import main; main()"]


def test_discover_without_interface_listens_everywhere_and_finds_the_appliance(tmp_path):
    """It crashed with `TypeError: choice must be a list or InterfaceChoice, got None`."""
    (tmp_path / "site.toml").write_text(demo_site_text())
    with lan_pair(("idbox", "1"), ("idlap", "62")) as (box, lap):
        agent = AgentProcess(
            tmp_path,
            "--data",
            str(tmp_path / "data"),
            "--lan",
            f"{box.address}:5060",
            "--wan",
            f"{box.address}:5062",
            "--cloud",
            f"sip:{box.address}:5999;transport=tcp",
            "--coap-port",
            "5683",
            wrap=box.command,
        )
        try:
            agent.wait_notification("READY", "1", timeout=20)
            found = subprocess.run(
                # No --interface is the point; a 1.5 s listen (default 3 s): the appliance answers in ms.
                lap.command(*VAXELCTL, "discover", "--json", "--timeout", "1.5"),
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "VAXELCTL_CONFIG": str(tmp_path / "laptop")},
            )
        finally:
            agent.stop()
    assert found.returncode == 0, found.stderr
    serial = (tmp_path / "data" / "mgmt" / "serial").read_text().strip()
    assert [(r["serial"], r["address"], r["port"]) for r in json.loads(found.stdout)] == [
        (serial, box.address, 5683)
    ]


def test_discover_on_an_address_this_laptop_lacks_says_so_in_one_line(tmp_path):
    result = vaxelctl(tmp_path, "discover", "--interface", "not-an-address", "--timeout", "0.1")
    assert result.returncode == 2  # usage: not an address at all
    assert lines(result.stderr) == [
        "vaxelctl: cannot listen for mDNS on not-an-address: 'not-an-address' does not appear to be "
        "an IPv4 or IPv6 address"
    ]


# --- 3: network errors are not refusals -----------------------------------------------------


def test_pairing_with_nothing_at_the_address_says_unreachable_not_wrong_code(tmp_path):
    port = free_port("127.0.0.9")
    result = vaxelctl(tmp_path, "pair", f"127.0.0.9:{port}", "--code", "ABCDE-FGHIJ-KLMNO-PQRST")
    assert result.returncode == 3, result.stderr
    assert lines(result.stderr) == [
        f"vaxelctl: cannot reach 127.0.0.9:{port}: nothing answers there (connection refused): "
        "is the agent running, and is this its address?"
    ]
    assert not (tmp_path / "appliances").exists()


def test_a_wrong_pairing_code_is_called_wrong_and_a_typo_is_named(appliance, tmp_path):
    wrong = vaxelctl(tmp_path / "a", "pair", appliance.address, "--code", "AAAAA-BBBBB-CCCCC-DDDDD")
    assert wrong.returncode == 1  # refused
    assert lines(wrong.stderr) == [
        f"vaxelctl: {appliance.address} refused the pairing code: check it against the label "
        "(on a development host: vaxelbox pairing-code)"
    ]
    typo = vaxelctl(tmp_path / "b", "pair", appliance.address, "--code", "AAAAA-BBBBB-CCCCC-DDDD9")
    assert typo.returncode == 2  # usage: no code has a 9
    assert lines(typo.stderr) == [
        "vaxelctl: '9' is not in any pairing code: it has letters A-Z and digits 2-7 "
        "(4 groups of 5, as on the label)"
    ]
    # The appliance tells its log too (support's answer to "the code does not work"): the first at
    # once, then at most every REFUSALS_TOLD_EVERY s, counting those in between (none is lost).
    refused = wrong_codes(appliance, 1)
    assert [(e["result"], e["reason"], e["attempts"]) for e in refused] == [
        ("refused", "wrong pairing code", 1)
    ]
    assert refused[0]["peer"].rpartition(":")[0].strip("[]").endswith("127.0.0.1"), refused[0]
    for letter in "EF":
        code = f"AAAAA-BBBBB-CCCCC-DDDD{letter}"
        assert vaxelctl(tmp_path / letter, "pair", appliance.address, "--code", code).returncode == 1
    assert len(wrong_codes(appliance, 1)) == 1  # held back until the interval ends
    assert [e["attempts"] for e in wrong_codes(appliance, 2, REFUSALS_TOLD_EVERY + 5)] == [1, 2]
    assert "AAAAA" not in appliance.agent.output()


def test_a_box_reset_at_the_same_address_gets_its_old_pairing_named_with_forget(appliance, laptop):
    """The reproduction (`make clean`, `make run`): the fresh box has a new serial at the same
    address; status said "does not know this laptop: run vaxelctl pair"; once paired, status said
    "choose one with --appliance", and `-a 127.0.0.1` chose the dead one. No message named forget."""
    old = listed_serial(laptop)
    appliance.stop()
    shutil.rmtree(appliance.data)
    appliance.start()
    again = vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code(), "--name", "Lisa")
    assert again.returncode == 0, again.stderr
    new = next(p.name for p in (laptop / "appliances").iterdir() if p.name != old)
    assert lines(again.stderr) == [
        f"vaxelctl: {old} was paired at {appliance.address} too, where {new} answers now: if it was "
        f"reset or replaced, vaxelctl forget {old}"
    ]
    ambiguous = vaxelctl(laptop, "status", "-a", appliance.address)
    assert ambiguous.returncode == 2
    assert " ".join(ambiguous.stderr.split()) == (
        f"vaxelctl: paired with several appliances at {appliance.address} ({', '.join(sorted([old, new]))}): "
        "name one by its serial, and vaxelctl forget SERIAL the one that is no longer there"
    )
    ok(vaxelctl(laptop, "status", "-a", new))
    ok(vaxelctl(laptop, "forget", old, "--yes"))
    ok(vaxelctl(laptop, "status", "-a", appliance.address))


def wrong_codes(appliance: Appliance, count: int, within: float = 5) -> list[dict]:
    """The audit lines of refused pairings, once `count` are there (fails after `within` s)."""
    deadline = time.monotonic() + within
    while len(found := [e for e in appliance.agent.events("audit") if e["action"] == "pair"]) < count:
        assert time.monotonic() < deadline, f"not {count} audit lines for wrong pairing codes: {found}"
        time.sleep(0.05)
    return found


def test_every_remote_command_says_unreachable_with_the_address_when_the_appliance_is_gone(
    appliance, laptop, tmp_path
):
    serial = listed_serial(laptop)
    bundle = tmp_path / "any.bundle"
    bundle.write_bytes(b"VXBUNDLE\x00\x00\x00\x02{}")
    appliance.stop()
    for command in (
        ["status"],
        ["status", "--watch"],  # observation: it printed a traceback
        ["phones", "assign", RECEPTION, "anna"],
        ["installers", "revoke", "0badc0de"],
        ["site", "pull"],
    ):
        result = vaxelctl(laptop, *command)
        assert result.returncode == 3, (command, result.stderr)
        assert lines(result.stderr) == [
            f"vaxelctl: cannot reach {serial} at {appliance.address}: nothing answers there "
            "(connection refused): is the agent running, and is this its address?"
        ], command


# --- 4: resume only the same bundle -----------------------------------------------------------


@pytest.fixture
def signed(tmp_path):
    """(appliance with a firmware key, paired laptop, pack(name, size, version) -> bundle path)."""
    private, public = keygen(tmp_path / "signing.key", tmp_path / "signing.pub")
    appliance = Appliance(tmp_path, "--fw-key", str(public))
    laptop = paired(tmp_path / "laptop", appliance)

    def pack(name: str, size: int, version: str) -> Path:
        image, bundle = tmp_path / f"{name}.img", tmp_path / f"{name}.bundle"
        image.write_bytes(os.urandom(size))
        command = ["fw", "pack", str(image), "--key", str(private), "--version", version, "-o", str(bundle)]
        command += ["--board", "simboard"]
        ok(vaxelctl(tmp_path, *command))
        return bundle

    yield appliance, laptop, pack
    appliance.stop()


def send_blocks(appliance: Appliance, laptop: Path, data: bytes, start: int = 0, tag: bytes | None = None):
    """BERT blocks of `data` from offset `start` (If-Match `tag`); the codes the appliance answered."""
    oscore_dir = laptop / "appliances" / listed_serial(laptop) / "oscore"

    async def send() -> list[Code]:
        context = await aiocoap.Context.create_client_context(transports=["oscore", "tcpclient"])
        security = FilesystemSecurityContext(str(oscore_dir))
        context.client_credentials[appliance.uri("*", "coap+tcp")] = security
        codes = []
        try:
            await context.request(Message(code=Code.GET, uri=appliance.uri("fw", "coap+tcp"))).response
            for offset in range(start, len(data), BLOCK):
                message = Message(
                    code=Code.PUT, uri=appliance.uri("fw", "coap+tcp"), payload=data[offset:][:BLOCK]
                )
                message.opt.block1 = (offset // 1024, True, 7)
                if tag is not None:
                    message.opt.if_match = [tag]
                response = await context.request(message, handle_blockwise=False).response
                codes.append(response.code)
                if response.code != Code.CONTINUE:
                    break
            return codes
        finally:
            await context.shutdown()
            release(security)

    return asyncio.run(send())


def test_an_upload_of_another_bundle_starts_afresh_instead_of_splicing(signed):
    """Upload A interrupted, then B: it said `resuming 75.1/20.0 MB`, then `the image has
    75106111 of 300000000 bytes`."""
    appliance, laptop, pack = signed
    big, small = pack("a", 3 * 1024 * 1024, "1.0"), pack("b", 600 * 1024, "2.0")
    send_blocks(appliance, laptop, big.read_bytes()[: 10 * BLOCK])  # then A's laptop went away
    result = vaxelctl(laptop, "fw", "upload", str(small), "--json")
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["state"], json.loads(result.stdout)["version"]) == (2, "2.0")
    assert "the appliance holds 634.9 kB of another bundle (version 1.0): starting afresh" in result.stderr
    assert (appliance.data / "firmware" / "bundle").read_bytes() == small.read_bytes()


def test_the_appliance_refuses_a_block_of_another_bundle_and_keeps_its_copy(signed):
    appliance, laptop, pack = signed
    first, other = pack("a", 1024 * 1024, "1.0").read_bytes(), pack("b", 1024 * 1024, "2.0").read_bytes()
    send_blocks(appliance, laptop, first[: 4 * BLOCK])
    status = json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))
    other_tag = bytes.fromhex(json.loads(first[12 : 12 + int.from_bytes(first[8:12])])["sha256"])[:8]
    assert status["sha256"][:16] == other_tag.hex()
    wrong = bytes.fromhex(json.loads(other[12 : 12 + int.from_bytes(other[8:12])])["sha256"])[:8]
    assert send_blocks(appliance, laptop, other, start=4 * BLOCK, tag=wrong) == [Code.PRECONDITION_FAILED]
    assert json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))["received"] == 4 * BLOCK
    assert (
        send_blocks(appliance, laptop, first[: 6 * BLOCK], start=4 * BLOCK, tag=other_tag)
        == [Code.CONTINUE] * 2
    )


def test_fw_status_says_each_thing_once(signed):
    """It said `firmware update: downloading, ... — downloading`."""
    appliance, laptop, pack = signed
    assert ok(vaxelctl(laptop, "fw", "status")) == "firmware: idle, nothing staged\n"
    bundle = pack("a", 1_000_000, "3.1")
    send_blocks(appliance, laptop, bundle.read_bytes()[: 2 * BLOCK])
    assert ok(vaxelctl(laptop, "fw", "status")) == (
        "firmware: receiving version 3.1: 127.0 kB of 1.0 MB so far (vaxelctl fw upload resumes it)\n"
    )
    ok(vaxelctl(laptop, "fw", "upload", str(bundle)))
    assert ok(vaxelctl(laptop, "fw", "status")) == (
        "firmware: version 3.1 verified and staged (1.0 MB); vaxelctl fw apply installs it\n"
    )


# --- 6: Ctrl-C and revoking yourself ---------------------------------------------------------


class HeldLink:
    """The laptop's TCP link to the appliance, as a relay on 127.0.0.1 that the test holds: it
    passes the laptop's first `limit` bytes, then reads no more of them until `release()`; the
    appliance's answers always pass. vaxelctl sends a block only once the previous one is answered,
    so an upload through it stops between `limit` and `limit` + one block, however fast the link."""

    def __init__(self, target: tuple[str, int], limit: int) -> None:
        self.target, self.limit = target, limit
        self.held, self._released = threading.Event(), threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        laptop, _ = self._listener.accept()  # one connection: the upload's
        appliance = socket.create_connection(self.target)
        self._sockets += [laptop, appliance]
        answers = threading.Thread(target=self._pump, args=(appliance, laptop, None), daemon=True)
        self._threads.append(answers)
        answers.start()
        self._pump(laptop, appliance, self.limit)

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        """Copy source to sink until EOF; after `limit` bytes (if any), wait for the release."""
        passed = 0
        try:
            while True:
                if limit is not None and passed >= limit and not self.held.is_set():
                    self.held.set()
                    self._released.wait()
                room = 65536 if limit is None or passed >= limit else min(65536, limit - passed)
                data = source.recv(room)
                if not data:
                    break
                sink.sendall(data)
                passed += len(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:  # the other side is gone, or close() closed the sockets under us
            pass

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        """Let everything held pass, wait (briefly) for both directions to end, close the sockets."""
        self.release()
        for thread in self._threads[1:]:
            thread.join(10)
        for sock in self._sockets:
            sock.close()


@contextmanager
def held_link(laptop: Path, limit: int) -> Iterator[HeldLink]:
    """The laptop's only pairing pointed at a HeldLink to the appliance it names, then back."""
    (info_path,) = (laptop / "appliances").glob("*/appliance.json")
    info = json.loads(info_path.read_text())
    link = HeldLink((info["host"], int(info["port"])), limit)
    info_path.write_text(json.dumps({**info, "port": link.port}))
    try:
        yield link
    finally:
        link.close()
        info_path.write_text(json.dumps(info))


def test_ctrl_c_during_an_upload_prints_one_line_exits_130_and_the_upload_resumes(signed):
    """It printed 43-48 lines of traceback. The upload goes through a link the test holds after
    1 MiB until the signal is sent: on a fast link it used to finish before Ctrl-C arrived (exit 0)."""
    appliance, laptop, pack = signed
    bundle = pack("a", 48 * 1024 * 1024, "4.0")
    with held_link(laptop, 1024 * 1024) as link:
        upload = subprocess.Popen(
            [*AT_A_TERMINAL, "fw", "upload", str(bundle)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "VAXELCTL_CONFIG": str(laptop), "COLUMNS": "80"},
        )
        try:
            assert link.held.wait(30), "the upload never sent its first MiB"
            assert upload.poll() is None  # mid-upload: it cannot get past the held link
            upload.send_signal(signal.SIGINT)
            stdout, stderr = upload.communicate(timeout=30)
        finally:
            if upload.poll() is None:
                upload.kill()
                upload.communicate()
    assert upload.returncode == 130, stderr
    assert stdout == ""
    found = lines(stderr)
    assert len(found) == 1, stderr
    line = found[0]
    assert line.startswith("vaxelctl: upload interrupted at ")
    assert line.endswith(" of 50.3 MB; run the same command to resume")
    received = json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))["received"]
    assert 0 < received < bundle.stat().st_size
    resumed = vaxelctl(laptop, "fw", "upload", str(bundle))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert "afresh" not in resumed.stderr
    assert resumed.stdout.startswith("firmware: version 4.0 verified and staged (50.3 MB in ")
    assert (appliance.data / "firmware" / "bundle").read_bytes() == bundle.read_bytes()


def test_revoking_yourself_succeeds_and_removes_this_laptops_context(appliance, laptop, tmp_path):
    """It reported failure (rc 4) although it succeeded; the agent logged AttributeError and
    FileNotFoundError."""
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    me = next(row["id"] for row in json.loads(ok(vaxelctl(laptop, "installers", "--json"))) if row["you"])
    serial = listed_serial(laptop)
    result = vaxelctl(laptop, "installers", "revoke", me)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        f"installer {me} revoked: that was you. This laptop's context for {serial} is removed; to "
        f"manage it again: vaxelctl pair {appliance.address}"
    ]
    assert not (laptop / "appliances" / serial).exists()
    assert [row["name"] for row in json.loads(ok(vaxelctl(other, "installers", "--json")))] == ["Olle"]
    assert vaxelctl(laptop, "status").returncode == 4  # not paired any more, said as such
    time.sleep(0.5)
    troubles = [e for e in appliance.agent.events() if e.get("level") in ("error", "critical", "warning")]
    assert not [e for e in troubles if "Error" in json.dumps(e)], troubles
    assert not (appliance.data / "mgmt" / "installers" / me).exists()
    assert not list((appliance.data / "mgmt" / "installers").glob(".revoked-*"))


# --- 11 -------------------------------------------------------------------------------------


def test_site_pull_writes_the_site_for_your_eyes_only_and_says_so(appliance, laptop, tmp_path):
    """It wrote the site, SIP passwords and all, with mode 0644."""
    site = tmp_path / "site-pulled.toml"
    site.write_text("an older copy\n")
    site.chmod(0o644)
    result = vaxelctl(laptop, "site", "pull", "-o", str(site))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    assert lines(result.stderr) == [f"site version 1 written to {site} (mode 0600: it holds SIP passwords)"]
    assert "demo-pw-anna-4f9c" in site.read_text()
    assert "0600" in " ".join(vaxelctl(laptop, "site", "pull", "--help").stdout.split())


def test_the_signing_key_is_read_when_an_upload_starts_and_the_refusal_says_where_it_goes(
    appliance, laptop, tmp_path
):
    """The key was read only at agent start; the refusal did not say where the key goes."""
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    ok(vaxelctl(tmp_path, "fw", "keygen", str(private), str(public)))
    bundle = packed_bundle(tmp_path, tmp_path, private, "5", 100_000)
    refused = vaxelctl(laptop, "fw", "upload", str(bundle))
    assert refused.returncode == 1
    installed = appliance.data / "firmware-signing.pub"
    assert lines(refused.stderr) == [
        "vaxelctl: 5.03 Service Unavailable: no firmware signing key on this appliance: install the "
        f"public key from `vaxelctl fw keygen` as {installed}"
    ]
    installed.write_bytes(public.read_bytes())  # no restart
    result = json.loads(ok(vaxelctl(laptop, "fw", "upload", str(bundle), "--json")))
    assert (result["state"], result["version"]) == (2, "5")


def vaxelbox(appliance: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaxelbox", *args, "--data", str(appliance.data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_an_enrolment_window_for_a_second_phone_keeps_the_first_ones(appliance, laptop):
    """`enrol open --mac B` silently replaced the window open for A."""
    first = json.loads(ok(vaxelctl(laptop, "enrol", "open", "--mac", RECEPTION, "--minutes", "20", "--json")))
    assert first["macs"] == [RECEPTION]
    second = vaxelctl(laptop, "enrol", "open", "--mac", SNOM, "--minutes", "5")
    assert second.returncode == 0, second.stderr
    assert lines(second.stdout)[1:] == [
        f"It widened the window that was open for {RECEPTION}: nothing closes early."
    ]
    window = json.loads(ok(vaxelctl(laptop, "enrol", "status", "--json")))
    assert window["macs"] == sorted([RECEPTION, SNOM])
    assert window["until"] == first["until"]  # A's end stands: the later one wins
    ok(vaxelctl(laptop, "enrol", "close"))
    on_appliance = vaxelbox(appliance, "enrol", "open", "--mac", SNOM)
    assert on_appliance.returncode == 0, on_appliance.stderr
    both = vaxelbox(appliance, "enrol", "open", "--mac", RECEPTION)
    assert lines(both.stdout)[1:] == [
        f"It widened the window that was open for {SNOM}: nothing closes early."
    ]
    assert json.loads(ok(vaxelctl(laptop, "enrol", "status", "--json")))["macs"] == sorted([RECEPTION, SNOM])


def test_an_enrolment_window_for_a_phone_not_in_the_site_is_refused(appliance, laptop):
    """It accepted any MAC."""
    refused = vaxelctl(laptop, "enrol", "open", "--mac", STRANGER)
    assert refused.returncode == 1
    assert lines(refused.stderr) == [
        f"vaxelctl: {STRANGER}: not assigned in the site, so no enrolment window may "
        "name it; assign it first (vaxelctl phones assign MAC USER)"
    ]
    on_appliance = vaxelbox(appliance, "enrol", "open", "--mac", STRANGER)
    assert on_appliance.returncode == 1
    assert f"{STRANGER}: not assigned in the site" in on_appliance.stderr
    assert "vaxelbox phones assign MAC USER" in on_appliance.stderr
    assert json.loads(ok(vaxelctl(laptop, "enrol", "status", "--json")))["open"] is False


def test_assigning_a_phone_to_the_same_user_again_makes_no_new_site_version(appliance, laptop):
    """It made an identical site version."""
    again = vaxelctl(laptop, "phones", "assign", RECEPTION, "anna")
    assert again.returncode == 0, again.stderr
    assert lines(again.stdout)[0] == f"{RECEPTION} is already assigned to anna (site version 1)."
    assert (
        json.loads(ok(vaxelctl(laptop, "phones", "assign", RECEPTION, "anna", "--json")))["changed"] is False
    )
    on_appliance = vaxelbox(appliance, "phones", "assign", SNOM, "bjorn")
    assert lines(on_appliance.stdout)[0] == f"{SNOM} is already assigned to bjorn; nothing changed."
    assert [v["version"] for v in json.loads(ok(vaxelctl(laptop, "site", "versions", "--json")))] == [1]
    moved = json.loads(ok(vaxelctl(laptop, "phones", "assign", RECEPTION, "bjorn", "--json")))
    assert (moved["changed"], moved["site_version"]) == (True, 2)


def every_command(app: typer.Typer) -> list[list[str]]:
    """The argv prefix of every command and group of a typer app."""

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("cli", ["vaxelctl", "vaxelbox"])
def test_help_shows_no_value_type_after_flags(cli):
    """Every --help showed `<bool>` after each flag, as if it took a value."""
    if cli == "vaxelctl":
        from vaxelctl.cli import app
    else:
        from vaxelbox.cli import app
    runner = CliRunner(env={"COLUMNS": "80"})
    commands = every_command(app)
    assert len(commands) > 10
    for argv in commands:
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, (argv, result.output)
        assert "<bool>" not in result.output, (argv, result.output)
        assert "--help" in result.output
