"""A board's RAUC on this machine: the real `rauc` service on a private D-Bus, its slots files.

The board's shipped system.conf (boards/rauc/<board>/system.conf) is used with
only its paths moved into the test's directory: the slot devices become sparse
files, the keyring the test's CA, the data directory and the mount prefix
temporary. Everything else (compatible, bootloader=uboot, boot attempts, slot
classes and bootnames) is the shipped file's. RAUC's uboot backend runs for
real: it calls fw_printenv / fw_setenv (Debian libubootenv-tool) on a real
U-Boot environment image made by mkenvimage (u-boot-tools); a two-line wrapper
first in PATH only adds `-c <this fw_env.config>`, because the tools read
/etc/fw_env.config otherwise and the test must not touch the host's /etc.

What cannot run here is U-Boot itself: `reboot()` plays boot.scr's part (the
first slot in BOOT_ORDER with attempts left, one attempt spent, saved) on the
same environment, then restarts the service with --override-boot-slot, as
the kernel's `rauc.slot=` would tell it.
"""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAUC_DIR = REPO / "boards" / "rauc"
REAL_BOARDS = ("rpi-4b", "rpi-cm4-dual-nic", "nanopi-r5s")
SLOT_SIZE = 64 << 20


def tool(name: str, package: str) -> str:
    """The tool's path; a missing one fails the test (`make test` installs it), never skips it."""
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Debian package {package})"
    return path


def moved_conf(board: str, directory: Path, keyring: Path, devices: dict[str, Path] | None = None) -> Path:
    """The board's shipped system.conf with its paths moved under `directory` (see the module)."""
    text = (RAUC_DIR / board / "system.conf").read_text()
    text = re.sub(r"(?m)^data-directory=.*$", f"data-directory={directory / 'rauc-data'}", text)
    text = re.sub(r"(?m)^\[system\]$", f"[system]\nmountprefix={directory / 'mnt'}", text)
    text = re.sub(r"(?m)^path=.*$", f"path={keyring}", text)
    for bootname, path in (devices or {}).items():
        text = re.sub(
            rf"(?m)^device=.*\n(type=.*\n)bootname={bootname}$",
            rf"device={path}\n\1bootname={bootname}",
            text,
        )
    conf = directory / f"{board}-system.conf"
    conf.write_text(text)
    return conf


class RaucLab:
    """rpi-4b's RAUC with slots A and B as files; `env` reaches its service (private session bus)."""

    def __init__(self, root: Path, keyring: Path, board: str = "rpi-4b") -> None:
        for name, package in (
            ("rauc", "rauc"),
            ("mksquashfs", "squashfs-tools"),
            ("dbus-daemon", "dbus-daemon"),
            ("fw_setenv", "libubootenv-tool"),
            ("mkenvimage", "u-boot-tools"),
        ):
            tool(name, package)
        self.root, self.board = root, board
        root.mkdir(parents=True)
        self.slots = {name: root / f"slot-{name}" for name in ("A", "B")}
        for path in self.slots.values():
            with path.open("wb") as file:
                file.truncate(SLOT_SIZE)
        self.conf = moved_conf(board, root, keyring, self.slots)
        self._uboot_env(root)
        self.boots = 0
        self._bus = subprocess.run(
            ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        self.env = {
            **os.environ,
            "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
            "DBUS_SESSION_BUS_ADDRESS": self._bus[0],
            "DBUS_STARTER_BUS_TYPE": "session",
        }
        self._service: subprocess.Popen[bytes] | None = None
        self.booted = "A"
        self._start()

    def _uboot_env(self, root: Path) -> None:
        """A U-Boot environment image as a fresh board has it, and the tools pointed at it."""
        self.fw_env_config = root / "fw_env.config"
        self.fw_env_config.write_text(f"{root / 'uboot.env'} 0x0000 0x4000\n")
        defaults = root / "uboot-env.txt"
        defaults.write_text("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
        subprocess.run(
            ["mkenvimage", "-s", "0x4000", "-o", str(root / "uboot.env"), str(defaults)], check=True
        )
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name in ("fw_printenv", "fw_setenv"):
            wrapper = bin_dir / name
            wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(name)} -c {self.fw_env_config} "$@"\n')
            wrapper.chmod(0o755)

    def uboot(self) -> dict[str, str]:
        """The U-Boot environment's variables now (real fw_printenv)."""
        out = subprocess.run(
            ["fw_printenv", "-c", str(self.fw_env_config)], capture_output=True, text=True, check=True
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def boot_id(self) -> str:
        """Stands in for /proc/sys/kernel/random/boot_id: a new one at every `reboot`."""
        return f"boot-{self.boots}"

    def reboot(self) -> str:
        """Power-cycle: boot.scr's choice on the real environment, then RAUC starts on that slot."""
        self._stop()
        env = self.uboot()
        for slot in env.get("BOOT_ORDER", "").split():
            left = int(env.get(f"BOOT_{slot}_LEFT", "0"))
            if left > 0:
                self._setenv(f"BOOT_{slot}_LEFT", str(left - 1))
                break
        else:
            raise AssertionError(f"boot.scr finds no slot with attempts left: {env}")
        self.booted, self.boots = slot, self.boots + 1
        self._start()
        return slot

    def rauc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rauc", *args], capture_output=True, text=True, env=self.env, check=check)

    def close(self) -> None:
        self._stop()
        os.kill(int(self._bus[1]), signal.SIGTERM)

    def _setenv(self, key: str, value: str) -> None:
        subprocess.run(["fw_setenv", "-c", str(self.fw_env_config), key, value], check=True)

    def _start(self) -> None:
        log = (self.root / "rauc-service.log").open("ab")
        self._service = subprocess.Popen(
            ["rauc", f"--conf={self.conf}", "service", f"--override-boot-slot={self.booted}"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while self.rauc("status", check=False).returncode != 0:
            assert self._service.poll() is None, (self.root / "rauc-service.log").read_text()
            assert time.monotonic() < deadline, "rauc service did not answer within 10 s"
            time.sleep(0.02)

    def _stop(self) -> None:
        if self._service is not None:
            self._service.terminate()
            self._service.wait(timeout=10)
            self._service = None
