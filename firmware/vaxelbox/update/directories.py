"""A/B slots as directories (the simulated board): `root/A`, `root/B` and `root/selector.json`.

A slot holds an agent as a wheel would install it: the `vaxelbox` package and its
`vaxelbox-VERSION.dist-info`, so `PYTHONPATH=root/A python -m vaxelbox` runs that
slot's agent and reports that slot's version. An image is such a tree as a
tar.gz (`build_image`). The selector is the state of `vaxelbox.update.slots`,
read and written under a lock by the agent and the board's init alike, each
write tmp + fsync + rename so a power cut leaves the old state or the new.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from vaxelbox.update.slots import SLOT_NAMES, Slots, Step
from vaxelbox.update.state_file import locked, write_json

if TYPE_CHECKING:  # tarfile is imported where an image is packed or unpacked: the idle agent never does
    import tarfile


class DirectorySlots:
    def __init__(self, root: Path) -> None:
        self.root = root

    def slot_dir(self, slot: str) -> Path:
        return self.root / slot

    def load(self) -> Slots:
        """The selector's state; an absent selector means slot A only (as installed)."""
        try:
            return Slots.from_dict(json.loads((self.root / "selector.json").read_text()))
        except FileNotFoundError:
            return Slots(versions={"A": _installed_version(self.slot_dir("A")), "B": None})

    def save(self, state: Slots) -> None:
        write_json(self.root / "selector.json", state.to_dict())

    def change(self, event: Callable[[Slots], Step]) -> Step:
        """Feed one event under the lock and save its new state (before the caller acts on it)."""
        with locked(self.root / "selector.lock"):
            step = event(self.load())
            self.save(step.state)
            return step

    def install(self, slot: str, image: BinaryIO) -> None:
        """Unpack the tar.gz `image` into `slot` (beside it first, then renamed into place).
        Raises tarfile.TarError or OSError; the slot is then left as it was."""
        if slot not in SLOT_NAMES:
            raise ValueError(f"no slot {slot!r}")
        import tarfile

        from vaxelbox.update.untar import extract_all

        fresh = self.root / f"{slot}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        with tarfile.open(fileobj=image, mode="r:gz") as archive:
            extract_all(archive, fresh, "data")
        old = self.root / f"{slot}.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.slot_dir(slot).exists():
            os.replace(self.slot_dir(slot), old)
        os.replace(fresh, self.slot_dir(slot))
        shutil.rmtree(old, ignore_errors=True)


def build_image(package: Path, version: str, out: BinaryIO) -> None:
    """A tar.gz of the agent package directory `package` (e.g. firmware/vaxelbox) at `version`."""
    import tarfile

    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.add(package, arcname="vaxelbox", filter=_no_bytecode)
        metadata = f"Metadata-Version: 2.1\nName: vaxelbox\nVersion: {version}\n".encode()
        info = tarfile.TarInfo(f"vaxelbox-{version}.dist-info/METADATA")
        info.size = len(metadata)
        archive.addfile(info, _bytes(metadata))


def install_tree(package: Path, version: str, slot_dir: Path) -> None:
    """Put the agent package `package` at `version` into `slot_dir` (a board's first install)."""
    shutil.rmtree(slot_dir, ignore_errors=True)
    shutil.copytree(package, slot_dir / "vaxelbox", ignore=shutil.ignore_patterns("__pycache__"))
    info = slot_dir / f"vaxelbox-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vaxelbox\nVersion: {version}\n")


def _installed_version(slot_dir: Path) -> str | None:
    found = sorted(slot_dir.glob("vaxelbox-*.dist-info"))
    return found[0].name.removeprefix("vaxelbox-").removesuffix(".dist-info") if found else None


def _no_bytecode(info: "tarfile.TarInfo") -> "tarfile.TarInfo | None":
    return None if "__pycache__" in info.name else info


def _bytes(data: bytes) -> BinaryIO:
    import io

    return io.BytesIO(data)
