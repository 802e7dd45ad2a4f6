"""A/B firmware updates: the slot state machine (sans-I/O) and the boards' slot back-ends."""

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaxelbox.hw.board import DirectorySlots as DirectoryConfig
    from vaxelbox.hw.board import RaucSlots as RaucConfig
    from vaxelbox.update.directories import DirectorySlots
    from vaxelbox.update.rauc import RaucSlots


def open_slots(update: "DirectoryConfig | RaucConfig", data_dir: Path) -> "DirectorySlots | RaucSlots":
    """The back-end for a board file's `update` section; `data_dir` keeps what RAUC does not."""
    from vaxelbox.update.directories import DirectorySlots
    from vaxelbox.update.rauc import RaucSlots

    if update.kind == "rauc":
        return RaucSlots(data_dir / "rauc-slots.json", update.health_deadline)
    return DirectorySlots(update.root)
