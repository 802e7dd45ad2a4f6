"""What provisioning remembers: devices seen, the enrolment window, devices enrolled.

The agent keeps it in its store (`vaxelbox.store.devices`); this protocol is
all the provisioning service needs of it.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sighting:
    mac: str
    vendor: str | None
    model: str | None
    firmware: str | None
    ip: str
    user_agent: str
    file: str
    at: float


@dataclass(frozen=True)
class Enrolment:
    """An enrolment window the installer opened: for every assigned MAC, or only for `macs`."""

    until: float
    macs: frozenset[str] | None = None

    def admits(self, mac: str, now: float) -> bool:
        return now < self.until and (self.macs is None or mac in self.macs)


@dataclass(frozen=True)
class Enrolled:
    """A device that received its configuration; it proves itself with `credential` from now on."""

    credential: str
    at: float
    ip: str


class DeviceBook(Protocol):
    def record(self, sighting: Sighting) -> bool:
        """Remember a device; True if it was never seen before."""
        ...

    def enrolment(self) -> Enrolment | None: ...

    def enrolled(self, mac: str) -> Enrolled | None: ...

    def enrol(self, mac: str, enrolled: Enrolled) -> None: ...
