"""Management over CoAP, end to end: a running agent, aiocoap's own client, and vaxelctl.

Real peers only: the agent process on loopback, aiocoap as the client library
(with and without OSCORE), vaxelctl as the installer runs it.
"""

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import aiocoap
import cbor2
import pytest
from agent_process import AgentProcess
from aiocoap import Code, Message
from aiocoap.numbers import ContentFormat
from peers import free_port
from typer.testing import CliRunner
from vaxelbox.mgmt.security import PairingSecret, pairing_context, release
from vaxelbox.site import demo_site_text
from vaxelctl.cli import app as vaxelctl_app

BLOCK = 62 * 1024  # what vaxelctl sends per BERT request
PROTECTED = [
    (Code.GET, "status"),
    (Code.GET, "site"),
    (Code.PUT, "site"),
    (Code.GET, "site/versions"),
    (Code.POST, "site/rollback"),
    (Code.GET, "phones"),
    (Code.POST, "phones"),
    (Code.GET, "enrol"),
    (Code.POST, "enrol"),
    (Code.GET, "registrations"),
    (Code.GET, "calls"),
    (Code.GET, "journal"),
    (Code.GET, "presence"),
    (Code.GET, "log"),
    (Code.GET, "mode"),
    (Code.PUT, "mode"),
    (Code.GET, "fw"),
    (Code.PUT, "fw"),
    (Code.POST, "fw/update"),
    (Code.GET, "installers"),
    (Code.POST, "installers"),
    (Code.POST, "pair"),
]


class Appliance:
    def __init__(self, tmp_path: Path, *flags: str) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.port = free_port("127.0.0.1")
        (tmp_path / "site.toml").write_text(demo_site_text())
        self.flags = ["--data", str(self.data), "--coap-port", str(self.port), *flags]
        self.start()

    def start(self) -> None:
        self.agent = AgentProcess(self.tmp, *self.flags)
        try:
            self.agent.wait_notification("READY", "1", timeout=20)
        except BaseException:
            self.agent.close()  # no fixture teardown follows a failed setup: end it here
            raise

    def stop(self) -> None:
        self.agent.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, path: str, scheme: str = "coap") -> str:
        return f"{scheme}://{self.address}/{path}"

    def code(self) -> str:
        """The pairing code, read as `vaxelbox pairing-code` reads it (PairingSecret in the data
        directory), here in this process: a new interpreter for it cost ~0.4 s per pairing. The
        command itself runs, and its output is paired with, in firmware/tests (test_local_commands,
        test_good_neighbour, test_failback, ...)."""
        return PairingSecret(self.data / "mgmt").code


# vaxelctl as an installer's terminal starts it, Ctrl-C at its default: a suite run in the background
# of a script (CI under nohup, `make test &`) has SIGINT ignored, and its children would inherit that.
AT_A_TERMINAL = [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "from vaxelctl.cli import main; main()"]  # fmt: skip


def vaxelctl(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    code = "from vaxelctl.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "200"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def paired(config: Path, appliance: Appliance, name: str | None = None) -> Path:
    """The laptop whose vaxelctl config is `config`, paired with `appliance` (as installer `name`)
    by `vaxelctl pair` run in this process (typer's CliRunner): the setup of a fixture, without a
    new interpreter (~0.4 s) each time. Pairing as the subject runs vaxelctl as a subprocess."""
    command = ["pair", appliance.address, "--code", appliance.code(), *(["--name", name] if name else [])]
    result = CliRunner().invoke(vaxelctl_app, command, env={"VAXELCTL_CONFIG": str(config), "COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return config


def keygen(private: Path, public: Path) -> tuple[Path, Path]:
    """A signing key pair made by `vaxelctl fw keygen` run in this process (typer's CliRunner): a
    fixture's setup; keygen as the subject runs vaxelctl as a subprocess (test_installer_day_2)."""
    result = CliRunner().invoke(vaxelctl_app, ["fw", "keygen", str(private), str(public)])
    assert result.exit_code == 0, (result.output, result.exception)
    return private, public


def packed_bundle(config: Path, tmp_path: Path, private: Path, version: str, size: int) -> Path:
    """A bundle of `size` random bytes for the simulated board, signed with `private` by
    `vaxelctl fw pack` (tmp_path/image.bin packed into tmp_path/image.bundle)."""
    image, bundle = tmp_path / "image.bin", tmp_path / "image.bundle"
    image.write_bytes(os.urandom(size))
    ok(vaxelctl(config, "fw", "pack", str(image), "--key", str(private), "--version", version,
                "-o", str(bundle), "--board", "simboard"))  # fmt: skip
    return bundle


@pytest.fixture
def appliance(tmp_path):
    running = Appliance(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def installer(appliance, tmp_path):
    """A laptop paired with the appliance: its vaxelctl config directory."""
    return paired(tmp_path / "laptop", appliance, "Lisa")


async def plain_request(code: Code, uri: str, payload: bytes = b"") -> Message:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        return await context.request(Message(code=code, uri=uri, payload=payload)).response
    finally:
        await context.shutdown()


def test_every_protected_resource_refuses_an_unprotected_request(appliance):
    async def check() -> None:
        for code, path in PROTECTED:
            response = await plain_request(code, appliance.uri(path), cbor2.dumps({}))
            assert response.code == Code.UNAUTHORIZED, (code, path, response)
        core = await plain_request(Code.GET, appliance.uri(".well-known/core"))
        assert core.code == Code.CONTENT
        links = core.payload.decode()
        assert "</dev>;" in links
        assert 'rt="vaxelbox.dev"' in links
        assert "</status>;" in links
        assert "obs" in links
        public = await plain_request(Code.GET, appliance.uri("dev"))
        assert set(cbor2.loads(public.payload)) == {"model", "serial", "firmware"}

    asyncio.run(check())


def test_pairing_gives_a_working_context_and_a_wrong_code_is_refused(appliance, tmp_path, installer):
    status = json.loads(ok(vaxelctl(installer, "status", "--json")))
    assert status["site_version"] == 1
    assert status["phones"]["in_site"] == 6
    listed = json.loads(ok(vaxelctl(installer, "installers", "--json")))
    assert [(row["name"], row["you"]) for row in listed] == [("Lisa", True)]
    secret = installer / "appliances" / listed_serial(installer) / "oscore" / "secret.json"
    assert secret.stat().st_mode & 0o777 == 0o600
    wrong = vaxelctl(tmp_path / "intruder", "pair", appliance.address, "--code", "AAAAA-BBBBB-CCCCC-DDDDD")
    assert wrong.returncode == 1  # refused (the README's exit codes)
    assert "refused the pairing code" in wrong.stderr
    assert len(json.loads(ok(vaxelctl(installer, "installers", "--json")))) == 1


def listed_serial(config: Path) -> str:
    return next((config / "appliances").iterdir()).name


def test_a_pairing_attempt_cannot_be_replayed(appliance):
    """The same attempt (ID context) used twice: the second is answered as an unknown context."""
    id_context = secrets.token_bytes(8)

    async def attempt() -> Message:
        context = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        context.client_credentials[appliance.uri("*")] = pairing_context(
            appliance.code(), id_context, appliance=False
        )
        try:
            message = Message(code=Code.POST, uri=appliance.uri("pair"), payload=cbor2.dumps({"name": "x"}))
            message.opt.content_format = ContentFormat.CBOR
            return await context.request(message).response
        finally:
            await context.shutdown()

    first = asyncio.run(attempt())
    assert first.code == Code.CREATED
    with pytest.raises(aiocoap.error.Error):  # 4.01 "Security context not found", unprotected
        asyncio.run(attempt())


def test_revoked_installer_is_refused_and_pairing_survives_a_restart(appliance, tmp_path, installer):
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    appliance.stop()
    appliance.start()  # sequence numbers and replay windows come back from disk on both sides
    rows = json.loads(ok(vaxelctl(installer, "installers", "--json")))
    olle = next(row["id"] for row in rows if row["name"] == "Olle")
    ok(vaxelctl(installer, "installers", "revoke", olle))
    refused = vaxelctl(other, "status")
    assert refused.returncode == 4
    assert "vaxelctl pair" in refused.stderr
    ok(vaxelctl(installer, "status"))


def test_two_installers_editing_the_site_the_second_gets_412(appliance, tmp_path, installer):
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    mine, theirs = tmp_path / "mine.toml", tmp_path / "theirs.toml"
    ok(vaxelctl(installer, "site", "pull", "-o", str(mine)))
    ok(vaxelctl(other, "site", "pull", "-o", str(theirs)))
    theirs.write_text(theirs.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Olles byrå"'))
    ok(vaxelctl(other, "site", "push", str(theirs)))
    mine.write_text(mine.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    conflict = vaxelctl(installer, "site", "push", str(mine))
    assert conflict.returncode == 1
    assert "changed meanwhile" in conflict.stderr
    diff = vaxelctl(installer, "site", "diff", str(mine))
    assert diff.returncode == 1
    assert '+name = "Lisas byrå"' in diff.stdout
    versions = json.loads(ok(vaxelctl(installer, "site", "versions", "--json")))
    assert [v["version"] for v in versions] == [2, 1]
    ok(vaxelctl(installer, "site", "rollback", "1"))
    pulled = ok(vaxelctl(installer, "site", "pull"))
    assert pulled.startswith("# vaxelbox-site: version 3,")
    assert "Revisionsbyrån Demo AB" in pulled


def test_a_bad_site_is_refused_with_the_field_and_the_running_one_stays(appliance, tmp_path, installer):
    site = tmp_path / "site.toml"
    ok(vaxelctl(installer, "site", "pull", "-o", str(site)))
    site.write_text(site.read_text().replace('extension = "203"', 'extension = "201"'))
    refused = vaxelctl(installer, "site", "push", str(site))
    assert refused.returncode == 1
    assert "users[4].extension" in refused.stderr
    assert json.loads(ok(vaxelctl(installer, "status", "--json")))["site_version"] == 1


def test_phones_and_enrolment_through_vaxelctl(appliance, installer):
    out = ok(vaxelctl(installer, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    assert "assigned to fredrik" in out
    assert "vaxelctl enrol open" in out
    window = json.loads(ok(vaxelctl(installer, "enrol", "open", "--minutes", "5", "--json")))
    assert window["open"] is True
    assert json.loads(ok(vaxelctl(installer, "enrol", "close", "--json")))["open"] is False
    bad = vaxelctl(installer, "phones", "assign", "not-a-mac", "fredrik")
    assert bad.returncode == 2  # usage, as from `vaxelbox phones assign`: nothing was sent
    assert bad.stderr == "vaxelctl: 'not-a-mac' is not a MAC address (e.g. 00:15:65:4a:a9:37)\n"
    unknown_user = vaxelctl(installer, "phones", "assign", "80:5e:c0:11:22:34", "gustav")
    assert unknown_user.returncode == 1
    assert unknown_user.stderr.startswith("vaxelctl: no user 'gustav' in the site (anna, bjorn, "), (
        unknown_user.stderr
    )
    ok(vaxelctl(installer, "phones", "unassign", "80:5e:c0:11:22:33"))


def test_status_observation_follows_a_change(appliance, installer):
    """aiocoap's client observes /status under the installer's OSCORE context."""
    serial = listed_serial(installer)
    oscore_dir = installer / "appliances" / serial / "oscore"

    async def observe() -> list[int]:
        from aiocoap.oscore import FilesystemSecurityContext

        context = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        security = FilesystemSecurityContext(str(oscore_dir))
        context.client_credentials[appliance.uri("*")] = security
        try:
            request = context.request(Message(code=Code.GET, uri=appliance.uri("status"), observe=0))
            first = await request.response
            versions = [cbor2.loads(first.payload)["site_version"]]
            await asyncio.to_thread(ok, vaxelctl_unlocked(installer, appliance))
            async for notification in request.observation:
                versions.append(cbor2.loads(notification.payload)["site_version"])
                if versions[-1] != versions[0]:
                    break
            return versions
        finally:
            await context.shutdown()
            release(security)

    versions = asyncio.run(asyncio.wait_for(observe(), 20))
    assert versions[0] == 1
    assert versions[-1] == 2


def vaxelctl_unlocked(installer: Path, appliance: Appliance) -> subprocess.CompletedProcess[str]:
    """A site change from a second paired laptop (the first one's context is locked by the observer)."""
    other = installer.parent / "second-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    return vaxelctl(other, "phones", "assign", "80:5e:c0:11:22:33", "fredrik")


def test_mode_drill_is_reported(appliance, installer):
    state = json.loads(ok(vaxelctl(installer, "mode", "local", "--json")))
    assert (state["mode"], state["override"], state["reason"]) == (
        "local",
        "local",
        "forced local by an installer",
    )
    assert json.loads(ok(vaxelctl(installer, "status", "--json")))["mode"] == "local"
    shown = ok(vaxelctl(installer, "mode"))
    assert ": forced by an installer (`vaxelctl mode auto` ends it); cloud " in shown, shown
    assert shown.count("forced") == 1, shown  # said once
    appliance.stop()
    appliance.start()  # the override is kept across a restart
    assert "mode local since " in (kept := ok(vaxelctl(installer, "mode"))), kept
    assert ": forced by an installer" in kept, kept
    state = json.loads(ok(vaxelctl(installer, "mode", "auto", "--json")))
    assert state["override"] == "auto"
    log = ok(vaxelctl(installer, "log", "--json"))
    assert '"mode"' in log
    for secret in ("demo-pw-anna-4f9c", "demo-admin-7d3e"):
        assert secret not in log


@pytest.fixture
def signing(tmp_path):
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    ok(vaxelctl(tmp_path, "fw", "keygen", str(private), str(public)))
    return private, public


def test_a_5_mib_signed_bundle_streams_in_and_a_tampered_one_is_refused(tmp_path, signing):
    private, public = signing
    appliance = Appliance(tmp_path, "--fw-key", str(public))
    try:
        laptop = tmp_path / "laptop"
        ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code()))
        image = tmp_path / "image.bin"
        image.write_bytes(os.urandom(5 * 1024 * 1024))
        bundle = tmp_path / "image.bundle"
        ok(
            vaxelctl(
                laptop,
                "fw",
                "pack",
                str(image),
                "--key",
                str(private),
                "--version",
                "2.0.0",
                "-o",
                str(bundle),
                "--board",
                "simboard",
            )
        )
        result = json.loads(ok(vaxelctl(laptop, "fw", "upload", str(bundle), "--json")))
        assert (result["state"], result["version"], result["size"]) == (2, "2.0.0", 5 * 1024 * 1024)
        staged = appliance.data / "firmware" / "bundle"
        assert staged.read_bytes() == bundle.read_bytes()
        tampered = bytearray(bundle.read_bytes())
        tampered[-1000] ^= 0xFF
        bad = tmp_path / "tampered.bundle"
        bad.write_bytes(bytes(tampered))
        refused = vaxelctl(laptop, "fw", "upload", str(bad))
        assert refused.returncode == 1
        assert "SHA-256 does not match" in refused.stderr
        state = json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))
        assert (state["state"], state["result"]) == (0, 5)  # idle, integrity check failure
        forged = bytearray(bundle.read_bytes())
        forged[20] ^= 0x01  # inside the signed header
        bad.write_bytes(bytes(forged))
        refused = vaxelctl(laptop, "fw", "upload", str(bad))
        assert "signature does not verify" in refused.stderr
        update = vaxelctl(laptop, "fw", "status")
        assert "idle" in update.stdout
    finally:
        appliance.stop()


def test_an_interrupted_upload_resumes_where_the_appliance_copy_ends(tmp_path, signing):
    private, public = signing
    appliance = Appliance(tmp_path, "--fw-key", str(public))
    try:
        laptop = tmp_path / "laptop"
        ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code()))
        bundle = packed_bundle(laptop, tmp_path, private, "3.1", 3 * 1024 * 1024)
        data = bundle.read_bytes()
        half = (len(data) // 2) // BLOCK * BLOCK
        _send_blocks(appliance, laptop, data[:half])  # then the laptop "loses" the connection
        appliance.stop()
        appliance.start()
        state = json.loads(ok(vaxelctl(laptop, "fw", "status", "--json")))
        assert (state["state"], state["received"]) == (1, half)
        result = json.loads(ok(vaxelctl(laptop, "fw", "upload", str(bundle), "--json")))
        assert (result["state"], result["version"]) == (2, "3.1")
        assert (appliance.data / "firmware" / "bundle").read_bytes() == data
    finally:
        appliance.stop()


def _send_blocks(appliance: Appliance, laptop: Path, data: bytes) -> None:
    from aiocoap.oscore import FilesystemSecurityContext

    oscore_dir = laptop / "appliances" / listed_serial(laptop) / "oscore"

    async def send() -> None:
        context = await aiocoap.Context.create_client_context(transports=["oscore", "tcpclient"])
        security = FilesystemSecurityContext(str(oscore_dir))
        context.client_credentials[appliance.uri("*", "coap+tcp")] = security
        try:
            # A small request first: it completes the CSM exchange (RFC 8323), before which
            # aiocoap holds back messages larger than the default 1152 bytes.
            await context.request(Message(code=Code.GET, uri=appliance.uri("fw", "coap+tcp"))).response
            for offset in range(0, len(data), BLOCK):
                chunk = data[offset : offset + BLOCK]
                message = Message(code=Code.PUT, uri=appliance.uri("fw", "coap+tcp"), payload=chunk)
                message.opt.block1 = (offset // 1024, True, 7)
                response = await context.request(message, handle_blockwise=False).response
                assert response.code == Code.CONTINUE, response
        finally:
            await context.shutdown()
            release(security)

    asyncio.run(send())
