"""A board file (`boards/*.yaml`): what the agent and the HIL suite need to know about one board.

The agent reads interface names and paths from it; the HIL suite reads the
console and power control. A wrong board file is refused with the exact field.
"""

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vaxelbox.problems import ConfigError, Problem, read_config, validation_problems

InterfaceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,15}$")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Console(_Part):
    device: str = Field(description="Serial device on the host that runs the HIL suite")
    baud: int = Field(115200, description="e.g. 115200; 1500000 on Rockchip boards")
    board_tty: str = Field(description="The board's own UART, where its getty runs")


class Interfaces(_Part):
    lan: InterfaceName = Field(description="Towards the phones")
    wan: InterfaceName | None = Field(None, description="Towards the internet; none = same as LAN")


class Watchdog(_Part):
    device: str = "/dev/watchdog"
    timeout: int = Field(15, ge=1, le=600, description="Seconds")


class Leds(_Part):
    sysfs: str = Field("/sys/class/leds", description="Directory holding the LED class devices")
    status: str | None = Field(None, description="LED showing the agent's state")
    power: str | None = None
    cloud: str | None = Field(None, description="LED showing the cloud link")


class GpioButton(_Part):
    kind: Literal["gpio"]
    chip: str
    line: int = Field(ge=0)


class InputButton(_Part):
    kind: Literal["input"]
    device: str
    key: str = Field(pattern=r"^KEY_[A-Z0-9_]+$")


class CompanionPins(_Part):
    """The companion MCU's GPIO numbers (e.g. GP2 of a Raspberry Pi Pico is 2)."""

    uart_tx: int = Field(ge=0, description="MCU TX, wired to the board's RX")
    uart_rx: int = Field(ge=0, description="MCU RX, wired to the board's TX")
    power: int = Field(ge=0, description="Drives the board's power switch (high = on)")
    green: int = Field(ge=0)
    amber: int = Field(ge=0)
    blue: int = Field(ge=0)
    red: int = Field(ge=0)
    button: int = Field(ge=0, description="The front button, to ground (internal pull-up)")


class Companion(_Part):
    """The companion microcontroller: the board's watchdog, its LEDs and its button (README)."""

    device: str = Field(description="The board's UART the companion is wired to, e.g. /dev/ttyAMA1")
    baud: int = 115200
    mcu: str = Field("Raspberry Pi Pico (RP2040)", description="What the companion is")
    uart: int = Field(0, ge=0, description="The MCU's UART number")
    heartbeat_timeout: int = Field(
        30, ge=3, le=600, description="Seconds without the agent's heartbeat before a power cycle"
    )
    boot_grace: int = Field(
        180, ge=10, le=3600, description="Seconds after power-on or a reset for the first heartbeat"
    )
    max_resets: int = Field(3, ge=1, le=20, description="Power cycles in a row before the safe state")
    pins: CompanionPins


class Storage(_Part):
    data_dir: Path = Path("/var/lib/vaxelbox")
    log_dir: Path = Path("/var/log/vaxelbox")


class DirectorySlots(_Part):
    """A/B slots as two directories and a selector file the board's init reads (the simulated board)."""

    kind: Literal["directories"]
    root: Path = Field(description="Holds A/, B/ and selector.json")
    health_deadline: int = Field(
        120, ge=5, le=3600, description="Seconds for a new version to report healthy before it is rolled back"
    )


class RaucSlots(_Part):
    """A/B root file systems that RAUC installs and its bootloader backend switches (real boards)."""

    kind: Literal["rauc"]
    system_conf: str = Field(
        pattern=r"^\S+\.conf$",
        description="The RAUC system.conf this board ships, relative to the board file "
        "(installed as /etc/rauc/system.conf; its compatible is the board's name)",
    )
    health_deadline: int = Field(
        120, ge=5, le=3600, description="Seconds for a new version to report healthy before it is rolled back"
    )


class ManualPower(_Part):
    kind: Literal["manual"]


class CommandPower(_Part):
    kind: Literal["command"]
    on: str
    off: str


class Board(_Part):
    model_config = ConfigDict(title="Vaxelbox board")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    arch: Literal["aarch64", "armv7l", "x86_64", "any"]
    ram_mb: int = Field(1024, ge=128, description="RAM in MiB: sizes the SIP state's ceilings")
    console: Console
    interfaces: Interfaces
    watchdog: Watchdog | None = None
    leds: Leds = Leds()
    button: Annotated[GpioButton | InputButton, Field(discriminator="kind")] | None = None
    storage: Storage = Storage()
    power: Annotated[ManualPower | CommandPower, Field(discriminator="kind")] = ManualPower(kind="manual")
    companion: Companion | None = Field(None, description="The companion MCU, if the board has one")
    update: Annotated[DirectorySlots | RaucSlots, Field(discriminator="kind")] | None = Field(
        None, description="How firmware updates reach the A/B slots"
    )

    @property
    def wan_interface(self) -> str:
        return self.interfaces.wan or self.interfaces.lan


class BoardError(ConfigError):
    """A board file that cannot be used."""


def load_board(path: Path) -> Board:
    text = read_config(path, BoardError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise BoardError(str(path), [Problem(where, f"YAML syntax: {exc}")]) from None
    try:
        return Board.model_validate(data)
    except ValidationError as exc:
        raise BoardError(str(path), validation_problems(exc, Board)) from None
