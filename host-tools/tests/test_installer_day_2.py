"""The installer's day, second review (issue 19): what a fresh reviewer still found wrong in vaxelctl.
Each test is one reproduction: vaxelctl run as a subprocess in an 80-column terminal against the
real agent on loopback (test_management.Appliance), its exit code and every line it printed."""

import errno
import json
import os
import pty
import select
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from test_management import Appliance, keygen, listed_serial, packed_bundle, paired

DEMO_PASSWORD = "demo-pw-anna-4f9c"  # a SIP password in the demo site


def vaxelctl(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def installers(laptop: Path) -> list[dict]:
    return json.loads(ok(vaxelctl(laptop, "installers", "--json")))


@pytest.fixture
def appliance(tmp_path):
    running = Appliance(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def laptop(appliance, tmp_path):
    return paired(tmp_path / "laptop", appliance, "Lisa")


@pytest.fixture
def keys(tmp_path):
    """A signing key pair made by vaxelctl fw keygen: (private, public)."""
    return keygen(tmp_path / "signing.key", tmp_path / "signing.pub")


# --- 1: a mistyped file name is a usage error in one line, never a traceback ------------------


def file_mistakes(tmp: Path, private: Path) -> list[tuple[list[str], str]]:
    """(command, the one line it must print) for each way of naming a file wrongly."""
    missing, folder = tmp / "nonexistent.toml", tmp / "a-folder"
    folder.mkdir(parents=True)
    garbage, latin1 = tmp / "garbage.key", tmp / "latin1.toml"
    garbage.write_text("not a key\n")
    latin1.write_bytes('[site]\nname = "Caf\xe9"\n'.encode("latin-1"))
    image = tmp / "image.bin"
    image.write_bytes(os.urandom(1000))
    nowhere = tmp / "no-such-dir"
    pack = ["fw", "pack", "--version", "1", "--board", "simboard"]
    return [
        (["site", "push", str(missing)], f"cannot read site file {missing}: no such file"),
        (["site", "diff", str(missing)], f"cannot read site file {missing}: no such file"),
        (["site", "push", str(folder)], f"cannot read site file {folder}: it is a directory"),
        (["site", "diff", str(folder)], f"cannot read site file {folder}: it is a directory"),
        (["site", "push", str(latin1)], f"cannot read site file {latin1}: it is not UTF-8 text"),
        (["site", "validate", str(missing)], f"cannot read site file {missing}: no such file"),
        (["site", "validate", str(folder)], f"cannot read site file {folder}: it is a directory"),
        (["site", "pull", "-o", str(nowhere / "s.toml")], f"cannot write {nowhere / 's.toml'}: no directory {nowhere}"),
        (["site", "pull", "-o", str(folder)], f"cannot write {folder}: it is a directory"),
        (["fw", "upload", str(missing)], f"cannot read bundle {missing}: no such file"),
        (["fw", "upload", str(folder)], f"cannot read bundle {folder}: it is a directory"),
        ([*pack, str(missing), "--key", str(private), "-o", str(tmp / "b")], f"cannot read image {missing}: no such file"),
        ([*pack, str(image), "--key", str(missing), "-o", str(tmp / "b")], f"cannot read key {missing}: no such file"),
        (
            [*pack, str(image), "--key", str(garbage), "-o", str(tmp / "b")],
            f"{garbage} is not a private key in PEM without a password (vaxelctl fw keygen makes one)",
        ),
        ([*pack, str(image), "--key", str(private), "-o", str(folder)], f"cannot write bundle {folder}: it is a directory"),
        (
            [*pack, str(image), "--key", str(private), "-o", str(nowhere / "b")],
            f"cannot write bundle {nowhere / 'b'}: no directory {nowhere}",
        ),
        (
            ["fw", "keygen", str(nowhere / "k"), str(tmp / "k.pub")],
            f"cannot write private key {nowhere / 'k'}: no directory {nowhere}",
        ),
        (
            ["fw", "keygen", str(tmp / "k"), str(nowhere / "k.pub")],
            f"cannot write public key {nowhere / 'k.pub'}: no directory {nowhere}",
        ),
    ]  # fmt: skip


def test_a_mistyped_file_is_one_line_naming_it_exit_2_and_json_under_json(appliance, laptop, keys, tmp_path):
    """`site push /nonexistent.toml` printed a rich traceback, exit 1, and nothing on stdout with --json."""
    mistakes = file_mistakes(tmp_path / "mistakes", keys[0])

    def both(mistake: tuple[list[str], str]) -> tuple[subprocess.CompletedProcess[str], ...]:
        return vaxelctl(laptop, *mistake[0]), vaxelctl(laptop, *mistake[0], "--json")

    # Each command fails on its own file before it writes anything, so they run side by side (a
    # vaxelctl start is ~0.4 s of CPU; 36 of them one after another took 14 s); but `site pull`
    # fetches first, holding the pairing one vaxelctl at a time may use: those run in turn.
    pulls = [mistake for mistake in mistakes if mistake[0][:2] == ["site", "pull"]]
    others = [mistake for mistake in mistakes if mistake not in pulls]
    with ThreadPoolExecutor(max_workers=4) as pool:
        pulled = pool.submit(lambda: [both(mistake) for mistake in pulls])
        done = list(pool.map(both, others))
        runs = [
            (*mistake, *results)
            for mistake, results in zip(others + pulls, done + pulled.result(), strict=True)
        ]
    for command, message, result, as_json in runs:
        assert (result.returncode, lines(result.stderr), result.stdout) == (
            2,
            [f"vaxelctl: {message}"],
            "",
        ), command
        assert as_json.returncode == 2, command
        assert json.loads(as_json.stdout) == {"error": message, "exit_code": 2}, command
    left = tmp_path / "mistakes"
    assert not list(left.glob("*.tmp")) + list(left.glob(".*.tmp"))  # no temporary file stays behind
    assert not (left / "k").exists()  # keygen wrote neither key when it could not write both
    assert not (left / "b").exists()


def read_only(folder: Path) -> list[str]:
    """An argv prefix that runs a command with `folder` read-only: in a mount namespace of its own
    with a read-only bind mount (as root, whom permissions do not stop), else by its mode (0500)."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return []
    remount = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", remount, "sh", str(folder)]


def test_an_unwritable_site_file_after_a_push_says_the_push_landed_and_what_to_do(
    appliance, laptop, tmp_path
):
    """The push succeeded, then rewriting the file's version line raised a traceback (exit 1)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    site = folder / "site.toml"
    ok(vaxelctl(laptop, "site", "pull", "-o", str(site)))
    site.write_text(site.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    result = subprocess.run(
        [
            *read_only(folder),
            sys.executable,
            "-c",
            "from vaxelctl.cli import main; main()",
            "site",
            "push",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VAXELCTL_CONFIG": str(laptop), "COLUMNS": "80"},
    )
    folder.chmod(0o700)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [f"site version 2 active (pushed by installer {me(laptop)})."]
    assert lines(result.stderr) == [
        f"vaxelctl: site version 2 is active, but {site} could not be updated (read-only file system): "
        "its first line still names version 1, so pull it again before you edit it further"
    ]
    assert site.read_text().startswith("# vaxelbox-site: version 1, ")


def me(laptop: Path) -> str:
    return next(row["id"] for row in installers(laptop) if row["you"])


# --- 2: keygen never replaces a key silently -----------------------------------------------------


def test_keygen_refuses_to_replace_a_key_unless_forced(tmp_path, keys):
    """A second keygen silently replaced the private key: bundles signed afterwards no longer
    verified on an appliance holding the old public key."""
    private, public = keys
    old = private.read_bytes(), public.read_bytes()
    again = vaxelctl(tmp_path, "fw", "keygen", str(private), str(public))
    assert again.returncode == 1
    assert lines(again.stderr) == [
        f"vaxelctl: {private} already exists: appliances holding its public key accept only bundles "
        "it signs; nothing replaced (--force replaces it)"
    ]
    assert (private.read_bytes(), public.read_bytes()) == old
    other = tmp_path / "other.key"
    only_public = vaxelctl(tmp_path, "fw", "keygen", str(other), str(public), "--json")
    assert only_public.returncode == 1
    assert json.loads(only_public.stdout)["error"].startswith(f"{public} already exists: ")
    assert not other.exists()
    forced = json.loads(
        ok(vaxelctl(tmp_path, "fw", "keygen", str(private), str(public), "--force", "--json"))
    )
    assert forced == {"private_key": str(private), "public_key": str(public), "replaced": True}
    assert (private.read_bytes() != old[0], public.read_bytes() != old[1]) == (True, True)
    assert oct(private.stat().st_mode & 0o777) == "0o600"


# --- 3 and 6: pairing again replaces this laptop's earlier pairing; --json names the installer --


def test_pairing_again_revokes_this_laptops_earlier_installer(appliance, laptop, tmp_path):
    """Pairing twice with the same config left several entries named root@vm; only the newest had keys."""
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    first = me(laptop)
    again = vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code(), "--name", "Lisa")
    assert again.returncode == 0, again.stderr
    second = me(laptop)
    serial = listed_serial(laptop)
    assert lines(again.stdout) == [
        f"Paired with {serial} at {appliance.address} as Lisa (installer {second}).",
        f"This laptop's earlier pairing with {serial} (installer {first}) is revoked.",
    ]
    assert sorted((row["name"], row["id"]) for row in installers(laptop)) == sorted(
        [("Lisa", second), ("Olle", me(other))]
    )
    third = json.loads(ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code(), "--json")))
    assert third["installer"] == me(laptop) != second
    assert third["replaced"] == {"installer": second, "revoked": True}
    assert second not in [row["id"] for row in installers(laptop)]
    revoked = [e for e in appliance.agent.events("audit") if e["action"] == "revoke-installer"]
    assert [(e["revoked"], e["installer"]) for e in revoked] == [
        (first, second),
        (second, third["installer"]),
    ]


def test_pairing_again_after_someone_revoked_this_laptop_says_nothing_was_left(appliance, laptop, tmp_path):
    other = tmp_path / "other-laptop"
    ok(vaxelctl(other, "pair", appliance.address, "--code", appliance.code(), "--name", "Olle"))
    gone = me(laptop)
    ok(vaxelctl(other, "installers", "revoke", gone))
    again = vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code(), "--name", "Lisa")
    assert again.returncode == 0, again.stderr
    assert lines(again.stdout)[1:] == [
        f"This laptop's earlier pairing with {listed_serial(laptop)} (installer {gone}) was already revoked."
    ]
    assert sorted(row["name"] for row in installers(laptop)) == ["Lisa", "Olle"]


def test_pair_json_names_the_installer_id(appliance, tmp_path):
    """pair --json did not say which installer this laptop became."""
    laptop = tmp_path / "laptop"
    result = json.loads(ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code(), "--json")))
    assert result["installer"] == me(laptop)
    assert result["replaced"] is None
    assert (result["serial"], f"{result['host']}:{result['port']}") == (
        listed_serial(laptop),
        appliance.address,
    )


# --- 4: the upload's progress bar, as a terminal shows it ------------------------------------------


def in_a_terminal(config: Path, *args: str) -> tuple[int, str, str]:
    """vaxelctl with stderr on a pseudo-terminal 80 columns wide, as an installer sees it:
    (exit code, stdout, what the terminal received)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", "from vaxelctl.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
        env={**os.environ, "VAXELCTL_CONFIG": str(config), "COLUMNS": "80", "TERM": "xterm"},
    )
    os.close(terminal)
    screen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            process.kill()
            pytest.fail(f"no output for 60 s: {screen!r}")
        try:
            chunk = os.read(controller, 65536)
        except OSError as exc:  # the terminal's other side closed
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    stdout = process.stdout.read() if process.stdout else ""
    return process.wait(timeout=30), stdout, screen.decode("utf-8", "replace")


def test_the_upload_progress_bar_shows_words_not_markup(tmp_path, keys):
    """The bar read `[progress.description]uploading ━━━━ ...`: a markup column on a console that
    reads no markup."""
    private, public = keys
    appliance = Appliance(tmp_path, "--fw-key", str(public))
    try:
        laptop = tmp_path / "laptop"
        ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code()))
        bundle = packed_bundle(tmp_path, tmp_path, private, "7", 2_000_000)
        code, stdout, screen = in_a_terminal(laptop, "fw", "upload", str(bundle))
    finally:
        appliance.stop()
    assert code == 0, screen
    assert stdout.startswith("firmware: version 7 verified and staged")
    assert "uploading" in screen
    assert "[" not in screen.replace("\x1b[", ""), screen  # no markup left over, escapes aside
    assert "2.0/2.0 MB" in screen


# --- 5: site pull -o --json: where the site went, never the site itself ----------------------------


def test_site_pull_to_a_file_with_json_prints_where_it_went_not_the_passwords(appliance, laptop, tmp_path):
    """It printed the whole site, SIP passwords included, although the file was written 0600."""
    site = tmp_path / "site.toml"
    result = vaxelctl(laptop, "site", "pull", "-o", str(site), "--json")
    assert result.returncode == 0, result.stderr
    assert DEMO_PASSWORD not in result.stdout + result.stderr
    pulled = json.loads(result.stdout)
    assert "source" not in pulled
    assert (pulled["version"], pulled["path"], pulled["mode"]) == (1, str(site), "0600")
    assert site.read_text().startswith(f"# vaxelbox-site: version 1, etag {pulled['etag']}\n")
    assert DEMO_PASSWORD in site.read_text()
    whole = json.loads(ok(vaxelctl(laptop, "site", "pull", "--json")))  # no -o: the source is the output
    assert DEMO_PASSWORD in whole["source"]
    assert pulled["etag"] == whole["digest"][:16]


# --- 7: fw status says that applying the staged bundle is not there yet ---------------------------


def test_fw_status_says_applying_a_staged_bundle_comes_later(tmp_path, keys):
    private, public = keys
    appliance = Appliance(tmp_path, "--fw-key", str(public))
    try:
        laptop = tmp_path / "laptop"
        ok(vaxelctl(laptop, "pair", appliance.address, "--code", appliance.code()))
        bundle = packed_bundle(tmp_path, tmp_path, private, "3.1", 1_000_000)
        uploaded = ok(vaxelctl(laptop, "fw", "upload", str(bundle)))
        status = ok(vaxelctl(laptop, "fw", "status"))
    finally:
        appliance.stop()
    later = "; vaxelctl fw apply installs it"
    assert uploaded.startswith("firmware: version 3.1 verified and staged (1.0 MB in ")
    assert " ".join(uploaded.split()).endswith(f"){later}")  # wrapped at 80 columns, indented
    assert " ".join(status.split()) == f"firmware: version 3.1 verified and staged (1.0 MB){later}"
    assert max(len(line) for line in status.splitlines()) <= 80


# --- 8: the audit line names who revoked themselves; enrolment's end is a local time --------------


def test_audit_names_an_installer_who_revoked_themselves_and_enrolment_ends_in_local_time(appliance, laptop):
    """Self-revoke was logged with installer_name=None; enrol-open logged `until` as a raw epoch."""
    opened = json.loads(ok(vaxelctl(laptop, "enrol", "open", "--minutes", "30", "--json")))
    ok(vaxelctl(laptop, "installers", "revoke", me_before_revoke := me(laptop)))
    audits = {e["action"]: e for e in appliance.agent.events("audit")}
    revoke = audits["revoke-installer"]
    assert (revoke["installer"], revoke["installer_name"]) == (me_before_revoke, "Lisa")
    assert (revoke["revoked"], revoke["revoked_name"]) == (me_before_revoke, "Lisa")
    until = audits["enrol-open"]["until"]
    assert until == datetime.fromtimestamp(opened["until"]).astimezone().isoformat(timespec="seconds")


# --- 9: exit codes follow the README: 0 done, 1 refused, 2 usage, 3 unreachable, 4 not paired ------


def test_a_wrong_pairing_code_is_refused_1_and_a_malformed_one_is_usage_2(appliance, tmp_path):
    """A wrong code exited 4 (not paired) and `--code short` 1 (refused)."""
    wrong = vaxelctl(tmp_path / "a", "pair", appliance.address, "--code", "AAAAA-BBBBB-CCCCC-DDDDD")
    assert wrong.returncode == 1, wrong.stderr
    assert "refused the pairing code" in wrong.stderr
    for code, why in [
        ("short", "a pairing code has 20 letters and digits (4 groups of 5); this has 5"),
        ("AAAAA-BBBBB-CCCCC-DDDD9", "'9' is not in any pairing code"),
    ]:
        malformed = vaxelctl(tmp_path / "b", "pair", appliance.address, "--code", code, "--json")
        assert malformed.returncode == 2, malformed.stderr
        assert json.loads(malformed.stdout)["error"].startswith(why)
    port = vaxelctl(tmp_path / "c", "pair", "127.0.0.1:http", "--code", appliance.code())
    assert (port.returncode, lines(port.stderr)) == (
        2,
        ["vaxelctl: '127.0.0.1:http': the port after ':' is a number (HOST:PORT, [IPv6]:PORT)"],
    )
    assert not any((tmp_path / name / "appliances").exists() for name in "abc")


def test_several_paired_appliances_without_a_choice_is_usage_2(appliance, laptop, tmp_path):
    (tmp_path / "second").mkdir()
    second = Appliance(tmp_path / "second")
    try:
        ok(vaxelctl(laptop, "pair", second.address, "--code", second.code()))
        result = vaxelctl(laptop, "status")
    finally:
        second.stop()
    assert result.returncode == 2
    assert lines(result.stderr)[0].startswith("vaxelctl: paired with several appliances (")
    assert lines(result.stderr)[0].endswith(
        "): choose one with --appliance (by its serial), and vaxelctl forget SERIAL one that is gone"
    )
    malformed = vaxelctl(laptop, "enrol", "open", "--mac", "zz:11", "-a", appliance.address)
    assert (malformed.returncode, lines(malformed.stderr)) == (  # usage, as from `vaxelbox enrol open`
        2,
        ["vaxelctl: 'zz:11' is not a MAC address (e.g. 00:15:65:4a:a9:37)"],
    )


def test_discover_finding_nothing_is_unreachable_3(tmp_path):
    """It exited 1 (refused) although nothing had refused anything."""
    result = vaxelctl(tmp_path, "discover", "--interface", "127.0.0.1", "--timeout", "0.3")
    assert (result.returncode, result.stdout) == (3, "")
    assert lines(result.stderr) == [
        "no appliance answered: same LAN? (vaxelctl pair HOST works without discovery)"
    ]


def test_site_diff_exits_1_when_the_file_differs_like_diff_and_the_readme_says_so(
    appliance, laptop, tmp_path
):
    site = tmp_path / "site.toml"
    ok(vaxelctl(laptop, "site", "pull", "-o", str(site)))
    assert vaxelctl(laptop, "site", "diff", str(site)).returncode == 0
    site.write_text(site.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    assert vaxelctl(laptop, "site", "diff", str(site)).returncode == 1
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert "Exit codes: 0 done, 1 refused, 2 usage, 3 unreachable, 4 not paired" in readme
    assert "`site diff` exits 1 when the file differs (like diff(1))" in readme
    assert "a wrong pairing code is refused (1), a malformed one is usage (2)" in readme
