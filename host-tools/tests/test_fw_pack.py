"""`vaxelctl fw pack` makes only bundles an appliance can apply, and names the file it wrote.

Before, a bundle without --board, for a board no board file names, or with a version that is not
dotted numbers was packed (exit 0) and uploaded ("verified and staged"), and only `fw apply` refused
it; and pack printed the image's size and SHA-256 as if they were the bundle's. The CLI is driven
as an installer types it, at 80 columns; the packed bundle is then judged by the agent's own rule
(vaxelbox.update.slots.apply), so pack and apply agree.
"""

import hashlib
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from vaxelbox.bundle import read_header
from vaxelbox.update import slots
from vaxelctl.cli import app

BOARDS = sorted(
    yaml.safe_load(path.read_text())["name"]
    for path in (Path(__file__).resolve().parents[2] / "boards").glob("*.yaml")
)


@pytest.fixture
def packing(tmp_path):
    """(run `vaxelctl fw pack IMAGE --key K -o BUNDLE *args` -> (exit code, words said), image, bundle)."""
    runner = CliRunner(env={"COLUMNS": "80"})
    key, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    assert runner.invoke(app, ["fw", "keygen", str(key), str(public)]).exit_code == 0
    image, bundle = tmp_path / "agent.tar.gz", tmp_path / "agent.vxb"
    image.write_bytes(bytes(range(256)) * 40)

    def pack(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["fw", "pack", str(image), "--key", str(key), "-o", str(bundle), *args])
        said = re.sub(r"[│╭╮╰╯─]", " ", result.output)  # the error box's frame, then its wrapping
        return result.exit_code, " ".join(said.split())

    return pack, image, bundle


def test_a_bundle_no_appliance_would_apply_is_a_usage_error_and_nothing_is_written(packing):
    pack, _, bundle = packing
    code, said = pack("--version", "1.2")
    assert (code, bundle.exists()) == (2, False)
    assert "Missing option '--board'" in said
    code, said = pack("--version", "1.2", "--board", "simboard", "--board", "rpi5")
    assert (code, bundle.exists()) == (2, False)
    assert (
        f"Invalid value for --board: unknown board 'rpi5'; the known boards are {', '.join(BOARDS)}" in said
    )
    code, said = pack("--version", "banana", "--board", "simboard")
    assert (code, bundle.exists()) == (2, False)
    assert "Invalid value for --version: version 'banana' is not dotted numbers (e.g. 1.4.2)" in said


def test_pack_names_the_bundle_it_wrote_and_apply_accepts_it(packing):
    pack, image, bundle = packing
    code, said = pack("--version", "1.2", "--board", "simboard", "--board", "rpi-4b")
    assert code == 0, said
    written = bundle.read_bytes()
    digest = hashlib.sha256(written).hexdigest()
    assert (
        said == f"{bundle}: version 1.2 for simboard, rpi-4b, {len(written)} bytes, sha256 {digest[:16]}..."
    )
    assert len(written) != image.stat().st_size
    with bundle.open("rb") as file:
        header = read_header(file)
    step = slots.apply(
        slots.Slots({"A": "1.0", "B": None}), slots.Bundle(header.version, header.boards), "rpi-4b", "1.0"
    )
    assert step.state.trial is not None
    assert step.state.trial.version == "1.2"
