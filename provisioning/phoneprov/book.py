"""What provisioning remembers: devices seen, the enrolment window, devices enrolled.

The agent keeps it in its store (`vaxelbox.store.devices`, which also defines the
records: the store is the lower layer and must not import phoneprov); this protocol is
all the provisioning service needs of it.
"""

from typing import Protocol

from vaxelbox.store.devices import Enrolled, Enrolment, Sighting

__all__ = ["DeviceBook", "Enrolled", "Enrolment", "Sighting"]


class DeviceBook(Protocol):
    def record(self, sighting: Sighting) -> bool:
        """Remember a device; True if it was never seen before."""
        ...

    def enrolment(self) -> Enrolment | None: ...

    def enrolled(self, mac: str) -> Enrolled | None: ...

    def enrol(self, mac: str, enrolled: Enrolled) -> None: ...
