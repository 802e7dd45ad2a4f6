"""vaxelctl validates a site on the installer's laptop exactly as the appliance will."""

import json
import subprocess
import sys

from vaxelbox.site import demo_site_text


def vaxelctl(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from vaxelctl.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_valid_site(tmp_path):
    (tmp_path / "site.toml").write_text(demo_site_text())
    result = vaxelctl("site", "validate", str(tmp_path / "site.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK — Revisionsbyrån Demo AB: users: 6, groups: 2" in result.stdout


def test_invalid_site_lists_each_problem_and_exits_1(tmp_path):
    text = demo_site_text().replace('members = ["anna", "bjorn"]', 'members = ["anna", "gustav"]')
    text = text.replace('extension = "203"', 'extension = "201"')
    (tmp_path / "site.toml").write_text(text)
    result = vaxelctl("site", "validate", str(tmp_path / "site.toml"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path}/site.toml: users[4].extension: extension '201' is already used by users[2].extension",
        f"{tmp_path}/site.toml: groups[0].members[1]: unknown user 'gustav'",
        "2 problem(s); nothing was applied",
    ]


def test_json_output_for_scripts(tmp_path):
    (tmp_path / "site.toml").write_text("[site]\nname = 'x'\n")
    result = vaxelctl("site", "validate", "--json", str(tmp_path / "site.toml"))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert {"path": "cloud", "message": "required field is missing"} in report["problems"]


def test_missing_file_is_a_clear_error(tmp_path):
    result = vaxelctl("site", "validate", str(tmp_path / "nope.toml"))
    assert result.returncode == 2  # usage, as a mistyped file name is in every vaxelctl command
    assert result.stderr == f"vaxelctl: cannot read site file {tmp_path / 'nope.toml'}: no such file\n"


def test_version():
    result = vaxelctl("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("vaxelctl ")


def test_the_record_of_who_holds_a_pairing_keeps_the_command_and_never_a_pairing_code():
    """It dropped everything after the first flag (`enrol -a HOST status` read `enrol -a`)."""
    from vaxelctl.client import _command_words

    assert _command_words(["enrol", "-a", "127.0.0.1", "status"]) == ["enrol", "-a", "127.0.0.1", "status"]
    assert _command_words(["status", "--watch", "--json"]) == ["status", "--watch", "--json"]
    assert _command_words(["pair", "10.0.0.5", "--code", "ABCDE-FGHIJ"]) == [
        "pair",
        "10.0.0.5",
        "--code",
        "...",
    ]
    assert _command_words(["pair", "--code=ABCDE-FGHIJ", "10.0.0.5"]) == ["pair", "--code=...", "10.0.0.5"]
