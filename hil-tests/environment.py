"""A labgrid environment for a board, made from its boards/*.yaml (the one source of truth).

Console: the board file's serial device (RawSerialPort), or a lab host's
serial server when HIL_CONSOLE=rfc2217://HOST:PORT (NetworkSerialPort, ser2net).
Power: the board's power commands (ExternalPowerDriver), or a person
(ManualPowerDriver asks on the terminal). The simulated board's power is
`python -m simboard power on|off`.
"""

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from vaxelbox.hw.board import Board, BoardError, load_board

HIL = Path(__file__).resolve().parent
PROMPT = r"root@[\w-]+:[^ ]*# "


def environment(board: Board) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    console = os.environ.get("HIL_CONSOLE")
    if console:
        url = urlparse(console)
        resources["NetworkSerialPort"] = {"host": url.hostname, "port": url.port, "speed": board.console.baud}
    else:
        resources["RawSerialPort"] = {"port": board.console.device, "speed": board.console.baud}
    drivers: dict[str, Any] = {"SerialDriver": {}}
    if board.name == "simboard":
        command = f"{sys.executable} {HIL / 'simboard' / '__main__.py'} power"
        drivers["ExternalPowerDriver"] = {"cmd_on": f"{command} on", "cmd_off": f"{command} off"}
    elif board.power.kind == "command":
        drivers["ExternalPowerDriver"] = {"cmd_on": board.power.on, "cmd_off": board.power.off}
    else:
        drivers["ManualPowerDriver"] = {}
    drivers["ShellDriver"] = {
        "prompt": PROMPT,
        "login_prompt": " login: ",
        "username": os.environ.get("HIL_USER", "root"),
        **({"password": os.environ["HIL_PASSWORD"]} if "HIL_PASSWORD" in os.environ else {}),
        "login_timeout": 120,
    }
    drivers["VaxelboxStrategy"] = {}
    return {
        "targets": {"main": {"resources": resources, "drivers": drivers}},
        "imports": [str(HIL / "strategy.py")],
    }


def write_environment(board_file: Path, out: Path) -> Board:
    board = load_board(board_file)
    out.write_text(yaml.safe_dump(environment(board), sort_keys=False))
    return board


if __name__ == "__main__":
    try:
        board = write_environment(Path(sys.argv[1]), Path(sys.argv[2]))
    except BoardError as exc:  # one line per problem, as `vaxelbox check-board` says it
        raise SystemExit(f"board file {exc}") from None
    print(f"labgrid environment for {board.name}: {sys.argv[2]}")
