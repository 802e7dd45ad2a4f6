"""systemd's notify protocol (sd_notify(3)): READY, STATUS, RELOADING, STOPPING, WATCHDOG.

A no-op when NOTIFY_SOCKET is unset, so the agent runs the same with or without systemd.
"""

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = _watchdog_usec(environ)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str | int) -> None:
        """Send `KEY=value` lines, e.g. notify(READY=1, STATUS="serving")."""
        if not self._address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, self._address)

    def reloading(self) -> None:
        """RELOADING must carry the monotonic time for Type=notify-reload units."""
        self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the deadline), or None if systemd expects none."""
        if not self._address or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000


def _watchdog_usec(environ: Mapping[str, str]) -> int:
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return 0  # the watchdog is meant for another process (e.g. our parent shell)
    try:
        return int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
