"""Petting the kernel's watchdog device (/dev/watchdog) where the board file names one.

systemd pets it itself when RuntimeWatchdogSec is set (and then holds the device open), so the
agent pets it only when systemd does not. The pet is written from the event loop: a hung loop
misses it and the kernel resets the board. A clean stop writes the magic "V" first, so stopping
the agent on purpose does not reset the board.
"""

import asyncio
import fcntl
import os
import struct
import subprocess

from vaxelbox.agent.logs import get_logger
from vaxelbox.hw.board import Watchdog

log = get_logger("vaxelbox.watchdog")
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
RETRY_AFTER = 5.0  # s between attempts to open a missing device


def systemd_owns_watchdog() -> bool:
    """True when systemd (PID 1) runs the hardware watchdog (RuntimeWatchdogSec is not 0)."""
    try:
        value = subprocess.run(
            ["systemctl", "show", "--property=RuntimeWatchdogUSec", "--value"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False  # no systemd running here
    return value not in ("", "0", "infinity")


class WatchdogPetter:
    """Pets `settings.device` every third of its timeout, for ever (a supervisor service)."""

    def __init__(self, settings: Watchdog) -> None:
        self.settings = settings
        self.pets = 0

    async def run(self) -> None:
        """Open the device (a missing one is a logged fault, tried again every RETRY_AFTER s)."""
        fd = await self._open()
        try:
            self._set_timeout(fd)
            log.info("watchdog open", device=self.settings.device, timeout=self.settings.timeout)
            while True:
                os.write(fd, b"\0")
                self.pets += 1
                await asyncio.sleep(self.settings.timeout / 3)
        finally:
            try:
                os.write(fd, b"V")  # magic close: a stop on purpose is no hang
            finally:
                os.close(fd)
            log.info("watchdog closed", device=self.settings.device)

    async def _open(self) -> int:
        logged = False
        while True:
            try:
                return os.open(self.settings.device, os.O_WRONLY | os.O_NOCTTY)
            except OSError as exc:
                if not logged:
                    log.error("watchdog fault", device=self.settings.device, fault=str(exc))
                    logged = True
                await asyncio.sleep(RETRY_AFTER)

    def _set_timeout(self, fd: int) -> None:
        try:
            fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", self.settings.timeout))
        except OSError as exc:  # a driver with a fixed timeout; pets every third of ours anyway
            log.warning("watchdog timeout not set", device=self.settings.device, reason=str(exc))
